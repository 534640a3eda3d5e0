//! `report --repositories`: the missing repositories themselves, with their project, the
//! registry's creation time and size, as a table, JSON or CSV.

use std::fmt::Write as _;

use serde::Serialize;

use super::units;
use crate::db::report::{self as queries, ListedRepository, RepositoryFilter};
use crate::db::{Database, DbError};
use crate::format::{CsvBlock, Format};

/// The CSV header line (the JSON fields of each repository, in order).
pub const CSV_HEADER: &str =
    "project_id,full_path,registry_path,name,registry_created_at,size_bytes";

#[derive(Debug, Clone, Serialize)]
pub struct Repositories {
    /// How many the filter matched; more than listed when `--limit` cut the list.
    pub matched: i64,
    pub repositories: Vec<ListedRepository>,
}

impl Repositories {
    pub async fn load(db: &Database, filter: &RepositoryFilter) -> Result<Self, DbError> {
        let repositories = queries::repositories(db, filter).await?;
        Ok(Self {
            matched: repositories.first().map_or(0, |r| r.matched),
            repositories,
        })
    }

    /// Whether `--limit` left some out.
    pub fn cut(&self) -> bool {
        self.matched > self.repositories.len() as i64
    }

    pub fn render(&self, format: Format) -> Result<String, serde_json::Error> {
        Ok(match format {
            Format::Table => self.table(),
            Format::Json => serde_json::to_string_pretty(self)? + "\n",
            Format::Csv => self.csv(),
        })
    }

    fn table(&self) -> String {
        let mut out = String::new();
        if self.repositories.is_empty() {
            out.push_str("No missing repository recorded matches.\n");
            return out;
        }
        let width = self
            .repositories
            .iter()
            .map(|r| r.registry_path.chars().count())
            .max()
            .unwrap_or(0)
            .max("REGISTRY PATH".len());
        let _ = writeln!(
            out,
            "{:>12}  {:<10}  {:>10}  {:<width$}  FULL PATH",
            "PROJECT ID", "CREATED", "SIZE", "REGISTRY PATH"
        );
        for r in &self.repositories {
            let _ = writeln!(
                out,
                "{:>12}  {:<10}  {:>10}  {:<width$}  {}",
                r.project_id,
                r.registry_created_at.map_or_else(
                    || "unknown".to_string(),
                    |at| at.format("%Y-%m-%d").to_string()
                ),
                r.size_bytes
                    .map_or_else(|| "unknown".to_string(), units::bytes),
                r.registry_path,
                r.full_path.as_deref().unwrap_or("(no route)"),
            );
        }
        let known: i64 = self.repositories.iter().filter_map(|r| r.size_bytes).sum();
        let _ = writeln!(
            out,
            "\n{} of {} listed; their known sizes: {} ({} bytes; binary units, each repository \
             deduplicated on its own).",
            self.repositories.len(),
            self.matched,
            units::bytes(known),
            units::grouped(known)
        );
        out
    }

    fn csv(&self) -> String {
        let mut block = CsvBlock::new(CSV_HEADER);
        for r in &self.repositories {
            block.row([
                r.project_id.to_string(),
                r.full_path.clone().unwrap_or_default(),
                r.registry_path.clone(),
                r.name.clone(),
                r.registry_created_at
                    .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                    .unwrap_or_default(),
                r.size_bytes.map(|s| s.to_string()).unwrap_or_default(),
            ]);
        }
        block.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn listing() -> Repositories {
        let repository = |name: &str, created: Option<i64>, size: Option<i64>| ListedRepository {
            project_id: 12,
            full_path: Some("Top/Web, App".into()),
            registry_path: format!("top/web, app/{name}"),
            name: name.into(),
            registry_created_at: created.and_then(|s| Utc.timestamp_opt(s, 0).single()),
            size_bytes: size,
            matched: 3,
        };
        Repositories {
            matched: 3,
            repositories: vec![
                repository("api", Some(1_700_000_000), Some(3 << 20)),
                repository("web", None, None),
            ],
        }
    }

    #[test]
    fn every_format_lists_each_field() {
        let list = listing();
        assert!(list.cut());
        let table = list.render(Format::Table).expect("table");
        assert!(
            table.contains("2023-11-14    3.00 MiB  top/web, app/api  Top/Web, App"),
            "{table}"
        );
        assert!(
            table.contains("unknown        unknown  top/web, app/web"),
            "{table}"
        );
        assert!(table.contains("2 of 3 listed; their known sizes: 3.00 MiB (3,145,728 bytes;"));
        let csv = list.render(Format::Csv).expect("csv");
        assert_eq!(
            csv,
            format!(
                "{CSV_HEADER}\n12,\"Top/Web, App\",\"top/web, app/api\",api,2023-11-14T22:13:20Z,3145728\n\
                 12,\"Top/Web, App\",\"top/web, app/web\",web,,\n"
            )
        );
        let json: serde_json::Value =
            serde_json::from_str(&list.render(Format::Json).expect("json")).expect("JSON");
        assert_eq!(json["matched"], 3);
        assert_eq!(
            json["repositories"][0]["registry_created_at"],
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            json["repositories"][1]["size_bytes"],
            serde_json::Value::Null
        );
        assert!(json["repositories"][0].get("matched").is_none());
    }
}
