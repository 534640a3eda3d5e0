//! The configuration as an operator writes it: the documented keys (`writer.flush_interval_ms`,
//! `admin.listen`, ...) with their defaults, deserialized from TOML and the environment before
//! anything is checked. [`super::Settings`] is made from this, key by key, so that a value that
//! cannot be used is refused naming its key.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSettings {
    pub database: Database,
    pub registry: Registry,
    pub worker: Worker,
    pub writer: Writer,
    pub admin: Admin,
    pub log: Log,
    pub control: Control,
    pub fleet: Fleet,
    pub analysis: Analysis,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Database {
    pub url: String,
    pub pool_size: i64,
    pub connect_timeout_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Registry {
    pub url: String,
    pub key_path: Option<PathBuf>,
    pub issuer: String,
    pub audience: String,
    pub page_size: i64,
    pub timeout_ms: i64,
    pub token_lifetime_s: i64,
    pub max_pages: i64,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Worker {
    pub enabled: bool,
    pub max_concurrency: i64,
    pub rescan_interval_s: i64,
    pub sweep_interval_s: i64,
    pub shutdown_timeout_s: i64,
    pub shard: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Writer {
    pub batch_size: i64,
    pub flush_interval_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Admin {
    pub listen: String,
    pub token: Option<String>,
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Log {
    pub level: String,
    pub format: String,
    pub progress_interval_s: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Fleet {
    pub heartbeat_interval_ms: i64,
    pub member_timeout_ms: i64,
}

impl Default for Fleet {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 1000,
            member_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Analysis {
    pub sizes: bool,
}

impl Default for Analysis {
    fn default() -> Self {
        Self { sizes: true }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Control {
    pub source: String,
    pub poll_interval_ms: i64,
}

impl Default for Database {
    fn default() -> Self {
        Self {
            url: super::DEFAULT_DATABASE_URL.into(),
            pool_size: 8,
            connect_timeout_ms: 5000,
        }
    }
}

impl Default for Registry {
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

impl Default for Worker {
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

impl Default for Writer {
    fn default() -> Self {
        Self {
            batch_size: 500,
            flush_interval_ms: 1000,
        }
    }
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9393".into(),
            token: None,
            allowed_hosts: Vec::new(),
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
            progress_interval_s: 30,
        }
    }
}

impl Default for Control {
    fn default() -> Self {
        Self {
            source: "config".into(),
            poll_interval_ms: 5000,
        }
    }
}
