//! The outside tools some tests need (pgbouncer, docker-registry, promtool, Chromium), found on
//! `PATH` or in the package's own directories. Where one is missing, the test prints a `SKIPPED`
//! notice and passes without running, unless the tool's `REGISTRY_REPAIR_REQUIRE_*` variable is
//! `1` (as `.ci/run` sets), which fails it.

use std::path::PathBuf;

/// The first of `names` found on `PATH` or in `dirs`; `package` is what installs it.
pub fn find(
    test: &str,
    names: &[&str],
    dirs: &[&str],
    package: &str,
    require: &str,
) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(dirs.iter().map(PathBuf::from))
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        let name = names.first().copied().unwrap_or(package);
        if std::env::var(require).as_deref() == Ok("1") {
            panic!("{test}: {name} is not installed, and {require}=1 requires it (apt-get install {package})");
        }
        eprintln!(
            "SKIPPED {test}: {name} is not installed (apt-get install {package} to run it; \
             {require}=1 makes this a failure)"
        );
    }
    found
}
