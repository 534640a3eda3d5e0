//! Values that must never be shown whole: the admin token and the database URL (which may carry
//! a password). Their `Debug` and `Display` hide the secret, so a `{:?}` of the settings, a log
//! line or an error message cannot leak it; whoever needs the value calls `.expose()`, which a
//! reviewer can find.

use std::fmt;
use std::str::FromStr;

use super::{parse_url, ConfigError};

/// What a [`Secret`] shows instead of itself.
pub const REDACTED: &str = "[redacted]";

/// A string that is shown as `[redacted]`. No `PartialEq`: compare `.expose()` deliberately (the
/// admin API compares tokens without early exit).
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// `database.url`: a `postgres://` or `postgresql://` URL, whose password (in the userinfo or a
/// `password=` query parameter) `Debug` and `Display` mask (see `crate::redact::url`).
#[derive(Clone)]
pub struct DatabaseUrl(Secret);

impl DatabaseUrl {
    /// The whole URL, password included, to connect with.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl FromStr for DatabaseUrl {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_url("database.url", s, &["postgres", "postgresql"])?;
        Ok(Self(Secret::new(s)))
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match crate::redact::url(self.expose()) {
            Some(shown) => f.write_str(&shown),
            None => f.write_str(REDACTED),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// `registry.url`: an `http` or `https` URL, which may carry credentials (never used: the registry
/// takes signed tokens); `Debug` and `Display` show them as `***@` (see
/// `crate::redact::registry_url`).
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryUrl(url::Url);

impl RegistryUrl {
    /// The whole URL, credentials included.
    pub fn expose(&self) -> &url::Url {
        &self.0
    }
}

impl FromStr for RegistryUrl {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_url("registry.url", s, &["http", "https"]).map(Self)
    }
}

impl fmt::Display for RegistryUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::redact::registry_url(self.0.as_str()))
    }
}

impl fmt::Debug for RegistryUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegistryUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_show_as_redacted_and_expose_explicitly() {
        let token = Secret::from("hunter2");
        assert_eq!(format!("{token} {token:?}"), "[redacted] [redacted]");
        assert_eq!(token.expose(), "hunter2");
        assert_eq!(format!("{:?}", Some(token)), "Some([redacted])");
    }

    #[test]
    fn a_registry_url_hides_its_credentials() {
        let url: RegistryUrl = "https://user:pw-secret@registry.example:5000/"
            .parse()
            .expect("valid");
        let shown = format!("{url} {url:?}");
        assert!(
            !shown.contains("pw-secret") && !shown.contains("user"),
            "{shown}"
        );
        assert!(shown.contains("registry.example:5000"), "{shown}");
        assert_eq!(url.expose().password(), Some("pw-secret"));
        let err = "ftp://registry"
            .parse::<RegistryUrl>()
            .expect_err("not http");
        assert_eq!(err.key, "registry.url");
    }

    #[test]
    fn a_database_url_hides_its_password_and_keeps_the_rest() {
        let url: DatabaseUrl = "postgres://rr:pw-secret@db:5432/x?sslmode=require&password=pw2"
            .parse()
            .expect("valid");
        let shown = format!("{url} {url:?}");
        assert!(
            !shown.contains("pw-secret") && !shown.contains("pw2"),
            "{shown}"
        );
        assert!(
            shown.contains("rr:***@db:5432/x?sslmode=require"),
            "{shown}"
        );
        assert!(url.expose().contains("pw-secret"));
        let err = "http://db/x"
            .parse::<DatabaseUrl>()
            .expect_err("not postgres");
        assert_eq!(err.key, "database.url");
    }
}
