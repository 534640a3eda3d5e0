//! `demo --serve`: after the demo's checks, a `run` serving beside the simulated registry and the
//! demo's database, and the settings to practise the repair against them, written to a
//! directory of the demo's own (`$TMPDIR/registry-repair-demo/<database>/`, readable only by the
//! user), until SIGTERM or SIGINT. Then the `run` stops, the directory is removed and the
//! database kept.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};

use super::PRACTICE_DOCS;
use crate::analysis::Analysis;
use crate::config::{Settings, ENV_PREFIX};
use crate::demo::DEMO_KEY;
use crate::registry::simulator::RegistrySimulator;
use crate::registry::TokenSigner;
use crate::scheduler::RunEnd;
use crate::service::{self, ServiceOptions};
use crate::signals::Signals;

/// The configuration file's name in the practice directory.
pub const CONFIG_FILE: &str = "registry-repair.toml";
/// The demo's signing key's name in the practice directory.
pub const KEY_FILE: &str = "demo_registry.key";

/// Serves until SIGTERM or SIGINT: `run` on a loopback admin port beside `simulator` and the
/// database of `settings`, with the settings written for the practice commands.
pub async fn serve(
    settings: &Settings,
    signer: Arc<TokenSigner>,
    database: &str,
    simulator: &RegistrySimulator,
) -> anyhow::Result<()> {
    // Before the service starts, so that no signal finds its default (killing) action.
    let signals = Signals::listen().context("listening for SIGTERM and SIGINT")?;
    let analysis = Analysis::new(settings);
    let service = service::start(settings, signer, analysis, ServiceOptions::default())
        .await
        .context("starting the demo's `run` for practice")?;
    let scheduler = service.scheduler.clone();
    let Some(admin) = service.admin_addr else {
        service.shutdown();
        let _ = service.wait().await;
        bail!("the demo's `run` serves no admin API");
    };
    let mut serving = settings.clone();
    serving.admin.listen = admin;
    let files = match PracticeFiles::write(&practice_dir(database), &serving) {
        Ok(files) => files,
        Err(error) => {
            service.shutdown();
            let _ = service.wait().await;
            return Err(error);
        }
    };
    print!("{}", instructions(&serving, &files, simulator, database));
    signals.forward_to(scheduler);
    let end = service.wait().await;
    let removed = files.remove();
    match end {
        RunEnd::Stopped | RunEnd::Done => {
            println!(
                "\nStopped: the registry and `run` no longer serve; {removed}. The database `{database}` is kept."
            );
            Ok(())
        }
        other => Err(anyhow!(
            "the demo's `run` stopped on its own ({other:?}); {removed}"
        )),
    }
}

/// `$TMPDIR/registry-repair-demo/<database>`: one directory per database, as one demo at a time
/// serves a database (its claim).
pub fn practice_dir(database: &str) -> PathBuf {
    std::env::temp_dir()
        .join("registry-repair-demo")
        .join(database)
}

/// The configuration file and the key, readable only by the user; removed when dropped.
struct PracticeFiles {
    dir: PathBuf,
    config: PathBuf,
    key: PathBuf,
    removed: bool,
}

impl PracticeFiles {
    fn write(dir: &Path, settings: &Settings) -> anyhow::Result<Self> {
        if let Some(parent) = dir.parent() {
            private_dir(parent)?;
        }
        private_dir(dir)?;
        let files = PracticeFiles {
            dir: dir.to_path_buf(),
            config: dir.join(CONFIG_FILE),
            key: dir.join(KEY_FILE),
            removed: false,
        };
        private_file(&files.key, DEMO_KEY)?;
        private_file(&files.config, &config_toml(settings, &files.key))?;
        Ok(files)
    }

    /// Removes the files and the directory; says what became of them.
    fn remove(mut self) -> String {
        self.removed = true;
        let gone = [&self.config, &self.key]
            .into_iter()
            .try_for_each(|file| match std::fs::remove_file(file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            })
            .and_then(|()| std::fs::remove_dir(&self.dir));
        match gone {
            Ok(_) => format!("{} is removed", self.dir.display()),
            Err(e) => format!("{} could not be removed ({e})", self.dir.display()),
        }
    }
}

impl Drop for PracticeFiles {
    fn drop(&mut self) {
        if !self.removed {
            let _ = std::fs::remove_file(&self.config);
            let _ = std::fs::remove_file(&self.key);
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// A directory only the user may enter: created so, or one of the user's own already so. One that
/// others may use (a shared `/tmp`) is refused rather than trusted with the key.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(e).with_context(|| {
                format!(
                    "creating the demo's directory {} (TMPDIR picks another place)",
                    dir.display()
                )
            })
        }
        _ => {}
    }
    let meta = std::fs::symlink_metadata(dir)
        .with_context(|| format!("reading the demo's directory {}", dir.display()))?;
    // The process's own entry belongs to its effective user.
    let mine = std::fs::metadata("/proc/self").map_or(true, |me| me.uid() == meta.uid());
    if !meta.is_dir() || !mine || meta.mode() & 0o077 != 0 {
        bail!(
            "{} is not a directory of this user's that only it may open (mode {:o}): remove it, or set TMPDIR to a directory of your own",
            dir.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// `text` as a new file readable only by the user (what was there before is replaced).
fn private_file(path: &Path, text: &str) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("replacing {}", path.display()))
        }
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// The keys the practice commands need, each with its value: database, registry and key, the
/// admin API of the demo's `run` (and its token, if the demo's configuration has one).
fn practice_settings(settings: &Settings, key: &Path) -> Vec<(&'static str, &'static str, String)> {
    let mut keys = vec![
        (
            "database",
            "url",
            settings.database.url.expose().to_string(),
        ),
        (
            "registry",
            "url",
            settings.registry.url.expose().to_string(),
        ),
        ("registry", "key_path", key.display().to_string()),
        ("registry", "issuer", settings.registry.issuer.clone()),
        ("registry", "audience", settings.registry.audience.clone()),
        ("admin", "listen", settings.admin.listen.to_string()),
    ];
    if let Some(token) = &settings.admin.token {
        keys.push(("admin", "token", token.expose().to_string()));
    }
    keys
}

fn config_toml(settings: &Settings, key: &Path) -> String {
    let mut text = String::from(
        "# Written by `registry-repair demo --serve` to practise the repair against its database and\n\
         # simulated registry; removed when the demo stops.\n",
    );
    let mut section = "";
    for (table, name, value) in practice_settings(settings, key) {
        if table != section {
            let _ = write!(text, "\n[{table}]\n");
            section = table;
        }
        let _ = writeln!(text, "{name} = {}", toml_string(&value));
    }
    text
}

/// A TOML basic string.
fn toml_string(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A word the shell reads back as `value`.
fn shell_word(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:@%+=,".contains(c));
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// What the demo prints while it serves: what serves where, the file, the commands and the same
/// settings as environment lines.
fn instructions(
    settings: &Settings,
    files: &PracticeFiles,
    simulator: &RegistrySimulator,
    database: &str,
) -> String {
    let config = shell_word(&files.config.display().to_string());
    let mut text = String::new();
    let _ = writeln!(
        text,
        "\nServing to practise the repair: the simulated registry on {}, the database `{database}`, and `registry-repair run` with its admin API on {}.",
        simulator.url(),
        settings.admin.listen
    );
    let _ = writeln!(
        text,
        "Settings for report, status and every repair step: {}\n(with the demo's key beside it; only you may read them; both removed when the demo stops).\n",
        files.config.display()
    );
    for step in [
        "report",
        "status",
        "repair plan",
        "repair apply",
        "repair verify RUN",
        "repair runs",
        "repair undo RUN",
    ] {
        let _ = writeln!(text, "  registry-repair --config {config} {step}");
    }
    let _ = writeln!(text, "\nOr the same settings in the environment:");
    let mut secret = false;
    for (table, name, value) in practice_settings(settings, &files.key) {
        let variable = format!(
            "{ENV_PREFIX}__{}__{}",
            table.to_uppercase(),
            name.to_uppercase()
        );
        let shown = match (table, name) {
            ("database", "url") => {
                let shown = settings.database.url.to_string();
                secret |= shown != value;
                shown
            }
            ("admin", "token") => {
                secret = true;
                "<admin.token of your configuration>".to_string()
            }
            _ => value,
        };
        let _ = writeln!(text, "  export {variable}={}", shell_word(&shown));
    }
    if secret {
        let _ = writeln!(text, "  (secrets masked here; the file has them)");
    }
    let overriding: Vec<String> = practice_settings(settings, &files.key)
        .into_iter()
        .map(|(table, name, _)| {
            format!(
                "{ENV_PREFIX}__{}__{}",
                table.to_uppercase(),
                name.to_uppercase()
            )
        })
        .filter(|variable| std::env::var_os(variable).is_some())
        .collect();
    if !overriding.is_empty() {
        let _ = writeln!(
            text,
            "\nThis shell sets {}, which wins over --config: export the lines above, or `unset` it, before the commands.",
            overriding.join(", ")
        );
    }
    let _ = writeln!(
        text,
        "\nThe steps, and what each guard's repositories show: {PRACTICE_DOCS}. Ctrl-C to stop."
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_configuration_reads_back_as_the_demos_settings() {
        let parent = std::env::temp_dir().join(format!(
            "registry-repair-practice-test-{}",
            std::process::id()
        ));
        let dir = parent.join("registry_repair_demo");
        let mut settings = Settings::default();
        settings.database.url = "postgres://demo:p\"w@127.0.0.1:5432/registry_repair_demo"
            .parse()
            .expect("url");
        settings.registry.url = "http://127.0.0.1:40001".parse().expect("url");
        settings.registry.issuer = "odd \"issuer\" \\ name".into();
        settings.admin.listen = "127.0.0.1:40002".parse().expect("address");
        let files = PracticeFiles::write(&dir, &settings).expect("written");
        let read = Settings::load_from(Some(&files.config), Default::default()).expect("reads");
        assert_eq!(read.database.url.expose(), settings.database.url.expose());
        assert_eq!(read.registry.url.to_string(), "http://127.0.0.1:40001/");
        assert_eq!(read.registry.key_path.as_deref(), Some(files.key.as_path()));
        assert_eq!(read.registry.issuer, settings.registry.issuer);
        assert_eq!(read.admin.listen, settings.admin.listen);
        for file in [&files.config, &files.key] {
            let mode = std::fs::metadata(file).expect("file").mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
        assert_eq!(std::fs::read_to_string(&files.key).expect("key"), DEMO_KEY);
        let message = files.remove();
        assert!(message.ends_with("is removed"), "{message}");
        assert!(!dir.exists());
        std::fs::remove_dir(&parent).expect("the test's directory");
    }

    #[test]
    fn shell_words_quote_only_what_needs_it() {
        assert_eq!(shell_word("/tmp/a-b/c.toml"), "/tmp/a-b/c.toml");
        assert_eq!(shell_word("/tmp/my dir/it's"), r"'/tmp/my dir/it'\''s'");
    }
}
