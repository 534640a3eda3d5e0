//! Layered configuration: built-in defaults, then an optional TOML file, then
//! `REGISTRY_REPAIR__SECTION__KEY` environment variables, later winning.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

pub const ENV_PREFIX: &str = "REGISTRY_REPAIR";

/// A configuration value that cannot be used. Always names the key, so an operator knows what to fix.
#[derive(Debug, thiserror::Error)]
#[error("configuration `{key}`: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub registry: RegistrySettings,
    pub worker: WorkerSettings,
    pub writer: WriterSettings,
    pub admin: AdminSettings,
    pub log: LogSettings,
    pub control: ControlSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSettings {
    /// `config`: `worker.max_concurrency`, `worker.enabled` and the admin API steer the service.
    /// `gitlab`: GitLab's application setting and feature flag do, read every `poll_interval_ms`.
    pub source: String,
    pub poll_interval_ms: i64,
}

impl Default for ControlSettings {
    fn default() -> Self {
        Self {
            source: "config".into(),
            poll_interval_ms: 5000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    pub url: String,
    pub pool_size: i64,
    /// How long to wait for a connection before giving up (start-up and every query).
    pub connect_timeout_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySettings {
    pub url: String,
    pub key_path: Option<PathBuf>,
    pub issuer: String,
    pub audience: String,
    pub page_size: i64,
    pub timeout_ms: i64,
    /// Lifetime of each minted token; a token is replaced well before it could expire mid-request.
    pub token_lifetime_s: i64,
    /// A project with more pages than this is recorded `failed` rather than walked forever.
    pub max_pages: i64,
    /// PEM file of one or more CA certificates trusted for `registry.url`, besides the system's.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    pub enabled: bool,
    pub max_concurrency: i64,
    pub rescan_interval_s: i64,
    /// How often the projects below the watermark are swept from id 0 for ones without an answer
    /// (tracking rows deleted by hand, projects restored with their old id).
    pub sweep_interval_s: i64,
    /// On SIGTERM, how long in-flight projects may take before the service flushes and exits anyway.
    pub shutdown_timeout_s: i64,
    /// `i/N`: this instance analyses the projects whose id modulo N is i (several instances on one
    /// database split the work with no overlap and no gap).
    pub shard: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterSettings {
    pub batch_size: i64,
    pub flush_interval_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    pub listen: String,
    pub token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A `tracing` filter directive (`info`, `registry_repair=debug`, ...).
    pub level: String,
    /// `text` or `json`.
    pub format: String,
    /// How often a progress line is logged (done/total, rate, ETA).
    pub progress_interval_s: i64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/gitlabhq_production".into(),
            pool_size: 8,
            connect_timeout_ms: 5000,
        }
    }
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:5000".into(),
            key_path: None,
            issuer: "gitlab-issuer".into(),
            audience: "container_registry".into(),
            page_size: 1000,
            timeout_ms: 20_000,
            token_lifetime_s: 300,
            max_pages: 10_000,
            ca_file: None,
        }
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_concurrency: 2,
            rescan_interval_s: 60,
            sweep_interval_s: 3600,
            shutdown_timeout_s: 30,
            shard: "0/1".into(),
        }
    }
}

impl Default for WriterSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            flush_interval_ms: 1000,
        }
    }
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9393".into(),
            token: None,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
            progress_interval_s: 30,
        }
    }
}

impl Settings {
    /// Loads from the process environment and an optional file, then validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        Self::load_from(file, env)
    }

    /// Loads from an explicit set of environment variables, so tests need not touch the process's.
    pub fn load_from(
        file: Option<&Path>,
        env: HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let defaults = config::Config::try_from(&Settings::default())
            .map_err(|e| ConfigError::new("(defaults)", e.to_string()))?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::new(
                    "--config",
                    format!("no such file: {}", path.display()),
                ));
            }
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        let raw = builder
            .build()
            .map_err(|e| ConfigError::new(source_name(file), e.to_string()))?;
        let settings: Settings = raw
            .try_deserialize()
            .map_err(|e| ConfigError::new(source_name(file), e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value that can be checked without touching the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        parse_url(
            "database.url",
            &self.database.url,
            &["postgres", "postgresql"],
        )?;
        at_least("database.pool_size", self.database.pool_size, 1)?;
        at_least(
            "database.connect_timeout_ms",
            self.database.connect_timeout_ms,
            1,
        )?;
        parse_url("registry.url", &self.registry.url, &["http", "https"])?;
        if !(1..=1000).contains(&self.registry.page_size) {
            return Err(ConfigError::new(
                "registry.page_size",
                format!(
                    "must be between 1 and 1000 (got {})",
                    self.registry.page_size
                ),
            ));
        }
        at_least("registry.timeout_ms", self.registry.timeout_ms, 1)?;
        // The registry allows 60 s of clock skew; a token must outlive one request by a wide margin.
        at_least(
            "registry.token_lifetime_s",
            self.registry.token_lifetime_s,
            60,
        )?;
        at_least("registry.max_pages", self.registry.max_pages, 1)?;
        non_empty("registry.issuer", &self.registry.issuer)?;
        non_empty("registry.audience", &self.registry.audience)?;
        at_least("worker.max_concurrency", self.worker.max_concurrency, 0)?;
        at_least("worker.rescan_interval_s", self.worker.rescan_interval_s, 1)?;
        at_least("worker.sweep_interval_s", self.worker.sweep_interval_s, 1)?;
        at_least(
            "worker.shutdown_timeout_s",
            self.worker.shutdown_timeout_s,
            0,
        )?;
        self.shard()?;
        at_least("writer.batch_size", self.writer.batch_size, 1)?;
        at_least("writer.flush_interval_ms", self.writer.flush_interval_ms, 1)?;
        let listen = self.admin_listen()?;
        if let Some(token) = &self.admin.token {
            non_empty("admin.token", token)?;
        } else if !listen.ip().is_loopback() {
            return Err(ConfigError::new(
                "admin.token",
                format!("must be set when admin.listen ({listen}) is not a loopback address"),
            ));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::new(
                "log.format",
                format!("must be `text` or `json` (got `{}`)", self.log.format),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::new("log.level", e.to_string()))?;
        at_least("log.progress_interval_s", self.log.progress_interval_s, 1)?;
        if !matches!(self.control.source.as_str(), "config" | "gitlab") {
            return Err(ConfigError::new(
                "control.source",
                format!(
                    "must be `config` or `gitlab` (got `{}`)",
                    self.control.source
                ),
            ));
        }
        at_least(
            "control.poll_interval_ms",
            self.control.poll_interval_ms,
            100,
        )?;
        Ok(())
    }

    pub fn admin_listen(&self) -> Result<SocketAddr, ConfigError> {
        self.admin.listen.parse().map_err(|_| {
            ConfigError::new(
                "admin.listen",
                format!("`{}` is not an IP:port address", self.admin.listen),
            )
        })
    }

    /// The registry signing key path, which only the commands that talk to the registry need.
    pub fn key_path(&self) -> Result<&Path, ConfigError> {
        self.registry
            .key_path
            .as_deref()
            .ok_or_else(|| ConfigError::new("registry.key_path", "must be set to run the analysis (the PEM RSA private key GitLab signs registry tokens with)"))
    }

    /// The certificates of `registry.ca_file` (none when unset), each checked to be one rustls
    /// can trust, so that a bad file is a configuration error and not a failed connection later.
    pub fn registry_ca(&self) -> Result<Vec<reqwest::Certificate>, ConfigError> {
        let Some(path) = &self.registry.ca_file else {
            return Ok(Vec::new());
        };
        let bad = |message: String| ConfigError::new("registry.ca_file", message);
        let pem =
            std::fs::read(path).map_err(|e| bad(format!("reading {}: {e}", path.display())))?;
        let ders = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("{} is not valid PEM: {e}", path.display())))?;
        if ders.is_empty() {
            return Err(bad(format!(
                "{} holds no certificate (a PEM file with one or more `-----BEGIN CERTIFICATE-----` blocks)",
                path.display()
            )));
        }
        let mut certificates = Vec::with_capacity(ders.len());
        for (index, der) in ders.into_iter().enumerate() {
            rustls::RootCertStore::empty()
                .add(der.clone())
                .map_err(|e| {
                    bad(format!(
                        "certificate {} of {} is not a usable CA certificate ({e})",
                        index + 1,
                        path.display()
                    ))
                })?;
            certificates.push(reqwest::Certificate::from_der(&der).map_err(|e| {
                bad(format!(
                    "certificate {} of {}: {e}",
                    index + 1,
                    path.display()
                ))
            })?);
        }
        Ok(certificates)
    }

    /// `worker.shard` parsed: (i, N) with 0 <= i < N.
    pub fn shard(&self) -> Result<Shard, ConfigError> {
        let bad = || {
            ConfigError::new(
                "worker.shard",
                format!(
                    "`{}` is not `i/N` with 0 <= i < N (for example `0/1`, or `1/4`)",
                    self.worker.shard
                ),
            )
        };
        let (i, n) = self.worker.shard.split_once('/').ok_or_else(bad)?;
        let index: i64 = i.trim().parse().map_err(|_| bad())?;
        let count: i64 = n.trim().parse().map_err(|_| bad())?;
        if count < 1 || index < 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether GitLab's own switches steer the service (`control.source = "gitlab"`).
    pub fn follows_gitlab(&self) -> bool {
        self.control.source == "gitlab"
    }

    pub fn poll_interval(&self) -> Duration {
        millis(self.control.poll_interval_ms)
    }

    pub fn progress_interval(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.log.progress_interval_s).unwrap_or(30))
    }

    pub fn max_concurrency(&self) -> usize {
        usize::try_from(self.worker.max_concurrency).unwrap_or(0)
    }

    pub fn batch_size(&self) -> usize {
        usize::try_from(self.writer.batch_size).unwrap_or(1).max(1)
    }

    pub fn flush_interval(&self) -> Duration {
        millis(self.writer.flush_interval_ms)
    }

    pub fn rescan_interval(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.worker.rescan_interval_s).unwrap_or(1))
    }

    pub fn sweep_interval(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.worker.sweep_interval_s).unwrap_or(3600))
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.worker.shutdown_timeout_s).unwrap_or(0))
    }

    pub fn registry_timeout(&self) -> Duration {
        millis(self.registry.timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        millis(self.database.connect_timeout_ms)
    }
}

/// One instance's share of the projects: those whose id modulo `count` is `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: i64,
    pub count: i64,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

fn millis(value: i64) -> Duration {
    Duration::from_millis(u64::try_from(value).unwrap_or(1))
}

fn source_name(file: Option<&Path>) -> String {
    match file {
        Some(path) => format!("{} or {ENV_PREFIX}__* environment", path.display()),
        None => format!("{ENV_PREFIX}__* environment"),
    }
}

fn at_least(key: &str, value: i64, min: i64) -> Result<(), ConfigError> {
    if value < min {
        return Err(ConfigError::new(
            key,
            format!("must be at least {min} (got {value})"),
        ));
    }
    Ok(())
}

fn non_empty(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::new(key, "must not be empty"));
    }
    Ok(())
}

fn parse_url(key: &str, value: &str, schemes: &[&str]) -> Result<url::Url, ConfigError> {
    let parsed = url::Url::parse(value)
        .map_err(|e| ConfigError::new(key, format!("not a valid URL: {e}")))?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(ConfigError::new(
            key,
            format!(
                "scheme `{}` is not one of {}",
                parsed.scheme(),
                schemes.join(", ")
            ),
        ));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_spec() {
        let s = Settings::load_from(None, HashMap::new()).expect("defaults are valid");
        assert_eq!(
            s.database.url,
            "postgres://postgres@127.0.0.1:5432/gitlabhq_production"
        );
        assert_eq!(s.database.pool_size, 8);
        assert_eq!(s.registry.page_size, 1000);
        assert_eq!(s.registry.timeout_ms, 20_000);
        assert_eq!(s.worker.max_concurrency, 2);
        assert!(s.worker.enabled);
        assert_eq!(s.writer.batch_size, 500);
        assert_eq!(s.admin.listen, "127.0.0.1:9393");
    }

    #[test]
    fn environment_overrides_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("rr-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[worker]\nmax_concurrency = 7\nrescan_interval_s = 5\n[writer]\nbatch_size = 9\n",
        )
        .expect("write config");
        let s = Settings::load_from(
            Some(&file),
            env(&[("REGISTRY_REPAIR__WORKER__MAX_CONCURRENCY", "3")]),
        )
        .expect("valid");
        assert_eq!(s.worker.max_concurrency, 3);
        assert_eq!(s.worker.rescan_interval_s, 5);
        assert_eq!(s.writer.batch_size, 9);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                "REGISTRY_REPAIR__WORKER__MAX_CONCURRENCY",
                "-1",
                "worker.max_concurrency",
            ),
            (
                "REGISTRY_REPAIR__REGISTRY__PAGE_SIZE",
                "1001",
                "registry.page_size",
            ),
            (
                "REGISTRY_REPAIR__REGISTRY__PAGE_SIZE",
                "0",
                "registry.page_size",
            ),
            (
                "REGISTRY_REPAIR__REGISTRY__URL",
                "not a url",
                "registry.url",
            ),
            (
                "REGISTRY_REPAIR__DATABASE__URL",
                "http://x/y",
                "database.url",
            ),
            (
                "REGISTRY_REPAIR__ADMIN__LISTEN",
                "0.0.0.0:9393",
                "admin.token",
            ),
            ("REGISTRY_REPAIR__ADMIN__LISTEN", "nowhere", "admin.listen"),
            (
                "REGISTRY_REPAIR__WRITER__BATCH_SIZE",
                "0",
                "writer.batch_size",
            ),
            ("REGISTRY_REPAIR__LOG__FORMAT", "xml", "log.format"),
            ("REGISTRY_REPAIR__WORKER__SHARD", "2/2", "worker.shard"),
            ("REGISTRY_REPAIR__WORKER__SHARD", "1", "worker.shard"),
            ("REGISTRY_REPAIR__WORKER__SHARD", "-1/3", "worker.shard"),
            (
                "REGISTRY_REPAIR__CONTROL__SOURCE",
                "flipper",
                "control.source",
            ),
            (
                "REGISTRY_REPAIR__CONTROL__POLL_INTERVAL_MS",
                "0",
                "control.poll_interval_ms",
            ),
            (
                "REGISTRY_REPAIR__LOG__PROGRESS_INTERVAL_S",
                "0",
                "log.progress_interval_s",
            ),
        ];
        for (var, value, key) in cases {
            let err = Settings::load_from(None, env(&[(var, value)]))
                .expect_err(&format!("{var}={value} must be refused"));
            assert_eq!(err.key, key, "{var}={value}: {err}");
        }
    }

    #[test]
    fn wrong_types_and_unknown_keys_are_refused_with_the_key_in_the_message() {
        let err = Settings::load_from(
            None,
            env(&[("REGISTRY_REPAIR__WORKER__MAX_CONCURRENCY", "lots")]),
        )
        .expect_err("not a number");
        assert!(err.to_string().contains("max_concurrency"), "{err}");
        let err = Settings::load_from(None, env(&[("REGISTRY_REPAIR__WORKER__SPEED", "3")]))
            .expect_err("unknown key");
        assert!(err.to_string().contains("speed"), "{err}");
    }

    #[test]
    fn missing_config_file_is_named() {
        let err = Settings::load_from(Some(Path::new("/nonexistent/rr.toml")), HashMap::new())
            .expect_err("missing file");
        assert_eq!(err.key, "--config");
    }
}
