//! The plan (`repair plan`) and the result (`repair apply`) as a table, JSON or CSV, with stable
//! field names (documented in the README):
//!
//! - JSON: one object `{"run", "totals", "repositories", "path_changed"}`. `run` is the apply's run
//!   id (null for a plan); `totals` holds `projects`, `restore`, `skip` (an object with a count for
//!   every skip reason, 0 included), `review`, `review_by_reason` (the same for the review
//!   reasons) and `already_present` (planned restores that had a row by the time of the write; 0
//!   in a plan); `repositories` holds one record per registry repository without a row:
//!   `project_id`, `full_path`, `name`, `action`, `reason` (null for `restore`),
//!   `registry_created_at`; `path_changed` (apply) the projects not written because their path
//!   changed between the listing and the write: `project_id`, `listed_path`, `path_now`.
//! - CSV: `metric,value` rows (the totals, `skip_<reason>` for each skip reason, `review_<reason>`
//!   for each review reason, and `run`), a blank line, then
//!   `project_id,full_path,name,action,reason,registry_created_at`.
//! - Table: the totals and the first rows.
//!
//! In `apply`, `restore` means written.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::guards::{Action, ProjectPlan, Reason};
use super::written::Written;
use crate::format::{csv_blocks, CsvBlock, Format};

/// Rows the table form shows.
pub const TABLE_ROWS: usize = 50;

/// One registry repository without a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputRow {
    pub project_id: i64,
    pub full_path: String,
    pub name: String,
    pub action: Action,
    pub reason: Option<Reason>,
    pub registry_created_at: Option<String>,
}

/// A project an apply did not write: its route was no longer the path it was listed under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathChange {
    pub project_id: i64,
    pub listed_path: String,
    /// The route at write time; `None`: the project had no route.
    pub path_now: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepairTotals {
    pub projects: u64,
    pub restore: u64,
    /// Every skip reason (alphabetical in JSON), with its count.
    pub skip: BTreeMap<&'static str, u64>,
    pub review: u64,
    /// Every review reason (alphabetical in JSON), with its count.
    pub review_by_reason: BTreeMap<&'static str, u64>,
    pub already_present: u64,
}

impl Default for RepairTotals {
    fn default() -> Self {
        let reasons = |action| {
            Reason::ALL
                .into_iter()
                .filter(move |r| r.action() == action)
                .map(|r| (r.as_str(), 0))
                .collect()
        };
        Self {
            projects: 0,
            restore: 0,
            skip: reasons(Action::Skip),
            review: 0,
            review_by_reason: reasons(Action::Review),
            already_present: 0,
        }
    }
}

impl RepairTotals {
    pub fn skipped(&self) -> u64 {
        self.skip.values().sum()
    }
}

/// A plan or an apply's result, as printed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub run: Option<i64>,
    pub totals: RepairTotals,
    pub repositories: Vec<OutputRow>,
    pub path_changed: Vec<PathChange>,
    /// The run stopped before every candidate was done: an empty outcome says nothing about
    /// what is missing.
    #[serde(skip)]
    pub stopped: bool,
}

impl Outcome {
    pub fn new(run: Option<i64>) -> Self {
        Self {
            run,
            ..Self::default()
        }
    }

    /// Counts a project's plan and its records.
    pub fn add_plan(&mut self, plan: &ProjectPlan) {
        self.totals.projects += 1;
        for r in &plan.repositories {
            let key = r.reason.map_or("unknown", Reason::as_str);
            match r.action {
                Action::Restore => self.totals.restore += 1,
                Action::Review => {
                    self.totals.review += 1;
                    *self.totals.review_by_reason.entry(key).or_insert(0) += 1;
                }
                Action::Skip => *self.totals.skip.entry(key).or_insert(0) += 1,
            }
            self.repositories.push(OutputRow {
                project_id: plan.project_id,
                full_path: plan.full_path.clone(),
                name: r.name.clone(),
                action: r.action,
                reason: r.reason,
                registry_created_at: r.registry_created_at.clone(),
            });
        }
    }

    /// Counts what the write of a project did: `restore` are the rows written; planned restores
    /// that found a row are counted in `already_present` and not listed (they have a row now); a
    /// project whose path changed is listed with every record a `path_changed` skip.
    pub fn add_written(&mut self, written: &Written) {
        let (plan, already_present) = match written {
            Written::Applied {
                plan,
                already_present,
                ..
            } => (plan, already_present),
            Written::PathChanged { plan, now } => {
                self.add_plan(plan);
                self.path_changed.push(PathChange {
                    project_id: plan.project_id,
                    listed_path: plan.full_path.clone(),
                    path_now: now.clone(),
                });
                return;
            }
            Written::ProjectGone { .. } => return,
        };
        let mut plan = plan.clone();
        plan.repositories.retain(|r| {
            !(r.action == Action::Restore && already_present.iter().any(|n| n == &r.name))
        });
        self.add_plan(&plan);
        self.totals.already_present += already_present.len() as u64;
    }

    pub fn render(&self, format: Format) -> Result<String, serde_json::Error> {
        Ok(match format {
            Format::Json => serde_json::to_string_pretty(self)? + "\n",
            Format::Csv => self.csv(),
            Format::Table => self.table(TABLE_ROWS),
        })
    }

    fn metrics(&self) -> Vec<(String, u64)> {
        let t = &self.totals;
        let mut rows = vec![
            ("projects".to_string(), t.projects),
            ("restore".to_string(), t.restore),
        ];
        rows.extend(t.skip.iter().map(|(r, n)| (format!("skip_{r}"), *n)));
        rows.push(("review".into(), t.review));
        rows.extend(
            t.review_by_reason
                .iter()
                .map(|(r, n)| (format!("review_{r}"), *n)),
        );
        rows.push(("already_present".into(), t.already_present));
        rows
    }

    fn csv(&self) -> String {
        let mut totals = CsvBlock::new("metric,value");
        for (name, value) in self.metrics() {
            totals.row([name, value.to_string()]);
        }
        totals.row([
            "run".to_string(),
            self.run.map(|r| r.to_string()).unwrap_or_default(),
        ]);
        let mut rows = CsvBlock::new("project_id,full_path,name,action,reason,registry_created_at");
        for r in &self.repositories {
            rows.row([
                r.project_id.to_string(),
                r.full_path.clone(),
                r.name.clone(),
                r.action.as_str().to_string(),
                r.reason.map_or("", Reason::as_str).to_string(),
                r.registry_created_at.clone().unwrap_or_default(),
            ]);
        }
        csv_blocks([totals, rows])
    }

    fn table(&self, rows: usize) -> String {
        let t = &self.totals;
        let mut out = String::new();
        match self.run {
            Some(run) => {
                let _ = writeln!(out, "Repair run {run}: rows written");
            }
            None => {
                let _ = writeln!(out, "Repair plan (dry run: nothing was written)");
            }
        }
        let _ = writeln!(out, "  projects          {}", t.projects);
        let _ = writeln!(out, "  restore           {}", t.restore);
        let _ = writeln!(out, "  skip              {}", t.skipped());
        for (reason, n) in &t.skip {
            if *n > 0 {
                let _ = writeln!(out, "    {reason:<26} {n}");
            }
        }
        let _ = writeln!(out, "  review            {}", t.review);
        for reason in Reason::ALL {
            let n = t
                .review_by_reason
                .get(reason.as_str())
                .copied()
                .unwrap_or(0);
            if let (true, Some(flag)) = (n > 0, reason.flag()) {
                let _ = writeln!(
                    out,
                    "    {:<26} {n} ({flag} restores them)",
                    reason.as_str()
                );
            }
        }
        if t.already_present > 0 {
            let _ = writeln!(out, "  already present   {}", t.already_present);
        }
        if self.repositories.is_empty() {
            out.push_str(match self.stopped {
                true => "\nNothing was done before it stopped.\n",
                false => "\nNo repository without a row.\n",
            });
            return out;
        }
        let _ = writeln!(
            out,
            "\n{:>10}  {:<7}  {:<24}  {:<20}  REPOSITORY",
            "PROJECT ID", "ACTION", "REASON", "REGISTRY CREATED"
        );
        for r in self.repositories.iter().take(rows) {
            let repository = if r.name.is_empty() {
                r.full_path.clone()
            } else {
                format!("{}/{}", r.full_path, r.name)
            };
            let _ = writeln!(
                out,
                "{:>10}  {:<7}  {:<24}  {:<20}  {}",
                r.project_id,
                r.action.as_str(),
                r.reason.map_or("", Reason::as_str),
                r.registry_created_at.as_deref().unwrap_or("-"),
                repository
            );
        }
        if self.repositories.len() > rows {
            let _ = writeln!(
                out,
                "... and {} more (--format json or csv lists them all)",
                self.repositories.len() - rows
            );
        }
        out
    }
}

/// At most this many ids are written into a `gitlab-rails runner` line; more are read from the
/// audit table by the line itself.
const IDS_IN_A_LINE: usize = 100;

/// `ids` as Ruby: the list itself when short, else `query` run by Rails.
fn ruby_ids(ids: &[i64], query: &str) -> String {
    if ids.len() <= IDS_IN_A_LINE {
        let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
        format!("[{}]", ids.join(", "))
    } else {
        format!("ApplicationRecord.connection.select_values(\"{query}\")")
    }
}

/// A `gitlab-rails runner` line that refreshes the storage statistics of the projects run `run`
/// restored rows in: their ids when there are few, else a query of the audit table.
pub fn refresh_statistics_line(run: i64, projects: &[i64]) -> String {
    let ids = ruby_ids(
        projects,
        &format!("SELECT DISTINCT project_id FROM registry_repair_restored WHERE run_id = {run} AND undone_at IS NULL"),
    );
    format!("gitlab-rails runner '{ids}.each {{ |id| ProjectCacheWorker.perform_async(id, [], %w[container_registry_size]) }}'")
}

/// A `gitlab-rails runner` line that does for the rows run `run` restored what GitLab EE's
/// `ContainerRepository` callbacks do for a row created through the model, which a plain INSERT
/// skips: Geo's verification state (`after_save`) and the `created` event its secondaries
/// replicate from (`after_create_commit`). `try` makes it do nothing where the methods do not
/// exist (CE), and GitLab itself does nothing unless this is a Geo primary with secondaries.
pub fn announce_to_geo_line(run: i64, repositories: &[i64]) -> String {
    let ids = ruby_ids(
        repositories,
        &format!("SELECT repository_id FROM registry_repair_restored WHERE run_id = {run} AND undone_at IS NULL"),
    );
    format!("gitlab-rails runner 'ContainerRepository.where(id: {ids}).find_each {{ |r| r.try(:save_verification_details); r.try(:geo_handle_after_create) }}'")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repair::guards::PlannedRepository;
    use crate::repair::written::RestoredRow;

    fn plan() -> ProjectPlan {
        let repo = |name: &str, action, reason, at: Option<&str>| PlannedRepository {
            name: name.into(),
            registry_path: if name.is_empty() {
                "g/p".into()
            } else {
                format!("g/p/{name}")
            },
            action,
            reason,
            registry_created_at: at.map(str::to_string),
        };
        ProjectPlan {
            project_id: 42,
            full_path: "G/P".into(),
            repositories: vec![
                repo("", Action::Restore, None, Some("2024-01-01T00:00:00Z")),
                repo("a,b", Action::Skip, Some(Reason::NameUnaddressable), None),
                repo(
                    "old",
                    Action::Review,
                    Some(Reason::OlderThanProject),
                    Some("2019-01-01T00:00:00Z"),
                ),
            ],
            ignored: 0,
            consent: Default::default(),
        }
    }

    #[test]
    fn json_has_the_documented_shape() {
        let mut outcome = Outcome::new(None);
        outcome.add_plan(&plan());
        let value: serde_json::Value =
            serde_json::from_str(&outcome.render(Format::Json).expect("JSON text")).expect("JSON");
        assert_eq!(value["run"], serde_json::Value::Null);
        assert_eq!(value["totals"]["projects"], 1);
        assert_eq!(value["totals"]["restore"], 1);
        assert_eq!(value["totals"]["review"], 1);
        assert_eq!(value["totals"]["skip"]["name_unaddressable"], 1);
        for reason in [
            "project_pending_deletion",
            "registry_disabled",
            "ambiguous_path",
            "index_unsafe",
        ] {
            assert_eq!(value["totals"]["skip"][reason], 0, "{reason}");
        }
        assert!(value["totals"]["skip"].get("older_than_project").is_none());
        let repos = value["repositories"].as_array().expect("array");
        assert_eq!(repos.len(), 3);
        assert_eq!(
            repos[0],
            serde_json::json!({
                "project_id": 42, "full_path": "G/P", "name": "", "action": "restore",
                "reason": null, "registry_created_at": "2024-01-01T00:00:00Z"
            })
        );
        assert_eq!(repos[2]["action"], "review");
        assert_eq!(repos[2]["reason"], "older_than_project");
    }

    #[test]
    fn csv_has_totals_then_records_quoted_where_needed() {
        let mut outcome = Outcome::new(Some(9));
        outcome.add_plan(&plan());
        let text = outcome.render(Format::Csv).expect("CSV");
        let (metrics, records) = text.split_once("\n\n").expect("two blocks");
        assert!(metrics.starts_with("metric,value\nprojects,1\nrestore,1\n"));
        assert!(metrics.contains("skip_name_unaddressable,1"));
        assert!(metrics.ends_with("run,9"));
        let lines: Vec<&str> = records.lines().collect();
        assert_eq!(
            lines[0],
            "project_id,full_path,name,action,reason,registry_created_at"
        );
        assert_eq!(lines[1], "42,G/P,,restore,,2024-01-01T00:00:00Z");
        assert_eq!(lines[2], "42,G/P,\"a,b\",skip,name_unaddressable,");
    }

    #[test]
    fn table_shows_totals_and_only_the_first_rows() {
        let mut outcome = Outcome::new(None);
        outcome.add_plan(&plan());
        let text = outcome.table(2);
        assert!(text.contains("dry run"));
        assert!(text.contains("restore           1"));
        assert!(text.contains("name_unaddressable"));
        assert!(text.contains("G/P/a,b"));
        assert!(!text.contains("G/P/old"));
        assert!(text.contains("... and 1 more"));
        assert!(Outcome::new(None)
            .table(5)
            .contains("No repository without a row"));
    }

    #[test]
    fn an_apply_lists_what_it_wrote_and_counts_what_was_present() {
        let mut p = plan();
        p.repositories[0].action = Action::Restore;
        p.repositories.push(PlannedRepository {
            name: "raced".into(),
            registry_path: "g/p/raced".into(),
            action: Action::Restore,
            reason: None,
            registry_created_at: None,
        });
        let written = Written::Applied {
            plan: p,
            restored: vec![RestoredRow {
                repository_id: 1,
                name: String::new(),
            }],
            already_present: vec!["raced".into()],
        };
        let mut outcome = Outcome::new(Some(3));
        outcome.add_written(&written);
        outcome.add_written(&Written::ProjectGone { project_id: 5 });
        assert_eq!(outcome.totals.restore, 1);
        assert_eq!(outcome.totals.already_present, 1);
        assert_eq!(outcome.totals.projects, 1);
        assert!(outcome.repositories.iter().all(|r| r.name != "raced"));
    }

    #[test]
    fn the_geo_line_names_the_rows_or_queries_them() {
        assert_eq!(
            announce_to_geo_line(4, &[10, 11]),
            "gitlab-rails runner 'ContainerRepository.where(id: [10, 11]).find_each { |r| r.try(:save_verification_details); r.try(:geo_handle_after_create) }'"
        );
        let many: Vec<i64> = (1..=101).collect();
        let line = announce_to_geo_line(4, &many);
        assert!(line.contains(
            "select_values(\"SELECT repository_id FROM registry_repair_restored WHERE run_id = 4 AND undone_at IS NULL\")"
        ));
    }

    #[test]
    fn the_refresh_line_names_the_projects_or_queries_them() {
        assert_eq!(
            refresh_statistics_line(4, &[1, 2]),
            "gitlab-rails runner '[1, 2].each { |id| ProjectCacheWorker.perform_async(id, [], %w[container_registry_size]) }'"
        );
        let many: Vec<i64> = (1..=101).collect();
        let line = refresh_statistics_line(4, &many);
        assert!(line.contains("registry_repair_restored WHERE run_id = 4"));
        assert!(
            line.contains("ProjectCacheWorker.perform_async(id, [], %w[container_registry_size])")
        );
    }
}
