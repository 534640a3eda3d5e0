//! The `report` command's output: totals and the projects with the most missing repositories, as a
//! table for people, JSON for programs, or CSV for spreadsheets.

use std::fmt::Write as _;

use serde::Serialize;

use crate::db::tracking::{self, MissingProject, NamespaceTotals, Totals};
use crate::db::{Database, DbError};
use crate::format::{csv_field, Format};

#[derive(Debug, Serialize)]
pub struct Report {
    pub totals: Totals,
    pub top_missing: Vec<MissingProject>,
    pub namespaces: Vec<NamespaceTotals>,
}

/// What a report lists beyond the totals.
#[derive(Debug, Clone, Copy)]
pub struct Listing {
    /// Projects listed, most missing first.
    pub top: i64,
    /// Only projects with at least this many missing repositories.
    pub min_missing: i32,
    /// Top-level namespaces listed, most missing first.
    pub namespaces: i64,
}

impl Report {
    pub async fn load(db: &Database, listing: Listing) -> Result<Self, DbError> {
        Ok(Self {
            totals: tracking::totals(db).await?,
            top_missing: tracking::top_missing(db, listing.top, listing.min_missing).await?,
            namespaces: if listing.namespaces > 0 {
                tracking::by_namespace(db, listing.namespaces).await?
            } else {
                Vec::new()
            },
        })
    }

    pub fn render(&self, format: Format) -> Result<String, serde_json::Error> {
        Ok(match format {
            Format::Table => self.table(),
            Format::Json => serde_json::to_string_pretty(self)? + "\n",
            Format::Csv => self.csv(),
        })
    }

    fn rows(&self) -> [(&'static str, i64); 8] {
        let t = &self.totals;
        [
            ("projects", t.projects),
            ("analysed", t.analysed),
            ("completed", t.completed),
            ("failed", t.failed),
            ("pending", t.pending),
            ("projects_with_missing", t.projects_with_missing),
            ("missing", t.missing),
            ("unaddressable", t.unaddressable),
        ]
    }

    fn table(&self) -> String {
        let t = &self.totals;
        let mut out = String::new();
        let _ = writeln!(out, "Projects                      {:>12}", t.projects);
        let _ = writeln!(out, "Analysed                      {:>12}", t.analysed);
        let _ = writeln!(out, "  completed                   {:>12}", t.completed);
        let _ = writeln!(out, "  failed                      {:>12}", t.failed);
        let _ = writeln!(out, "Pending                       {:>12}", t.pending);
        let _ = writeln!(
            out,
            "Projects with missing > 0     {:>12}",
            t.projects_with_missing
        );
        let _ = writeln!(out, "Missing repositories in all   {:>12}", t.missing);
        if t.unaddressable > 0 {
            let _ = writeln!(
                out,
                "Paths the registry cannot hold {:>11}  (completed with 0, nothing asked)",
                t.unaddressable
            );
        }
        if self.top_missing.is_empty() {
            let _ = writeln!(out, "\nNo project has missing repositories.");
            self.namespace_table(&mut out);
            return out;
        }
        let _ = writeln!(
            out,
            "\nTop {} projects by missing repositories",
            self.top_missing.len()
        );
        let _ = writeln!(out, "{:>12}  {:>8}  FULL PATH", "PROJECT ID", "MISSING");
        for p in &self.top_missing {
            let _ = writeln!(
                out,
                "{:>12}  {:>8}  {}",
                p.project_id,
                p.missing_count,
                p.full_path.as_deref().unwrap_or("(no route)")
            );
        }
        self.namespace_table(&mut out);
        out
    }

    fn namespace_table(&self, out: &mut String) {
        if self.namespaces.is_empty() {
            return;
        }
        let _ = writeln!(out, "\nTop-level namespaces by missing repositories");
        let _ = writeln!(
            out,
            "{:>10}  {:>10}  {:>8}  {:>12}  {:>8}  NAMESPACE",
            "ANALYSED", "COMPLETED", "FAILED", "WITH MISSING", "MISSING"
        );
        for n in &self.namespaces {
            let _ = writeln!(
                out,
                "{:>10}  {:>10}  {:>8}  {:>12}  {:>8}  {}",
                n.analysed, n.completed, n.failed, n.projects_with_missing, n.missing, n.namespace
            );
        }
    }

    /// Blocks separated by a blank line: `metric,value`; `project_id,full_path,missing_count`;
    /// `namespace,analysed,completed,failed,projects_with_missing,missing`.
    fn csv(&self) -> String {
        let mut out = String::from("metric,value\n");
        for (name, value) in self.rows() {
            let _ = writeln!(out, "{name},{value}");
        }
        out.push_str("\nproject_id,full_path,missing_count\n");
        for p in &self.top_missing {
            let _ = writeln!(
                out,
                "{},{},{}",
                p.project_id,
                csv_field(p.full_path.as_deref().unwrap_or("")),
                p.missing_count
            );
        }
        out.push_str("\nnamespace,analysed,completed,failed,projects_with_missing,missing\n");
        for n in &self.namespaces {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{}",
                csv_field(&n.namespace),
                n.analysed,
                n.completed,
                n.failed,
                n.projects_with_missing,
                n.missing
            );
        }
        out
    }
}
