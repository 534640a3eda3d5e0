//! Layered configuration: built-in defaults, then an optional TOML file, then
//! `REGISTRY_REPAIR__SECTION__KEY` environment variables, later winning. The keys are read as
//! documented (`raw`), then each is checked and typed once, here, so that the rest of the service
//! holds durations, counts, addresses and secrets that cannot be wrong.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// `database.url` when nothing sets it.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/gitlabhq_production";

mod raw;
mod secret;
mod shard;
pub mod suggest;

use raw::RawSettings;
pub use secret::{DatabaseUrl, RegistryUrl, Secret};
pub use shard::{InvalidShard, Shard};

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

/// The configuration, checked and typed: durations are [`Duration`]s, counts are unsigned, the
/// admin address a [`SocketAddr`], the shard a [`Shard`], secrets a [`Secret`]. Made only from
/// values that passed their checks (see [`Settings::load`]); `Default` is the documented defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub registry: RegistrySettings,
    pub worker: WorkerSettings,
    pub writer: WriterSettings,
    pub admin: AdminSettings,
    pub log: LogSettings,
    pub control: ControlSettings,
    pub fleet: FleetSettings,
    pub analysis: AnalysisSettings,
}

/// What the analysis asks besides the listing.
#[derive(Debug, Clone)]
pub struct AnalysisSettings {
    /// `analysis.sizes`: ask the registry the size of every missing repository (`size=self`).
    pub sizes: bool,
}

/// How the instances of `run` against one database find each other (see `src/fleet`).
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// `fleet.heartbeat_interval_ms`: how often a member records that it lives and reads the
    /// others.
    pub heartbeat_interval: Duration,
    /// `fleet.member_timeout_ms`: a member silent this long is taken for dead and its work and
    /// share taken over; at least three heartbeats.
    pub member_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `database.url`
    pub url: DatabaseUrl,
    /// `database.pool_size`, at least 1.
    pub pool_size: usize,
    /// `database.connect_timeout_ms`: how long to wait for a connection (start-up and every query).
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// `registry.url`, an `http` or `https` URL (shown with any credentials masked).
    pub url: RegistryUrl,
    pub key_path: Option<PathBuf>,
    pub issuer: String,
    pub audience: String,
    /// `registry.page_size`: `n`, 1..=1000.
    pub page_size: u32,
    /// `registry.timeout_ms`: per request.
    pub timeout: Duration,
    /// `registry.token_lifetime_s`, at least 60 s: a token is replaced well before it could expire
    /// mid-request.
    pub token_lifetime: Duration,
    /// `registry.max_pages`: a project with more pages is recorded `failed`, not walked forever.
    pub max_pages: u32,
    /// PEM file of one or more CA certificates trusted for `registry.url`, besides the system's.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub enabled: bool,
    pub max_concurrency: usize,
    /// `worker.rescan_interval_s`
    pub rescan_interval: Duration,
    /// `worker.sweep_interval_s`: how often the projects below the watermark are swept from id 0
    /// for ones without an answer (tracking rows deleted by hand, projects restored with their id).
    pub sweep_interval: Duration,
    /// `worker.shutdown_timeout_s`: on SIGTERM, how long in-flight projects may take before the
    /// service flushes and exits anyway.
    pub shutdown_timeout: Duration,
    /// `i/N`: this instance analyses the projects whose id modulo N is i.
    pub shard: Shard,
}

#[derive(Debug, Clone)]
pub struct WriterSettings {
    pub batch_size: usize,
    /// `writer.flush_interval_ms`
    pub flush_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// Required (and non-empty) when `listen` is not a loopback address.
    pub token: Option<Secret>,
    /// `admin.allowed_hosts`: the names, besides IP addresses and `localhost`, that the admin API
    /// may be reached by (a reverse proxy's), lowercased and without a trailing dot.
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    /// A `tracing` filter directive (`info`, `registry_repair=debug`, ...), checked at load.
    pub level: String,
    pub format: LogFormat,
    /// `log.progress_interval_s`: how often a progress line is logged (done/total, rate, ETA).
    pub progress_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct ControlSettings {
    pub source: ControlSource,
    /// `control.poll_interval_ms`: with `source = gitlab`, how often GitLab's switches are read.
    pub poll_interval: Duration,
}

/// `log.format`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("must be `text` or `json` (got `{s}`)")),
        }
    }
}

/// `control.source`: who steers `max_concurrency` and the feature flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlSource {
    /// `worker.max_concurrency`, `worker.enabled` and the admin API.
    Config,
    /// GitLab's application setting and feature flag, read every `control.poll_interval_ms`.
    Gitlab,
}

impl FromStr for ControlSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "config" => Ok(Self::Config),
            "gitlab" => Ok(Self::Gitlab),
            _ => Err(format!("must be `config` or `gitlab` (got `{s}`)")),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        // The defaults are constants, checked by the `defaults_match_the_spec` test.
        Settings::from_raw(RawSettings::default()).expect("the built-in defaults are valid")
    }
}

impl Settings {
    /// Loads from the process environment and an optional file, then checks every value.
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
        let defaults = config::Config::try_from(&RawSettings::default())
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
                // The one list: comma-separated in the environment.
                .list_separator(",")
                .with_list_parse_key("admin.allowed_hosts")
                .source(Some(env)),
        );
        let raw = builder
            .build()
            .map_err(|e| ConfigError::new(source_name(file), e.to_string()))?;
        let raw: RawSettings = raw
            .try_deserialize()
            .map_err(|e| ConfigError::new(source_name(file), e.to_string()))?;
        Self::from_raw(raw)
    }

    /// Checks and types every value that can be checked without touching the network or a file,
    /// each refusal naming its key.
    fn from_raw(raw: RawSettings) -> Result<Self, ConfigError> {
        // Each key is checked where its field is made, in the order written: the first bad one is
        // the one reported.
        Ok(Settings {
            database: DatabaseSettings {
                url: raw.database.url.parse()?,
                pool_size: number("database.pool_size", raw.database.pool_size, 1)?,
                connect_timeout: millis(
                    "database.connect_timeout_ms",
                    raw.database.connect_timeout_ms,
                    1,
                )?,
            },
            registry: RegistrySettings {
                url: raw.registry.url.parse()?,
                key_path: raw.registry.key_path,
                page_size: within("registry.page_size", raw.registry.page_size, 1..=1000)?,
                timeout: millis("registry.timeout_ms", raw.registry.timeout_ms, 1)?,
                // The registry allows 60 s of clock skew; a token must outlive one request by a
                // wide margin.
                token_lifetime: secs(
                    "registry.token_lifetime_s",
                    raw.registry.token_lifetime_s,
                    60,
                )?,
                max_pages: number("registry.max_pages", raw.registry.max_pages, 1)?,
                issuer: non_empty("registry.issuer", raw.registry.issuer)?,
                audience: non_empty("registry.audience", raw.registry.audience)?,
                ca_file: raw.registry.ca_file,
            },
            worker: WorkerSettings {
                enabled: raw.worker.enabled,
                max_concurrency: number("worker.max_concurrency", raw.worker.max_concurrency, 0)?,
                rescan_interval: secs("worker.rescan_interval_s", raw.worker.rescan_interval_s, 1)?,
                sweep_interval: secs("worker.sweep_interval_s", raw.worker.sweep_interval_s, 1)?,
                shutdown_timeout: secs(
                    "worker.shutdown_timeout_s",
                    raw.worker.shutdown_timeout_s,
                    0,
                )?,
                shard: raw
                    .worker
                    .shard
                    .parse()
                    .map_err(|e: InvalidShard| ConfigError::new("worker.shard", e.to_string()))?,
            },
            writer: WriterSettings {
                batch_size: number("writer.batch_size", raw.writer.batch_size, 1)?,
                flush_interval: millis(
                    "writer.flush_interval_ms",
                    raw.writer.flush_interval_ms,
                    1,
                )?,
            },
            admin: admin(raw.admin)?,
            log: LogSettings {
                format: raw
                    .log
                    .format
                    .parse()
                    .map_err(|e: String| ConfigError::new("log.format", e))?,
                level: log_filter("log.level", raw.log.level)?,
                progress_interval: secs("log.progress_interval_s", raw.log.progress_interval_s, 1)?,
            },
            control: ControlSettings {
                source: raw
                    .control
                    .source
                    .parse()
                    .map_err(|e: String| ConfigError::new("control.source", e))?,
                poll_interval: millis(
                    "control.poll_interval_ms",
                    raw.control.poll_interval_ms,
                    100,
                )?,
            },
            fleet: fleet(&raw.fleet)?,
            analysis: AnalysisSettings {
                sizes: raw.analysis.sizes,
            },
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

    /// Whether GitLab's own switches steer the service (`control.source = "gitlab"`).
    pub fn follows_gitlab(&self) -> bool {
        self.control.source == ControlSource::Gitlab
    }
}

/// `admin.listen`, and `admin.token`, which a listener that is not on loopback requires.
fn admin(raw: raw::Admin) -> Result<AdminSettings, ConfigError> {
    let listen = listen_address(&raw.listen)?;
    let token = match raw.token {
        Some(token) => Some(Secret::from(non_empty("admin.token", token)?)),
        None if !listen.ip().is_loopback() => {
            return Err(ConfigError::new(
                "admin.token",
                format!("must be set when admin.listen ({listen}) is not a loopback address"),
            ))
        }
        None => None,
    };
    Ok(AdminSettings {
        listen,
        token,
        allowed_hosts: raw
            .allowed_hosts
            .iter()
            .map(|entry| allowed_host(entry))
            .collect::<Result<_, _>>()?,
    })
}

/// One entry of `admin.allowed_hosts`: a host name as a browser sends it in `Host` (ASCII,
/// `admin.listen`: an `IP:port`, or a `name:port` whose name resolves to a loopback address
/// (`localhost:9393`), resolved once, at start (IPv4 first). A name that resolves elsewhere is
/// refused: the listener and the control commands must agree on one address, and a name that
/// may move is no address to guard with a loopback rule.
fn listen_address(value: &str) -> Result<SocketAddr, ConfigError> {
    const KEY: &str = "admin.listen";
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = |why: String| ConfigError::new(KEY, format!("`{value}` {why}"));
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(bad(
            "is not an address: write IP:port (127.0.0.1:9393) or localhost:PORT".into(),
        ));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| bad(format!("has no port number (`{port}`)")))?;
    let resolved: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|e| bad(format!("does not resolve: {e}")))?
        .collect();
    if resolved.is_empty() || !resolved.iter().all(|addr| addr.ip().is_loopback()) {
        let shown: Vec<String> = resolved.iter().map(|a| a.ip().to_string()).collect();
        return Err(bad(format!(
            "resolves to {}: a name is taken only when it resolves to loopback; write the IP:port \
             to listen on",
            if shown.is_empty() {
                "nothing".to_string()
            } else {
                shown.join(", ")
            }
        )));
    }
    Ok(resolved
        .iter()
        .find(|addr| addr.is_ipv4())
        .copied()
        .unwrap_or(resolved[0]))
}

/// punycode for an international name), without scheme, port or path, since it is compared with
/// the host part of `Host` and `Origin` alone. Returned lowercased, without a trailing dot.
fn allowed_host(entry: &str) -> Result<String, ConfigError> {
    const KEY: &str = "admin.allowed_hosts";
    let name = entry.trim();
    if name.is_empty() {
        return Err(ConfigError::new(
            KEY,
            "holds an empty name (an empty value, or a stray comma)",
        ));
    }
    let bad = |why: &str| {
        ConfigError::new(
            KEY,
            format!(
                "`{entry}` is not a host name: {why} (write the bare name the admin API is \
                 reached by, such as `registry-repair.example.com`)"
            ),
        )
    };
    if name.contains("://") {
        return Err(bad("no scheme"));
    }
    if name.chars().any(char::is_whitespace) {
        return Err(bad("no spaces"));
    }
    if name.contains('/') {
        return Err(bad("no path"));
    }
    if name.contains(':') {
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<std::net::Ipv6Addr>().is_ok() {
            return Err(bad(
                "an IP address needs no entry, the admin API accepts any",
            ));
        }
        return Err(bad("no port, the port is not compared"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(bad(
            "only ASCII letters, digits, `-`, `_` and `.` (punycode for an international name)",
        ));
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.split('.').any(str::is_empty) {
        return Err(bad("an empty label"));
    }
    Ok(name.to_ascii_lowercase())
}

fn source_name(file: Option<&Path>) -> String {
    match file {
        Some(path) => format!("{} or {ENV_PREFIX}__* environment", path.display()),
        None => format!("{ENV_PREFIX}__* environment"),
    }
}

/// `value` as a count of at least `min` (0 or 1) in the type the service uses.
fn number<T: TryFrom<i64>>(key: &str, value: i64, min: i64) -> Result<T, ConfigError> {
    if value < min {
        return Err(ConfigError::new(
            key,
            format!("must be at least {min} (got {value})"),
        ));
    }
    T::try_from(value).map_err(|_| ConfigError::new(key, format!("{value} is too large")))
}

fn within<T: TryFrom<i64>>(
    key: &str,
    value: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<T, ConfigError> {
    if !range.contains(&value) {
        return Err(ConfigError::new(
            key,
            format!(
                "must be between {} and {} (got {value})",
                range.start(),
                range.end()
            ),
        ));
    }
    number(key, value, *range.start())
}

/// A `_ms` key as a [`Duration`] of at least `min` milliseconds.
fn fleet(raw: &raw::Fleet) -> Result<FleetSettings, ConfigError> {
    let heartbeat_interval = millis(
        "fleet.heartbeat_interval_ms",
        raw.heartbeat_interval_ms,
        100,
    )?;
    let member_timeout = millis(
        "fleet.member_timeout_ms",
        raw.member_timeout_ms,
        raw.heartbeat_interval_ms.saturating_mul(3),
    )?;
    Ok(FleetSettings {
        heartbeat_interval,
        member_timeout,
    })
}

fn millis(key: &str, value: i64, min: i64) -> Result<Duration, ConfigError> {
    number(key, value, min).map(Duration::from_millis)
}

/// A `_s` key as a [`Duration`] of at least `min` seconds.
fn secs(key: &str, value: i64, min: i64) -> Result<Duration, ConfigError> {
    number(key, value, min).map(Duration::from_secs)
}

/// A `tracing` filter (`log.level`, `RUST_LOG`), checked beyond its syntax: every directive is a
/// level or `target=level`. A bare word is a target to `tracing` (`inof` would show that target
/// alone and silence everything else, fatal errors' log lines included), so one that is not a
/// level is refused, with the level it most likely meant.
pub fn log_filter(key: &str, value: String) -> Result<String, ConfigError> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    for directive in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            let meant = suggest::did_you_mean(level, &LEVELS)
                .map(|l| format!(" Did you mean `{l}`?"))
                .unwrap_or_default();
            return Err(ConfigError::new(
                key,
                format!(
                    "{}`{level}` is not a level (trace, debug, info, warn, error, off).{meant} \
                     Each comma-separated part is a level or target=level \
                     (info,registry_repair=debug)",
                    match directive == level {
                        true => String::new(),
                        false => format!("`{directive}`: "),
                    }
                ),
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(&value)
        .map_err(|e| ConfigError::new(key, e.to_string()))?;
    Ok(value)
}

fn non_empty(key: &str, value: String) -> Result<String, ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::new(key, "must not be empty"));
    }
    Ok(value)
}

fn parse_url(key: &str, value: &str, schemes: &[&str]) -> Result<url::Url, ConfigError> {
    if !value.contains("://") {
        // `registry.internal:5000` parses as a URL whose scheme is `registry.internal`.
        return Err(ConfigError::new(
            key,
            format!(
                "`{value}` has no scheme: write it as {}://{value}{}",
                schemes.last().copied().unwrap_or("https"),
                match schemes {
                    ["http", "https"] => " (or http:// for a registry without TLS)",
                    _ => "",
                }
            ),
        ));
    }
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
            s.database.url.expose(),
            "postgres://postgres@127.0.0.1:5432/gitlabhq_production"
        );
        assert_eq!(s.database.pool_size, 8);
        assert_eq!(s.database.connect_timeout, Duration::from_secs(5));
        assert_eq!(s.registry.page_size, 1000);
        assert_eq!(s.registry.timeout, Duration::from_secs(20));
        assert_eq!(s.registry.token_lifetime, Duration::from_secs(300));
        assert_eq!(s.worker.max_concurrency, 2);
        assert!(s.worker.enabled);
        assert_eq!(s.worker.rescan_interval, Duration::from_secs(60));
        assert_eq!(s.worker.sweep_interval, Duration::from_secs(3600));
        assert_eq!(s.worker.shard, Shard::ALL);
        assert_eq!(s.writer.batch_size, 500);
        assert_eq!(s.writer.flush_interval, Duration::from_secs(1));
        assert_eq!(s.admin.listen, SocketAddr::from(([127, 0, 0, 1], 9393)));
        assert!(s.admin.token.is_none());
        assert!(s.admin.allowed_hosts.is_empty());
        assert_eq!(s.log.format, LogFormat::Text);
        assert_eq!(s.control.source, ControlSource::Config);
        assert_eq!(s.control.poll_interval, Duration::from_secs(5));
        // `Settings::default()` is the same, without reading anything.
        let d = Settings::default();
        assert_eq!(d.database.url.expose(), s.database.url.expose());
        assert_eq!(d.worker.shard, s.worker.shard);
        assert_eq!(d.log.progress_interval, Duration::from_secs(30));
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
        assert_eq!(s.worker.rescan_interval, Duration::from_secs(5));
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
                "REGISTRY_REPAIR__FLEET__HEARTBEAT_INTERVAL_MS",
                "50",
                "fleet.heartbeat_interval_ms",
            ),
            (
                "REGISTRY_REPAIR__FLEET__MEMBER_TIMEOUT_MS",
                "2999",
                "fleet.member_timeout_ms",
            ),
            (
                "REGISTRY_REPAIR__LOG__PROGRESS_INTERVAL_S",
                "0",
                "log.progress_interval_s",
            ),
            (
                "REGISTRY_REPAIR__REGISTRY__MAX_PAGES",
                "99999999999",
                "registry.max_pages",
            ),
            (
                "REGISTRY_REPAIR__REGISTRY__TOKEN_LIFETIME_S",
                "59",
                "registry.token_lifetime_s",
            ),
            (
                "REGISTRY_REPAIR__WORKER__SHUTDOWN_TIMEOUT_S",
                "-1",
                "worker.shutdown_timeout_s",
            ),
            ("REGISTRY_REPAIR__ADMIN__TOKEN", " ", "admin.token"),
            (
                "REGISTRY_REPAIR__ADMIN__ALLOWED_HOSTS",
                "https://proxy.example",
                "admin.allowed_hosts",
            ),
            ("REGISTRY_REPAIR__LOG__LEVEL", "a=b=c", "log.level"),
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
    fn the_admin_token_and_the_database_password_never_show() {
        let s = Settings::load_from(
            None,
            env(&[
                ("REGISTRY_REPAIR__ADMIN__TOKEN", "tok-secret"),
                (
                    "REGISTRY_REPAIR__DATABASE__URL",
                    "postgres://rr:pw-secret@db/x?password=pw-secret",
                ),
            ]),
        )
        .expect("valid");
        let shown = format!("{s:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert_eq!(
            s.admin.token.as_ref().map(Secret::expose),
            Some("tok-secret")
        );
    }

    #[test]
    fn allowed_hosts_come_comma_separated_from_the_environment_and_as_a_list_from_a_file() {
        let hosts = |vars: &[(&str, &str)]| {
            Settings::load_from(None, env(vars))
                .expect("valid")
                .admin
                .allowed_hosts
        };
        let var = "REGISTRY_REPAIR__ADMIN__ALLOWED_HOSTS";
        assert_eq!(
            hosts(&[(var, "rr.example.com,Proxy.Internal., ops_1")]),
            ["rr.example.com", "proxy.internal", "ops_1"]
        );
        assert_eq!(hosts(&[(var, "rr.example.com")]), ["rr.example.com"]);
        // The list is the only key split on commas.
        assert_eq!(
            hosts(&[
                (var, "a.example"),
                ("REGISTRY_REPAIR__LOG__LEVEL", "info,actix=warn")
            ]),
            ["a.example"]
        );

        let dir = std::env::temp_dir().join(format!("rr-config-hosts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("c.toml");
        std::fs::write(&file, "[admin]\nallowed_hosts = [\"RR.example.com\"]\n").expect("write");
        let s = Settings::load_from(Some(&file), HashMap::new()).expect("valid");
        assert_eq!(s.admin.allowed_hosts, ["rr.example.com"]);
        let s = Settings::load_from(Some(&file), env(&[(var, "other.example")])).expect("valid");
        assert_eq!(
            s.admin.allowed_hosts,
            ["other.example"],
            "the environment wins"
        );
    }

    #[test]
    fn a_bad_allowed_host_is_refused_naming_the_key_and_the_entry() {
        let var = "REGISTRY_REPAIR__ADMIN__ALLOWED_HOSTS";
        for (value, why) in [
            ("", "empty name"),
            ("a.example,", "empty name"),
            ("a.example,,b.example", "empty name"),
            ("http://a.example", "no scheme"),
            ("a.example:8443", "no port"),
            ("[::1]", "IP address needs no entry"),
            ("a.example/admin", "no path"),
            ("a example", "no spaces"),
            ("*.example.com", "only ASCII"),
            ("user@a.example", "only ASCII"),
            ("bücher.example", "punycode"),
            ("a..example", "empty label"),
            (".", "empty label"),
        ] {
            let err = Settings::load_from(None, env(&[(var, value)]))
                .expect_err(&format!("{value:?} must be refused"));
            assert_eq!(err.key, "admin.allowed_hosts", "{value:?}: {err}");
            assert!(err.message.contains(why), "{value:?}: {err}");
        }
    }

    #[test]
    fn missing_config_file_is_named() {
        let err = Settings::load_from(Some(Path::new("/nonexistent/rr.toml")), HashMap::new())
            .expect_err("missing file");
        assert_eq!(err.key, "--config");
    }

    #[test]
    fn admin_listen_takes_a_name_that_resolves_to_loopback() {
        assert_eq!(
            listen_address("localhost:9413").expect("localhost resolves"),
            SocketAddr::from(([127, 0, 0, 1], 9413))
        );
        assert_eq!(
            listen_address("[::1]:9413").expect("an address"),
            "[::1]:9413".parse::<SocketAddr>().expect("an address")
        );
        for (value, needle) in [
            ("localhost", "is not an address"),
            ("localhost:port", "has no port number"),
            ("no-such-host.invalid:9413", "does not resolve"),
        ] {
            let err = listen_address(value).expect_err(value);
            assert_eq!(err.key, "admin.listen");
            assert!(err.to_string().contains(needle), "{value}: {err}");
        }
    }

    #[test]
    fn a_log_filter_is_levels_or_targets_with_levels() {
        for good in [
            "info",
            "WARN",
            "info,registry_repair=debug",
            "off",
            "actix_web=warn,info",
        ] {
            assert!(log_filter("log.level", good.into()).is_ok(), "{good}");
        }
        for (bad, meant) in [("inof", "info"), ("debgu", "debug"), ("x=warning", "warn")] {
            let err = log_filter("log.level", bad.into()).expect_err(bad);
            assert!(
                err.to_string()
                    .contains(&format!("Did you mean `{meant}`?")),
                "{bad}: {err}"
            );
        }
        assert!(log_filter("log.level", "registry_repair".into()).is_err());
    }
}
