//! The operators' files in `contrib/`: the Grafana dashboard, the Prometheus alerts and the systemd
//! unit. Every metric they name is one `/metrics` serves (`tests/fixtures/metrics.prom`, which a
//! unit test keeps equal to the exposition, each family's samples in any order), so renaming a
//! metric breaks them here rather than on an operator's screen; promtool reads the exposition,
//! accepts the rules and passes their unit tests;
//! every dashboard query is PromQL that returns data on the served series; systemd-analyze accepts
//! the unit, which holds the hardening.
//!
//! promtool and systemd-analyze are looked for on `PATH`. Without promtool the tests that need it
//! print a notice and pass, unless `REGISTRY_REPAIR_REQUIRE_PROMTOOL=1` (as `.ci/run` sets), which
//! fails them; without systemd-analyze the unit's own checks still run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use registry_repair::config::Settings;
use serde_json::Value;

use crate::common::process::BIN;

const PREFIX: &str = "registry_repair_";
const DASHBOARD: &str = "contrib/grafana/registry-repair.json";
const ALERTS: &str = "contrib/prometheus/alerts.yml";
const ALERT_TESTS: &str = "contrib/prometheus/alerts.test.yml";
const UNIT: &str = "contrib/systemd/registry-repair.service";

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A directory of this test's own under the system's temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "rr-contrib-{test}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// promtool, or `None` after a notice (a failure under `REGISTRY_REPAIR_REQUIRE_PROMTOOL=1`).
fn promtool(test: &str) -> Option<PathBuf> {
    crate::common::tool::find(
        test,
        &["promtool"],
        &[],
        "prometheus",
        "REGISTRY_REPAIR_REQUIRE_PROMTOOL",
    )
}

/// Runs `tool args`; panics with its output unless it exits 0. Returns standard output and
/// standard error together.
fn run_ok(tool: &Path, args: &[&str]) -> String {
    let output = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", tool.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{} {args:?} exited with {}:\n{text}",
        tool.display(),
        output.status
    );
    text
}

/// The metric families `/metrics` serves, by name, with their kind (`counter`, `gauge`,
/// `histogram`), from the fixture's `# TYPE` lines.
fn served_families() -> BTreeMap<String, String> {
    let families: BTreeMap<String, String> = read("tests/fixtures/metrics.prom")
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect();
    assert!(families.len() > 20, "the fixture lists the families");
    families
}

/// Every `registry_repair_...` identifier in `text` (PromQL, YAML or JSON).
fn metric_names(text: &str) -> BTreeSet<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    text.match_indices(PREFIX)
        .filter(|(at, _)| !text[..*at].ends_with(is_ident))
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| is_ident(*c))
                .collect::<String>()
        })
        .collect()
}

/// The names of `used` that `/metrics` does not serve: neither a family nor a histogram family's
/// `_bucket`, `_sum` or `_count`.
fn unknown_names(used: &BTreeSet<String>, families: &BTreeMap<String, String>) -> Vec<String> {
    used.iter()
        .filter(|name| {
            let histogram_series = ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| families.get(base).is_some_and(|k| k == "histogram"))
            });
            !families.contains_key(name.as_str()) && !histogram_series
        })
        .cloned()
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// The dashboard's panels with their PromQL: (panel id, refId, expression).
fn dashboard_queries(dashboard: &Value) -> Vec<(u64, String, String)> {
    panels(dashboard)
        .iter()
        .flat_map(|panel| {
            let id = panel["id"].as_u64().unwrap_or_default();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |target| {
                    let text = |key: &str| target[key].as_str().unwrap_or_default().to_string();
                    (id, text("refId"), text("expr"))
                })
        })
        .collect()
}

fn panels(dashboard: &Value) -> Vec<&Value> {
    dashboard["panels"]
        .as_array()
        .unwrap_or_else(|| panic!("{DASHBOARD} has panels"))
        .iter()
        .collect()
}

/// The dashboard's PromQL with Grafana's variables set as a query over the last 15 minutes of
/// every instance would have them.
fn as_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "2m")
        .replace("$__range", "15m")
        .replace("$instance", ".*")
}

#[test]
fn every_metric_the_dashboard_and_the_alerts_name_is_served() {
    let families = served_families();
    let dashboard = dashboard();
    let mut dashboard_text: String = dashboard_queries(&dashboard)
        .into_iter()
        .map(|(_, _, expr)| expr + "\n")
        .collect();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = writeln!(dashboard_text, "{}", variable["definition"]);
    }
    for (file, text) in [
        (DASHBOARD, dashboard_text.clone()),
        (ALERTS, read(ALERTS)),
        (ALERT_TESTS, read(ALERT_TESTS)),
    ] {
        let used = metric_names(&text);
        assert!(used.len() >= 4, "{file} names metrics: {used:?}");
        let unknown = unknown_names(&used, &families);
        assert!(
            unknown.is_empty(),
            "{file} names metrics /metrics does not serve (tests/fixtures/metrics.prom): {unknown:?}"
        );
    }

    // The dashboard shows every family: a metric added to /metrics needs a panel.
    let shown: BTreeSet<String> = metric_names(&dashboard_text)
        .into_iter()
        .map(|name| {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| families.contains_key(*base));
            base.map_or(name.clone(), str::to_string)
        })
        .collect();
    let without_panel: Vec<_> = families.keys().filter(|f| !shown.contains(*f)).collect();
    assert!(
        without_panel.is_empty(),
        "families /metrics serves that no panel of {DASHBOARD} shows: {without_panel:?}"
    );
}

#[test]
fn a_misspelled_or_misused_metric_name_is_caught() {
    let families = served_families();
    let used = metric_names(
        "sum(rate(registry_repair_projects_analyzed_total[5m])) \
         / registry_repair_writer_buffered_bucket \
         + histogram_quantile(0.9, rate(registry_repair_registry_request_duration_seconds_bucket[5m])) \
         and container_registry_repair_x and registry_repair_enabled",
    );
    assert_eq!(
        unknown_names(&used, &families),
        vec![
            "registry_repair_projects_analyzed_total".to_string(),
            "registry_repair_writer_buffered_bucket".to_string(),
        ]
    );
}

#[test]
fn the_dashboard_is_importable_with_titled_and_described_panels() {
    let dashboard = dashboard();
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion: {}",
        dashboard["schemaVersion"]
    );
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));

    let variables: HashMap<&str, &Value> = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| Some((v["name"].as_str()?, v)))
        .collect();
    let datasource = variables.get("datasource").expect("a datasource variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let instance = variables.get("instance").expect("an instance variable");
    assert_eq!(instance["type"], "query");
    assert_eq!(instance["datasource"]["uid"], "${datasource}");

    let panels = panels(&dashboard);
    let mut ids = BTreeSet::new();
    let mut areas: Vec<(u64, [u64; 4])> = Vec::new();
    for panel in &panels {
        let id = panel["id"].as_u64().expect("every panel has a numeric id");
        assert!(ids.insert(id), "panel id {id} is used twice");
        for field in ["title", "description"] {
            assert!(
                panel[field].as_str().is_some_and(|t| !t.trim().is_empty()),
                "panel {id} has no {field}"
            );
        }
        let position = ["x", "y", "w", "h"].map(|k| {
            panel["gridPos"][k]
                .as_u64()
                .unwrap_or_else(|| panic!("panel {id} gridPos.{k}"))
        });
        assert!(
            position[0] + position[2] <= 24,
            "panel {id} is wider than the grid"
        );
        for (other, at) in &areas {
            let apart = position[0] + position[2] <= at[0]
                || at[0] + at[2] <= position[0]
                || position[1] + position[3] <= at[1]
                || at[1] + at[3] <= position[1];
            assert!(apart, "panels {other} and {id} overlap");
        }
        areas.push((id, position));
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {id} uses the datasource variable"
        );
        let targets = panel["targets"].as_array().map_or(0, Vec::len);
        assert!(targets > 0, "panel {id} queries something");
    }
    assert!(panels.len() >= 20, "{} panels", panels.len());

    // Every selector follows the instance variable, so picking an instance narrows every panel.
    for (id, ref_id, expr) in dashboard_queries(&dashboard) {
        assert!(
            !expr.trim().is_empty(),
            "panel {id} {ref_id}: an empty query"
        );
        for (at, _) in expr.match_indices(PREFIX) {
            let selector = &expr[at..];
            let name_end = selector
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(selector.len());
            let labels = selector[name_end..]
                .strip_prefix('{')
                .and_then(|rest| rest.split_once('}'))
                .map(|(labels, _)| labels);
            assert!(
                labels.is_some_and(|l| l.contains(r#"instance=~"$instance""#)),
                "panel {id} {ref_id}: `{}` is not narrowed by $instance",
                &selector[..name_end]
            );
        }
    }
}

#[test]
fn the_alert_rules_pass_promtool_and_tell_what_to_look_at() {
    let text = read(ALERTS);
    let alerts: Vec<&str> = text.split("- alert: ").skip(1).collect();
    assert!(alerts.len() >= 4, "{} alerts", alerts.len());
    for alert in &alerts {
        let name = alert.lines().next().unwrap_or_default();
        for needle in [
            "severity: ",
            "summary: ",
            "description: ",
            "registry-repair status",
            "journalctl -u registry-repair",
        ] {
            assert!(alert.contains(needle), "alert {name} has no `{needle}`");
        }
    }

    let Some(promtool) = promtool("the_alert_rules_pass_promtool_and_tell_what_to_look_at") else {
        return;
    };
    let checked = run_ok(
        &promtool,
        &["check", "rules", &root().join(ALERTS).to_string_lossy()],
    );
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{checked}"
    );
    let tested = run_ok(
        &promtool,
        &["test", "rules", &root().join(ALERT_TESTS).to_string_lossy()],
    );
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Each alert is tested firing on some series.
    let tests = read(ALERT_TESTS);
    for alert in &alerts {
        let name = alert.lines().next().unwrap_or_default().trim();
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "{ALERT_TESTS} has no firing case for {name}"
        );
    }
}

#[test]
fn the_exposition_is_prometheus_text_that_promtool_reads() {
    let Some(promtool) = promtool("the_exposition_is_prometheus_text_that_promtool_reads") else {
        return;
    };
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {} check metrics: {e}", promtool.display()));
    let mut stdin = child.stdin.take().expect("promtool's stdin");
    std::io::Write::write_all(&mut stdin, read("tests/fixtures/metrics.prom").as_bytes())
        .expect("writing the exposition to promtool");
    drop(stdin);
    let output = child.wait_with_output().expect("promtool check metrics");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // 3: read, with lint findings. The one finding is a gauge whose name ends in `_total`, kept
    // as it is for the dashboards and alerts that name it.
    let findings: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let known = "registry_repair_fleet_concurrency_total non-counter metrics should not have \"_total\" suffix";
    assert!(
        matches!(output.status.code(), Some(0) | Some(3)) && findings.iter().all(|l| *l == known),
        "promtool check metrics exited with {}:\n{text}",
        output.status
    );
}

/// promtool's input series: every sample of the fixture for two instances, rising by 1 a minute.
fn fixture_series() -> String {
    let mut out = String::new();
    for line in read("tests/fixtures/metrics.prom").lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample line: series value");
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, format!("{}, ", labels.trim_end_matches('}'))),
            None => (series, String::new()),
        };
        for instance in ["a:9393", "b:9393"] {
            let _ = writeln!(
                out,
                "      - series: '{name}{{{labels}job=\"registry-repair\", instance=\"{instance}\"}}'\n        values: '{value}+1x20'"
            );
        }
    }
    out
}

#[test]
fn every_dashboard_query_is_promql_that_returns_data_on_the_served_series() {
    let Some(promtool) =
        promtool("every_dashboard_query_is_promql_that_returns_data_on_the_served_series")
    else {
        return;
    };
    // One alert per query, firing when the query returns nothing; the test expects none to fire.
    let queries = dashboard_queries(&dashboard());
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut tests = format!(
        "rule_files: [rules.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{}    alert_rule_test:\n",
        fixture_series()
    );
    for (id, ref_id, expr) in &queries {
        let alert = format!("Panel{id}{ref_id}");
        let _ = writeln!(
            rules,
            "      - alert: {alert}\n        expr: |\n          absent({})",
            as_promql(expr)
        );
        let _ = writeln!(
            tests,
            "      - eval_time: 15m\n        alertname: {alert}\n        exp_alerts: []"
        );
    }
    let scratch = Scratch::new("dashboard");
    let rules = scratch.write("rules.yml", &rules);
    let tests = scratch.write("tests.yml", &tests);
    let checked = run_ok(&promtool, &["check", "rules", &rules.to_string_lossy()]);
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{checked}"
    );
    // On failure promtool names each query (PanelIDrefId) that returned nothing.
    run_ok(&promtool, &["test", "rules", &tests.to_string_lossy()]);
}

/// The unit's `[Service]` settings: each key with its values, in order.
fn unit_settings(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = "";
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[Service]" && !line.starts_with('#') {
            if let Some((key, value)) = line.split_once('=') {
                settings
                    .entry(key.to_string())
                    .or_default()
                    .push(value.to_string());
            }
        }
    }
    settings
}

/// A time span as systemd writes it (`60`, `60s`, `2min`, `1min 30s`), in seconds.
fn seconds(span: &str) -> u64 {
    span.split_whitespace()
        .map(|part| {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            let n: u64 = digits
                .parse()
                .unwrap_or_else(|_| panic!("a time span: {span}"));
            match &part[digits.len()..] {
                "" | "s" | "sec" => n,
                "min" | "m" => n * 60,
                "h" => n * 3600,
                unit => panic!("a time span unit: {unit} in {span}"),
            }
        })
        .sum()
}

#[test]
fn the_systemd_unit_is_hardened_and_systemd_accepts_it() {
    let unit = read(UNIT);
    let settings = unit_settings(&unit);
    let one = |key: &str| -> &str {
        match settings.get(key).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("{UNIT}: {key} set once, not {other:?}"),
        }
    };
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
    ] {
        assert_eq!(one(key), value, "{UNIT}: {key}");
    }
    let restart = seconds(one("RestartSec"));
    assert!((1..=60).contains(&restart), "RestartSec {restart} s");
    let drain = Settings::default().worker.shutdown_timeout.as_secs();
    let stop = seconds(one("TimeoutStopSec"));
    assert!(
        stop > drain,
        "TimeoutStopSec ({stop} s) must leave the drain (worker.shutdown_timeout_s, {drain} s) time to end"
    );

    // The configuration and the key come as credentials; the command is `run` with --config.
    let exec = one("ExecStart");
    assert_eq!(
        exec, "/usr/local/bin/registry-repair --config %d/registry-repair.toml run",
        "{UNIT}: ExecStart"
    );
    let credentials = &settings["LoadCredential"];
    for wanted in [
        "registry-repair.toml:/etc/registry-repair/registry-repair.toml",
        "registry.key:/etc/registry-repair/gitlab-registry.key",
    ] {
        assert!(
            credentials.iter().any(|c| c == wanted),
            "LoadCredential={wanted}"
        );
    }

    // The environment the unit sets is configuration the service reads, and it wins over the
    // file's: the key is the credential's copy, whatever registry.key_path the file names.
    let scratch = Scratch::new("unit");
    let file = scratch.write(
        "registry-repair.toml",
        "[registry]\nkey_path = \"/etc/registry-repair/gitlab-registry.key\"\n",
    );
    let credentials_dir = "/run/credentials/registry-repair.service";
    let env: HashMap<String, String> = settings
        .get("Environment")
        .into_iter()
        .flatten()
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%d", credentials_dir)))
        .collect();
    let loaded = Settings::load_from(Some(&file), env).expect("the unit's environment loads");
    assert_eq!(
        loaded.registry.key_path.as_deref(),
        Some(Path::new(&format!("{credentials_dir}/registry.key")))
    );

    let Some(analyze) = on_path("systemd-analyze") else {
        eprintln!(
            "SKIPPED the_systemd_unit_is_hardened_and_systemd_accepts_it: systemd-analyze is not \
             installed (apt-get install systemd to run it); the unit's settings were checked"
        );
        return;
    };
    // verify wants the binary the unit starts to exist: a copy of the unit starts the one built.
    let copy = scratch.write(
        "registry-repair.service",
        &unit.replace("/usr/local/bin/registry-repair", BIN),
    );
    let copy = copy.to_string_lossy();
    // verify exits 0 on a setting it cannot parse (it ignores it): it must say nothing at all.
    let said = run_ok(&analyze, &["verify", &copy]);
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify {UNIT}:\n{said}"
    );
    // The exposure systemd rates the sandbox at, 0 to 10 (the threshold counts tenths): at most 2.
    let security = Command::new(&analyze)
        .args(["security", "--offline=yes", "--threshold=20", &copy])
        .output()
        .expect("running systemd-analyze security");
    let report = String::from_utf8_lossy(&security.stdout);
    let stderr = String::from_utf8_lossy(&security.stderr);
    if stderr.contains("unrecognized option") {
        eprintln!("SKIPPED the exposure check: this systemd-analyze has no --offline ({stderr})");
        return;
    }
    assert!(
        security.status.success(),
        "systemd-analyze security rates {UNIT} above 2.0:\n{}\n{stderr}",
        report.lines().last().unwrap_or_default()
    );
}
