//! The `report` command's output: the totals, the projects and top-level namespaces missing most
//! (by count and by bytes), the missing repositories by the month the registry created them and
//! how many each project misses, as a table for people ([`text`]), JSON for programs, CSV for
//! spreadsheets ([`csv`](mod@csv)) or one self-contained HTML page with charts ([`html`], [`svg`]);
//! and `report --repositories`, the missing repositories themselves ([`repositories`]). Each
//! format also names the failed projects, why they failed and what to do ([`advice`]). Every
//! renderer is pure: the figures come from [`crate::db::report`].

pub mod advice;
mod csv;
mod html;
pub mod repositories;
mod svg;
mod text;
pub mod units;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::report::{
    self as queries, Bucket, FailedProject, MissingProject, MonthTotals, NamespaceTotals, Ranking,
    Totals,
};
use crate::db::{Database, DbError};
use crate::format::Format;

/// `report --format`: the formats every command has, and the HTML page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    Csv,
    /// One self-contained page with charts (no external script, font or image), for a browser
    /// or to print
    Html,
}

impl ReportFormat {
    /// The same format, where it is one every command has (all but HTML).
    pub fn plain(self) -> Option<Format> {
        match self {
            Self::Table => Some(Format::Table),
            Self::Json => Some(Format::Json),
            Self::Csv => Some(Format::Csv),
            Self::Html => None,
        }
    }
}

/// Everything the report shows. Serialised as it is for `--format json`: the fields' names are
/// stable (docs/operations.md, "Report fields").
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub totals: Totals,
    /// Most missing repositories first.
    pub top_missing: Vec<MissingProject>,
    /// Top-level namespaces, most missing repositories first.
    pub namespaces: Vec<NamespaceTotals>,
    /// Most missing bytes first (projects with known bytes only).
    pub top_by_bytes: Vec<MissingProject>,
    /// Top-level namespaces, most missing bytes first.
    pub namespaces_by_bytes: Vec<NamespaceTotals>,
    /// Oldest first, `unknown` last.
    pub by_month: Vec<MonthTotals>,
    /// Every bucket of [`queries::BUCKETS`], in order.
    pub distribution: Vec<Bucket>,
    /// Every failed project counted by its recorded cause, with what to do.
    pub failed_by_cause: Vec<FailedCause>,
    /// The projects failed most recently, at most [`Listing::top`].
    pub failed_projects: Vec<FailedProject>,
    /// How many failed projects `failed_projects` leaves out.
    pub failed_not_listed: i64,
}

/// The failed projects of one recorded cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedCause {
    /// The cause's word; `None`: not recorded (GitLab's own worker or an earlier release).
    pub cause: Option<String>,
    pub projects: i64,
    /// What to do about them ([`advice`]).
    pub advice: &'static str,
}

/// What a report lists beyond the totals.
#[derive(Debug, Clone, Copy)]
pub struct Listing {
    /// Projects listed in each ranking, and failed projects listed.
    pub top: i64,
    /// Only projects with at least this many missing repositories.
    pub min_missing: i32,
    /// Top-level namespaces listed in each ranking.
    pub namespaces: i64,
}

impl Report {
    pub async fn load(db: &Database, listing: Listing) -> Result<Self, DbError> {
        let namespaces = |ranking| async move {
            if listing.namespaces > 0 {
                queries::namespaces(db, ranking, listing.namespaces).await
            } else {
                Ok(Vec::new())
            }
        };
        let top = |ranking| queries::top_projects(db, ranking, listing.top, listing.min_missing);
        let failed_by_cause: Vec<FailedCause> = queries::failed_by_cause(db)
            .await?
            .into_iter()
            .map(|c| FailedCause {
                advice: advice::for_cause(c.cause.as_deref()),
                cause: c.cause,
                projects: c.projects,
            })
            .collect();
        let failed_projects = queries::failed_projects(db, listing.top).await?;
        let failed: i64 = failed_by_cause.iter().map(|c| c.projects).sum();
        Ok(Self {
            totals: queries::totals(db).await?,
            top_missing: top(Ranking::Missing).await?,
            namespaces: namespaces(Ranking::Missing).await?,
            top_by_bytes: top(Ranking::Bytes).await?,
            namespaces_by_bytes: namespaces(Ranking::Bytes).await?,
            by_month: queries::by_month(db).await?,
            distribution: queries::distribution(db).await?,
            failed_not_listed: (failed - failed_projects.len() as i64).max(0),
            failed_by_cause,
            failed_projects,
        })
    }

    /// The report in `format`; the HTML page says it was made at `generated_at`.
    pub fn render(
        &self,
        format: ReportFormat,
        generated_at: DateTime<Utc>,
    ) -> Result<String, serde_json::Error> {
        Ok(match format {
            ReportFormat::Table => text::report(self),
            ReportFormat::Json => serde_json::to_string_pretty(self)? + "\n",
            ReportFormat::Csv => csv::report(self),
            ReportFormat::Html => html::page(self, generated_at),
        })
    }
}

#[cfg(test)]
pub(crate) mod sample {
    //! A small report with every kind of figure, for the renderers' unit tests.

    use super::*;

    pub fn project(id: i64, path: Option<&str>, missing: i32, bytes: i64) -> MissingProject {
        MissingProject {
            project_id: id,
            full_path: path.map(String::from),
            missing_count: missing,
            missing_itemised: i64::from(missing),
            missing_bytes: bytes,
            missing_sizes_unknown: 1,
            shown_empty_by_gitlab: id % 2 == 0,
        }
    }

    pub fn namespace(name: &str, missing: i64, bytes: i64) -> NamespaceTotals {
        NamespaceTotals {
            namespace: name.into(),
            analysed: 10,
            completed: 9,
            failed: 1,
            projects_with_missing: 2,
            missing,
            missing_bytes: bytes,
            missing_sizes_unknown: 1,
        }
    }

    pub fn report() -> Report {
        Report {
            totals: Totals {
                projects: 120,
                analysed: 100,
                completed: 97,
                failed: 3,
                pending: 20,
                projects_with_missing: 4,
                missing: 1260,
                unaddressable: 1,
                missing_itemised: 1250,
                missing_bytes: 5 * 1024 * 1024 * 1024 + 7,
                missing_sizes_unknown: 2,
                projects_not_itemised: 1,
                projects_shown_empty_by_gitlab: 2,
                bytes_shown_empty_by_gitlab: 3 * 1024 * 1024,
            },
            top_missing: vec![
                project(4, Some("Acme/Big <Images>"), 1200, 4 << 30),
                project(7, None, 10, 0),
            ],
            namespaces: vec![
                namespace("Acme", 1200, 4 << 30),
                namespace("(no route)", 10, 0),
            ],
            top_by_bytes: vec![project(4, Some("Acme/Big <Images>"), 1200, 4 << 30)],
            namespaces_by_bytes: vec![namespace("Acme", 1200, 4 << 30)],
            by_month: vec![
                MonthTotals {
                    month: "2023-11".into(),
                    missing: 3,
                    missing_bytes: 2048,
                    missing_sizes_unknown: 0,
                },
                MonthTotals {
                    month: "2024-02".into(),
                    missing: 1240,
                    missing_bytes: 4 << 30,
                    missing_sizes_unknown: 1,
                },
                MonthTotals {
                    month: "unknown".into(),
                    missing: 7,
                    missing_bytes: 0,
                    missing_sizes_unknown: 1,
                },
            ],
            distribution: queries::BUCKETS
                .iter()
                .enumerate()
                .map(|(i, (_, label))| Bucket {
                    bucket: label,
                    projects: i as i64,
                    missing: (i * 10) as i64,
                })
                .collect(),
            failed_by_cause: [Some("hostile_answer"), Some("no_route"), None]
                .into_iter()
                .map(|cause| FailedCause {
                    cause: cause.map(String::from),
                    projects: 1,
                    advice: advice::for_cause(cause),
                })
                .collect(),
            failed_projects: vec![
                failed(9, Some("Acme/<b>Hostile</b>"), Some("hostile_answer")),
                failed(11, None, Some("no_route")),
                failed(12, Some("Acme/Old"), None),
            ],
            failed_not_listed: 0,
        }
    }

    pub fn failed(id: i64, path: Option<&str>, cause: Option<&str>) -> FailedProject {
        FailedProject {
            project_id: id,
            full_path: path.map(String::from),
            cause: cause.map(String::from),
            reason: cause.map(|c| format!("{c}: listing \"x <script>\"\nERROR forged")),
            failed_at: DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
                .map(|d| d.with_timezone(&Utc))
                .unwrap_or_default(),
        }
    }
}
