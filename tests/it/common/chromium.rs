//! Debian's headless Chromium, for the pages the service serves and writes. Where it is not
//! installed, [`Chromium::find`] prints a notice and returns `None` (the test then passes without
//! running), unless `REGISTRY_REPAIR_REQUIRE_CHROMIUM=1` (as `.ci/run` sets), which fails it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Chromium {
    binary: PathBuf,
}

impl Chromium {
    pub fn find(test: &str) -> Option<Self> {
        let binary = super::tool::find(
            test,
            &["chromium", "chromium-browser"],
            &[],
            "chromium",
            "REGISTRY_REPAIR_REQUIRE_CHROMIUM",
        )?;
        Some(Self { binary })
    }

    /// The DOM of `url` once its scripts ran for `budget_ms` of virtual time (timers fire at once
    /// in virtual time, so a page that refreshes itself has refreshed by then).
    pub fn dump_dom(&self, url: &str, budget_ms: u32) -> String {
        let output = self.run(&[
            &format!("--virtual-time-budget={budget_ms}"),
            "--dump-dom",
            url,
        ]);
        assert!(
            output.status.success(),
            "chromium --dump-dom {url} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The DOM of `url` in a window of `width`×`height` CSS pixels (its media queries follow
    /// the window), once its scripts ran.
    pub fn dump_dom_at(&self, url: &str, width: u32, height: u32) -> String {
        let output = self.run(&[
            "--virtual-time-budget=1000",
            &format!("--window-size={width},{height}"),
            "--dump-dom",
            url,
        ]);
        assert!(
            output.status.success(),
            "chromium --dump-dom {url} at {width}×{height} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A PNG of `url` at `width`×`height` CSS pixels, written to `to`.
    pub fn screenshot(&self, url: &str, to: &Path, width: u32, height: u32) {
        let output = self.run(&[
            "--hide-scrollbars",
            "--virtual-time-budget=2000",
            &format!("--window-size={width},{height}"),
            &format!("--screenshot={}", to.display()),
            url,
        ]);
        assert!(
            output.status.success() && to.is_file(),
            "chromium --screenshot {url} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        // A profile of its own per call: parallel tests would otherwise share one and block.
        let profile = std::env::temp_dir().join(format!(
            "rr-chromium-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let mut command = Command::new(&self.binary);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-dev-shm-usage",
                &format!("--user-data-dir={}", profile.display()),
            ])
            .args(args)
            .stdin(Stdio::null());
        let output = command.output().expect("chromium starts");
        let _ = std::fs::remove_dir_all(&profile);
        output
    }
}
