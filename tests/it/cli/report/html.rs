//! The HTML page rendered by headless Chromium: the DOM it builds shows the totals and carries
//! every figure of `--format json`; screenshots at a desktop and a phone width. And
//! `docs/report.png`, made the same way from a demo-like world (ignored: run by hand).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::fixture::damaged;
use super::parse;
use crate::common::chromium::Chromium;
use crate::common::process::{cli, Env};
use crate::common::TestDb;
use registry_repair::db::tracking::TrackingStatus;
use registry_repair::demo::seed::World;
use std::time::Duration;

static PAGES: AtomicU32 = AtomicU32::new(0);

/// `html` in a file of its own, removed on drop.
struct PageFile(PathBuf);

impl PageFile {
    fn new(html: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "rr-report-{}-{}.html",
            std::process::id(),
            PAGES.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, html).expect("writing the page");
        Self(path)
    }

    fn url(&self) -> String {
        format!("file://{}", self.0.display())
    }
}

impl Drop for PageFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The width and height of a PNG, from its header.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).expect("the screenshot");
    assert!(
        bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is no PNG",
        path.display()
    );
    let at = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    (at(16), at(20))
}

#[actix_rt::test]
async fn chromium_renders_the_page_with_the_totals_and_every_figure_of_the_json() {
    let test = "chromium_renders_the_page_with_the_totals_and_every_figure_of_the_json";
    let Some(chromium) = Chromium::find(test) else {
        return;
    };
    let world = damaged().await;
    let json = world.report(&["--format", "json"]).await;
    json.assert_exit(0);
    let html = world.report(&["--format", "html"]).await;
    html.assert_exit(0);
    let page = PageFile::new(&html.stdout);

    let dom = chromium.dump_dom(&page.url(), 1000);
    parse::assert_page_agrees(&parse::json(&json.stdout), &parse::html(&dom));
    let text = parse::visible_text(&dom);
    for shown in [
        "Missing repositories 10 in 5 projects",
        "Missing bytes 8.10 GiB 8,695,804,538 bytes; 2 sizes unknown",
        "Shown as empty by GitLab 2 projects 8.00 GiB missing, left out of their usage quota \
         (8,589,946,937 bytes)",
        "Projects analysed 100.0% 11 of 11 projects; 0 pending",
        "Their known sizes 8.10 GiB (8,695,804,538 bytes) missing_bytes",
        "Sizes in binary units (1 KiB = 1,024 bytes",
    ] {
        assert!(
            text.contains(shown),
            "the page does not show {shown:?}:\n{text}"
        );
    }

    let dir = std::env::temp_dir();
    for (name, width, height) in [("wide", 1280, 1600), ("narrow", 390, 2400)] {
        let png = dir.join(format!("rr-report-{}-{name}.png", std::process::id()));
        chromium.screenshot(&page.url(), &png, width, height);
        assert_eq!(png_size(&png), (width, height));
        let _ = std::fs::remove_file(&png);
    }
}

#[actix_rt::test]
async fn chromium_shows_the_failed_projects_escaped_and_the_bytes_by_month_with_their_figures() {
    let test =
        "chromium_shows_the_failed_projects_escaped_and_the_bytes_by_month_with_their_figures";
    let Some(chromium) = Chromium::find(test) else {
        return;
    };
    let world = damaged().await;
    let html = world.report(&["--format", "html"]).await;
    html.assert_exit(0);

    // Where each figure of the bytes chart lands once laid out, at a desktop's and a phone's
    // width: measured by a copy of the page with a script (the page itself has none).
    let measuring = PageFile::new(&html.stdout.replace("</body>", MEASURE_FIGURES));
    for (width, height) in [(1280, 1600), (390, 2400)] {
        let dom = chromium.dump_dom_at(&measuring.url(), width, height);
        let measured: serde_json::Value = dom
            .split("data-figures=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .map(parse::unescape)
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_else(|| panic!("nothing measured at {width}: {dom}"));
        let boxed = |v: &serde_json::Value| -> [f64; 4] {
            let n = |i: usize| v[i].as_f64().expect("a coordinate");
            [n(0), n(1), n(2), n(3)]
        };
        let chart = boxed(&measured["chart"]);
        let figures: Vec<(String, [f64; 4])> = measured["figures"]
            .as_array()
            .expect("figures")
            .iter()
            .map(|f| (f[0].as_str().expect("text").to_string(), boxed(&f[1])))
            .collect();
        let bars: Vec<[f64; 4]> = measured["bars"]
            .as_array()
            .expect("bars")
            .iter()
            .map(boxed)
            .collect();
        // The hostile reason is text: no element of its markup, only the measuring script.
        assert_eq!(
            (measured["scripts"].as_i64(), measured["bold"].as_i64()),
            (Some(1), Some(0)),
            "{measured}"
        );
        assert!(measured["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .any(|r| r.as_str() == Some(super::fixture::HOSTILE_REASON)));
        let shown: Vec<&str> = figures.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(
            shown,
            ["101 MiB", "3.00 GiB", "5.00 GiB"],
            "every month with bytes carries its figure, at {width}"
        );
        let overlap = |a: &[f64; 4], b: &[f64; 4]| {
            a[0] < b[2] - 0.5 && b[0] < a[2] - 0.5 && a[1] < b[3] - 0.5 && b[1] < a[3] - 0.5
        };
        for (i, (text, area)) in figures.iter().enumerate() {
            assert!(
                area[0] >= chart[0] - 0.5
                    && area[2] <= chart[2] + 0.5
                    && area[1] >= chart[1] - 0.5
                    && area[3] <= chart[3] + 0.5,
                "{text} at {area:?} leaves the chart {chart:?} at {width}"
            );
            assert!(area[2] > area[0] && area[3] > area[1], "{text} is drawn");
            for (other, other_area) in &figures[i + 1..] {
                assert!(
                    !overlap(area, other_area),
                    "{text} and {other} overlap at {width}"
                );
            }
            // A figure touches no column but its own (drawn inside the top of a tall one).
            let touching = bars.iter().filter(|bar| overlap(area, bar)).count();
            assert!(touching <= 1, "{text} covers {touching} columns at {width}");
        }
    }
}

/// A top-level namespace and a project path with everything an HTML page must escape.
const HOSTILE_NAMESPACE: &str = "Ev\"il&<script>";
const HOSTILE_PROJECT: &str = "App&<script>alert(1)</script>\"x";

#[actix_rt::test]
async fn chromium_shows_paths_and_namespaces_that_hold_markup_as_text() {
    let test = "chromium_shows_paths_and_namespaces_that_hold_markup_as_text";
    let Some(chromium) = Chromium::find(test) else {
        return;
    };
    let mut world = World::new();
    let group = world.group(None, HOSTILE_NAMESPACE);
    let id = world.project(group, HOSTILE_PROJECT, &["", "cache"], &[]);
    let full_path = format!("{HOSTILE_NAMESPACE}/{HOSTILE_PROJECT}");
    let db = TestDb::new().await;
    world.insert(&db.database()).await.expect("seeding");
    let registry_path = full_path.to_lowercase();
    db.execute(&format!(
        "INSERT INTO container_registry_data_repair_details \
             (project_id, missing_count, status, created_at, updated_at) \
             VALUES ({id}, 2, 1, now(), now()); \
         INSERT INTO registry_repair_missing_repositories \
             (project_id, registry_path, name, registry_created_at, size_bytes) VALUES \
             ({id}, '{registry_path}', '', '2024-05-01T00:00:00Z', 1048576), \
             ({id}, '{registry_path}/cache', 'cache', '2024-06-01T00:00:00Z', 2048)"
    ))
    .await;
    let env = Env::new().set("DATABASE__URL", &db.url);
    let html = cli(
        &["report", "--format", "html"],
        &env,
        Duration::from_secs(30),
    )
    .await;
    html.assert_exit(0).assert_no_panic();
    let page = PageFile::new(&html.stdout);

    let dom = chromium.dump_dom(&page.url(), 1000);
    // No element came of them: the page has no script at all.
    assert!(!dom.contains("<script"), "{dom}");
    let fields = parse::html(&dom);
    for (field, value) in [
        ("namespaces.0.namespace", HOSTILE_NAMESPACE),
        ("namespaces_by_bytes.0.namespace", HOSTILE_NAMESPACE),
        ("top_missing.0.full_path", full_path.as_str()),
        ("top_by_bytes.0.full_path", full_path.as_str()),
    ] {
        assert_eq!(
            fields.get(field),
            Some(&vec![Some(value.to_string())]),
            "{field}"
        );
    }
    // As text in the tables, and in the charts' labels and titles: twice each (by count, by
    // bytes).
    let namespace = "Ev\"il&amp;&lt;script&gt;";
    for shown in [
        format!(">{namespace}</th>"),
        format!(">{namespace}</text>"),
        format!("<title>{namespace}: "),
    ] {
        assert_eq!(dom.matches(&shown).count(), 2, "{shown} twice: {dom}");
    }
    let text = parse::visible_text(&dom);
    assert!(
        text.contains("Ev\"il&<script>/ App&<script>alert(1)</ script>\"x"),
        "the path, broken after each `/`: {text}"
    );
}

/// Writes into the page's `body` where the bytes-by-month chart, its figures and its columns are
/// drawn (`getBoundingClientRect`, CSS pixels).
const MEASURE_FIGURES: &str = "<script>\
    const chart = [...document.querySelectorAll('svg')]\
      .find(s => s.getAttribute('aria-label') === 'Missing bytes by month created');\
    const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };\
    document.body.setAttribute('data-figures', JSON.stringify({\
      chart: box(chart),\
      figures: [...chart.querySelectorAll('text.figure')].map(t => [t.textContent, box(t)]),\
      bars: [...chart.querySelectorAll('rect.bar')].filter(r => r.getBBox().height > 0).map(box),\
      scripts: document.scripts.length,\
      bold: document.querySelectorAll('b').length,\
      reasons: [...document.querySelectorAll('td.reason')].map(td => td.textContent),\
    }));\
    </script></body>";

/// A small deterministic generator, so that the picture is the same every time.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The demo's world (`registry-repair demo`'s 3000 projects), 95% analysed, its missing
/// repositories recorded with sizes (1 MiB to a few GiB, a few unknown) and creation times
/// (spread over six years, with a burst in March 2024 when a mirror's images were lost), and a
/// few projects analysed before repositories were itemised.
async fn demo_like_world() -> TestDb {
    let world = World::generate(3000, 2026);
    let db = TestDb::new().await;
    world.insert(&db.database()).await.expect("seeding");
    let expected = world.expected();
    let mut ids: Vec<i64> = expected.keys().copied().collect();
    ids.sort_unstable();
    let analysed: Vec<i64> = ids[..ids.len() * 95 / 100].to_vec();
    let rows: Vec<String> = analysed
        .iter()
        .map(|id| {
            let e = expected[id];
            let status = if e.status == TrackingStatus::Failed {
                2
            } else {
                1
            };
            format!("({id}, {}, {status}, now(), now())", e.missing)
        })
        .collect();
    db.execute(&format!(
        "INSERT INTO container_registry_data_repair_details \
             (project_id, missing_count, status, created_at, updated_at) VALUES {}",
        rows.join(", ")
    ))
    .await;
    // The failed ones have no route, and a run records so.
    db.execute(
        "INSERT INTO registry_repair_failures (project_id, cause, reason, failed_at) \
         SELECT project_id, 'no_route', 'the project has no route, so no registry path', \
                '2026-12-01T09:00:00Z' \
         FROM container_registry_data_repair_details WHERE status = 2",
    )
    .await;

    let mut dice = Dice(2026);
    let paths: std::collections::HashMap<i64, String> = world
        .projects
        .iter()
        .filter_map(|p| Some((p.id, p.full_path.clone()?.to_lowercase())))
        .collect();
    let mut entries = Vec::new();
    for (id, name) in world.lost_repositories() {
        if analysed.binary_search(&id).is_err() || id % 23 == 0 {
            continue; // not analysed yet, or analysed before repositories were itemised
        }
        let registry_path = if name.is_empty() {
            paths[&id].clone()
        } else {
            format!("{}/{name}", paths[&id])
        };
        let mirror = registry_path.contains("/cng-mirror/");
        let created = if dice.below(50) == 0 {
            "NULL".to_string()
        } else if mirror {
            format!(
                "'2024-03-{:02}T{:02}:00:00Z'",
                4 + dice.below(20),
                dice.below(24)
            )
        } else {
            // More repositories were pushed in later years.
            let months = 72 - (dice.below(72) * dice.below(72) / 72);
            let (year, month) = (2020 + (months - 1) / 12, (months - 1) % 12 + 1);
            format!("'{year}-{month:02}-{:02}T12:00:00Z'", 1 + dice.below(28))
        };
        let size = if dice.below(25) == 0 {
            "NULL".to_string()
        } else if mirror {
            (((20 + dice.below(200)) << 20) + dice.below(1 << 20)).to_string()
        } else {
            let exponent = 20 + dice.below(12);
            ((1u64 << exponent) + dice.below(1 << exponent)).to_string()
        };
        entries.push(format!(
            "({id}, '{registry_path}', '{name}', {created}, {size})"
        ));
    }
    db.execute(&format!(
        "DELETE FROM registry_repair_missing_repositories; \
         INSERT INTO registry_repair_missing_repositories \
             (project_id, registry_path, name, registry_created_at, size_bytes) VALUES {}",
        entries.join(", ")
    ))
    .await;
    db
}

/// Regenerates `docs/report.png`: `cargo test --test it cli::report::html::docs_report_png --
/// --ignored` (docs/testing.md).
#[actix_rt::test]
#[ignore = "writes docs/report.png; run by hand"]
async fn docs_report_png() {
    let chromium = Chromium::find("docs_report_png").expect("chromium, to take the screenshot");
    let db = demo_like_world().await;
    let env = Env::new().set("DATABASE__URL", &db.url);
    let html = cli(
        &[
            "report",
            "--format",
            "html",
            "--top",
            "8",
            "--namespaces",
            "6",
        ],
        &env,
        Duration::from_secs(60),
    )
    .await;
    html.assert_exit(0).assert_no_panic();
    let page = PageFile::new(&html.stdout);
    let width = 1280;
    let height = page_height(&chromium, &html.stdout, width);
    let png = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/report.png");
    chromium.screenshot(&page.url(), &png, width, height);
    assert_eq!(png_size(&png), (width, height));
}

/// The height of the whole page at `width`, measured by a copy of it with a script (the page
/// itself has none) that writes its height into its own DOM.
fn page_height(chromium: &Chromium, html: &str, width: u32) -> u32 {
    let measuring = PageFile::new(&html.replace(
        "</body>",
        &format!(
            "<script>document.documentElement.style.width = '{width}px'; \
             document.body.setAttribute('data-height', \
             document.documentElement.scrollHeight);</script></body>"
        ),
    ));
    let dom = chromium.dump_dom(&measuring.url(), 1000);
    dom.split("data-height=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("no height measured: {dom}"))
}
