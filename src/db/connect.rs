//! Opening connections to PostgreSQL: `database.url` read as libpq reads it (`sslmode`,
//! `sslrootcert`), TLS with rustls, and the pooler-safe statement mode for PgBouncer in
//! transaction pooling.
//!
//! tokio-postgres parses the URL but knows only `sslmode=disable|prefer|require` and no root
//! certificate, so the SSL parameters are taken out here and the rest is handed to it.

use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::task::Poll;

use diesel::connection::CacheSize;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres::{Client, Connection, Socket};

use super::tls::{self, CertificateCheck, RootSource, Roots, TlsStream};
use crate::config::ConfigError;

const KEY: &str = "database.url";

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, ConfigError> {
        Ok(match value {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(ConfigError::new(
                    KEY,
                    format!(
                        "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                    ),
                ))
            }
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    fn verifies(self) -> bool {
        matches!(self, Self::VerifyCa | Self::VerifyFull)
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How statements reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statements {
    /// Prepared once per connection and cached: the fastest, for a direct connection (or a
    /// pooler in session mode).
    Prepared,
    /// Each statement in a transaction of its own, no statement outliving it: what a pooler in
    /// transaction mode (PgBouncer `pool_mode = transaction`) needs, since it may hand the next
    /// transaction to another server connection. Every transaction starts with
    /// [`BEGIN_CLEAN`].
    PerTransaction,
}

impl Statements {
    fn url_value(self) -> &'static str {
        match self {
            Self::Prepared => "prepared_statements=true",
            Self::PerTransaction => "prepared_statements=false",
        }
    }
}

/// The statement mode settled on, and why: what `run` logs at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementMode {
    pub statements: Statements,
    /// `prepared_statements=... in database.url`, or what the probe found.
    pub why: String,
}

impl std::fmt::Display for StatementMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "statement mode {}: {}",
            self.statements.url_value(),
            self.why
        )
    }
}

/// How [`Statements::PerTransaction`] opens every transaction. A pooler's server connection may
/// hold statements another client prepared and never closed, named as tokio-postgres names ours
/// (`s0`, `s1`, ...: a counter that starts again in every process), so the next one we prepare
/// could clash; none of ours outlives its transaction, so dropping them all first loses nothing.
/// One simple query: one round trip, nothing prepared.
pub const BEGIN_CLEAN: &str = "BEGIN; DEALLOCATE ALL";

/// `database.url`, read once: what tokio-postgres is given, and what this module does itself.
#[derive(Clone)]
pub struct Target {
    config: tokio_postgres::Config,
    ssl_mode: SslMode,
    /// The root certificates libpq would look for: `sslrootcert`, or `~/.postgresql/root.crt`.
    root: Option<RootSource>,
    /// Whether `sslrootcert` was given (for messages).
    root_given: bool,
    /// `prepared_statements` as the URL sets it; without it, [`Target::statements`] probes.
    prepared_statements: Option<Statements>,
    /// The mode in force, decided once and shared by clones (every connection of a pool).
    statements: Arc<tokio::sync::OnceCell<StatementMode>>,
    redacted: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.redacted)
            .field("ssl_mode", &self.ssl_mode)
            .field("root", &self.root)
            .field("prepared_statements", &self.prepared_statements)
            .finish()
    }
}

fn decode(raw: &str) -> String {
    // libpq decodes %XX only (a `+` stays a `+`).
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

/// The parameters this module reads itself.
const OWN: [&str; 4] = ["sslmode", "sslrootcert", "prepared_statements", "ssl"];

/// The parameters passed on to tokio-postgres, which implements them as libpq does.
const PASSED_ON: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
    "sslnegotiation",
];

/// libpq's SSL parameters this service does not implement (client certificates and the like).
const LIBPQ_SSL_UNSUPPORTED: [&str; 12] = [
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "sslcompression",
    "sslcertmode",
    "sslkeylogfile",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "requiressl",
];

/// The query parameters of `database.url` this module reads itself; the rest is tokio-postgres's.
#[derive(Default)]
struct OwnParams {
    ssl_mode: Option<SslMode>,
    root_cert: Option<String>,
    statements: Option<Statements>,
    /// The parameters passed on to tokio-postgres, as written.
    kept: Vec<String>,
}

impl OwnParams {
    /// Reads `query` (percent-encoded, as in the URL), refusing what libpq has and this does not.
    fn read(query: &str) -> Result<Self, ConfigError> {
        let mut params = Self::default();
        for segment in query.split('&').filter(|s| !s.is_empty()) {
            let (raw_key, raw_value) = segment.split_once('=').unwrap_or((segment, ""));
            let (key, value) = (decode(raw_key), decode(raw_value));
            match key.as_str() {
                "sslmode" => params.ssl_mode = Some(SslMode::parse(&value)?),
                // libpq's JDBC-compatible spelling.
                "ssl" if value == "true" => params.ssl_mode = Some(SslMode::Require),
                "ssl" => {
                    return Err(ConfigError::new(
                        KEY,
                        format!("`ssl={value}`: only `ssl=true` (sslmode=require) is understood"),
                    ))
                }
                "sslrootcert" => params.root_cert = Some(value),
                // Not libpq's but Rails' (GitLab's `db_prepared_statements`), spelt as in its
                // DATABASE_URL.
                "prepared_statements" => {
                    params.statements = Some(match value.as_str() {
                        "true" => Statements::Prepared,
                        "false" => Statements::PerTransaction,
                        other => {
                            return Err(ConfigError::new(
                                KEY,
                                format!("prepared_statements `{other}` is not true or false"),
                            ))
                        }
                    })
                }
                // tokio-postgres implements these as libpq does.
                "sslnegotiation" => params.kept.push(segment.to_string()),
                "channel_binding" if value == "require" => {
                    return Err(ConfigError::new(
                        KEY,
                        "channel_binding=require is not supported (it is not tested against a \
                         server that demands it); use sslmode=verify-full to authenticate the \
                         server instead",
                    ))
                }
                other if LIBPQ_SSL_UNSUPPORTED.contains(&other) => {
                    return Err(ConfigError::new(
                        KEY,
                        format!(
                            "`{other}` is not supported: of libpq's SSL parameters only sslmode, \
                             sslrootcert and sslnegotiation are (no client certificates)"
                        ),
                    ))
                }
                other if !PASSED_ON.contains(&other) => {
                    let known: Vec<&str> = OWN.iter().chain(PASSED_ON).copied().collect();
                    let meant = crate::config::suggest::did_you_mean(other, &known)
                        .map(|k| format!(": did you mean `{k}`?"))
                        .unwrap_or_else(|| {
                            format!("; the parameters understood are {}", known.join(", "))
                        });
                    return Err(ConfigError::new(
                        KEY,
                        format!("`{other}` is not a parameter of a PostgreSQL URL{meant}"),
                    ));
                }
                _ => params.kept.push(segment.to_string()),
            }
        }
        Ok(params)
    }

    /// The sslmode in force, as libpq decides it: `sslrootcert=system` makes `verify-full` the
    /// default and refuses anything less; a Unix-domain socket never uses TLS.
    fn ssl_mode(&self, config: &tokio_postgres::Config) -> Result<SslMode, ConfigError> {
        let system_roots = self.root_cert.as_deref() == Some("system");
        let ssl_mode = self.ssl_mode.unwrap_or(match system_roots {
            true => SslMode::VerifyFull,
            false => SslMode::Prefer,
        });
        if system_roots && ssl_mode != SslMode::VerifyFull {
            return Err(ConfigError::new(
                KEY,
                format!(
                    "weak sslmode \"{ssl_mode}\" may not be used with sslrootcert=system (use \"verify-full\")"
                ),
            ));
        }
        let hosts = config.get_hosts();
        let all_unix = !hosts.is_empty() && hosts.iter().all(|h| !matches!(h, Host::Tcp(_)));
        Ok(if all_unix { SslMode::Disable } else { ssl_mode })
    }

    /// Where the root certificates are, as libpq looks for them: `sslrootcert`, or
    /// `~/.postgresql/root.crt`.
    fn root(&self) -> Option<RootSource> {
        match self.root_cert.as_deref() {
            Some("system") => Some(RootSource::System),
            Some(path) => Some(RootSource::File(PathBuf::from(path))),
            None => std::env::home_dir()
                .map(|home| RootSource::File(home.join(".postgresql").join("root.crt"))),
        }
    }
}

impl Target {
    /// Reads `url` (already known to be a `postgres://` URL), in steps: the parameters this
    /// module reads itself, tokio-postgres's configuration from the rest, the sslmode in force,
    /// the root certificates (checked now, so that a missing or unreadable file is a
    /// configuration error at start; read again at each connection, so a replaced file is picked
    /// up). Every problem is a [`ConfigError`] naming `database.url`; the message never holds the
    /// password.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let redacted = super::redact(url);
        let mut parsed = url::Url::parse(url)
            .map_err(|e| ConfigError::new(KEY, format!("not a valid URL: {e}")))?;
        let params = OwnParams::read(parsed.query().unwrap_or(""))?;
        let query = params.kept.join("&");
        parsed.set_query((!query.is_empty()).then_some(query.as_str()));
        let mut config = tokio_postgres::Config::from_str(parsed.as_str())
            .map_err(|e| ConfigError::new(KEY, crate::errors::chain(&e)))?;
        let ssl_mode = params.ssl_mode(&config)?;
        // What tokio-postgres does with TLS is decided per attempt in `connect_client`.
        config.ssl_mode(PgSslMode::Disable);
        let target = Self {
            config,
            ssl_mode,
            root: params.root(),
            root_given: params.root_cert.is_some(),
            prepared_statements: params.statements,
            statements: Arc::default(),
            redacted,
        };
        if ssl_mode != SslMode::Disable {
            target
                .roots()
                .map_err(|message| ConfigError::new(KEY, message))?;
        }
        Ok(target)
    }

    /// Where this points, without a password: safe to log.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The statement mode: `prepared_statements` from the URL if set, otherwise what
    /// [`super::probe`] finds on the first call (a failed probe is tried again on the next).
    /// Logs the decision once, at debug: a one-shot command (`report`, `migrate`, a repair) has
    /// no use for it at the default level; `run` says it at start ([`Target::statement_mode`]).
    pub async fn statements(&self) -> Result<Statements, ConnectError> {
        let decide = || async {
            let mode = match self.prepared_statements {
                Some(statements) => StatementMode {
                    statements,
                    why: format!("{} in database.url", statements.url_value()),
                },
                None => {
                    let finding = super::probe::probe(self).await?;
                    StatementMode {
                        statements: finding.statements,
                        why: finding.why,
                    }
                }
            };
            tracing::debug!(database = %self.redacted, "{mode}");
            Ok::<_, ConnectError>(mode)
        };
        Ok(self.statements.get_or_try_init(decide).await?.statements)
    }

    /// The statement mode, once a connection settled it.
    pub fn statement_mode(&self) -> Option<&StatementMode> {
        self.statements.get()
    }

    /// The root certificates to verify the server with, as libpq finds them: `None` when there
    /// are none (then `prefer` and `require` do not verify, and `verify-*` is an error).
    fn roots(&self) -> Result<Option<Roots>, String> {
        let present = match &self.root {
            Some(RootSource::System) => true,
            Some(RootSource::File(path)) => path.exists(),
            None => false,
        };
        match &self.root {
            Some(source) if present => Roots::load(source).map(Some),
            _ if self.ssl_mode.verifies() => Err(match &self.root {
                Some(RootSource::File(path)) => format!(
                    "sslmode={} needs a root certificate, and root certificate file \"{}\" does \
                     not exist{}; set sslrootcert=FILE in the URL to the CA certificate that \
                     signed the server's (or the server's own, if it is self-signed), or use \
                     sslrootcert=system with sslmode=verify-full for the system's trusted roots, or \
                     sslmode=require to encrypt without verifying the server",
                    self.ssl_mode,
                    path.display(),
                    if self.root_given {
                        ""
                    } else {
                        " (libpq's default, used when sslrootcert is not given)"
                    }
                ),
                _ => format!(
                    "sslmode={} needs a root certificate: set sslrootcert=FILE in the URL (no home \
                     directory to look for ~/.postgresql/root.crt)",
                    self.ssl_mode
                ),
            }),
            _ => Ok(None),
        }
    }

    /// The hosts the URL names, for a handshake's message (tokio-postgres tries them in turn).
    fn host_names(&self) -> String {
        let names: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|host| match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        names.join(", ")
    }

    fn describe(&self, roots: &Option<Roots>) -> String {
        match roots {
            Some(r) => format!("sslmode={}, sslrootcert={}", self.ssl_mode, r.source),
            None => format!("sslmode={}, no root certificate", self.ssl_mode),
        }
    }
}

/// What to do about `message` when it is the mark of a pooler in transaction mode: a prepared
/// statement of tokio-postgres's (`s0`, `s1`, ...) found missing or already there. Only
/// [`Statements::Prepared`] meets it: set by `prepared_statements=true`, or probed (PostgreSQL
/// found where a pooler is).
pub fn pooler_hint(message: &str) -> &'static str {
    if message.contains("prepared statement \"s")
        && (message.contains("already exists") || message.contains("does not exist"))
    {
        " (the mark of a pooler in transaction mode, such as PgBouncer's pool_mode = transaction, \
         with prepared statements on: set prepared_statements=false in database.url, or point it \
         at PostgreSQL or a pool_mode = session pool; PgBouncer keeps prepared statements in \
         transaction mode only from 1.21 on, with max_prepared_statements set)"
    } else {
        ""
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    RootCertificate(String),
    #[error("{}", plainly(.0))]
    Postgres(tokio_postgres::Error),
    /// The TLS handshake failed (in an operator's words, with what was asked for).
    #[error("{0}")]
    Handshake(String),
    #[error("setting up the session: {message}{hint}", message = .0, hint = pooler_hint(.0))]
    Setup(String),
    /// Telling PostgreSQL from a pooler failed (the step that failed, and why).
    #[error("finding out whether database.url leads to a pooler (set prepared_statements=true or false in it to skip this): {0}")]
    Probe(String),
}

/// A connection's failure in plain words: what the server answered (its own message, with its
/// detail and hint), or why it could not be reached.
fn plainly(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!("the server answered: {}", db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; {hint}"));
        }
        return text;
    }
    let chained = crate::errors::chain(error);
    match chained.strip_prefix("error connecting to server: ") {
        Some(why) => format!("cannot reach the server: {why}"),
        None => chained,
    }
}

impl ConnectError {
    fn is_handshake(&self) -> bool {
        matches!(self, ConnectError::Handshake(_))
    }

    fn is_refused_by_server(&self) -> bool {
        matches!(self, ConnectError::Postgres(e) if e.as_db_error().is_some())
    }
}

/// One connection, as libpq would make it for `target`, set up for its statement mode.
pub async fn establish(target: &Target) -> Result<AsyncPgConnection, ConnectError> {
    let statements = target.statements().await?;
    let (client, connection) = connect_client(target).await?;
    set_up(client, connection, statements).await
}

/// A tokio-postgres client and its connection, made as libpq would for `target`'s sslmode, with
/// nothing sent yet.
pub(super) async fn connect_client(
    target: &Target,
) -> Result<(Client, Connection<Socket, TlsStream<Socket>>), ConnectError> {
    let roots = target.roots().map_err(ConnectError::RootCertificate)?;
    let check = CertificateCheck {
        roots: roots.clone(),
        check_host: target.ssl_mode == SslMode::VerifyFull,
    };
    let describe = target.describe(&roots);
    let host = target.host_names();
    let attempt = |mode: PgSslMode| {
        let mut config = target.config.clone();
        config.ssl_mode(mode);
        let tls = tls::connector(check.clone());
        let (describe, host) = (describe.clone(), host.clone());
        async move {
            config
                .connect(tls)
                .await
                .map_err(|e| match tls::handshake_failure(&e) {
                    Some(Some(io)) => ConnectError::Handshake(tls::explain(io, &host, &describe)),
                    Some(None) => ConnectError::Handshake(format!(
                        "TLS handshake with `{host}` ({describe}) failed: {}",
                        crate::errors::chain(&e)
                    )),
                    None => ConnectError::Postgres(e),
                })
        }
    };
    match target.ssl_mode {
        SslMode::Disable => attempt(PgSslMode::Disable).await,
        // Unencrypted first; encrypted only if the server refuses that.
        SslMode::Allow => match attempt(PgSslMode::Disable).await {
            Err(e) if e.is_refused_by_server() => attempt(PgSslMode::Require).await,
            other => other,
        },
        // Encrypted if the server offers it; unencrypted if it does not, or the handshake fails.
        SslMode::Prefer => match attempt(PgSslMode::Prefer).await {
            Err(e) if e.is_handshake() => {
                tracing::warn!(database = %target.redacted, error = %e, "sslmode=prefer: the TLS handshake failed; connecting without TLS, as libpq does");
                attempt(PgSslMode::Disable).await
            }
            other => other,
        },
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            attempt(PgSslMode::Require).await
        }
    }
}

/// Hands `client` to diesel-async, whose set-up runs in `statements`' way.
async fn set_up(
    client: Client,
    mut connection: Connection<Socket, TlsStream<Socket>>,
    statements: Statements,
) -> Result<AsyncPgConnection, ConnectError> {
    match statements {
        Statements::Prepared => {
            AsyncPgConnection::try_from_client_and_connection(client, connection)
                .await
                .map_err(|e| ConnectError::Setup(e.to_string()))
        }
        Statements::PerTransaction => {
            // diesel-async's set-up prepares statements (SET TIME ZONE, SET CLIENT_ENCODING);
            // inside a transaction they are prepared, run and closed on one server connection.
            drive_while(&mut connection, client.batch_execute(BEGIN_CLEAN)).await?;
            let mut conn = AsyncPgConnection::try_from_client_and_connection(client, connection)
                .await
                .map_err(|e| ConnectError::Setup(e.to_string()))?;
            // Nothing cached: every statement is closed when its result is dropped.
            conn.set_prepared_statement_cache_size(CacheSize::Disabled);
            conn.batch_execute("COMMIT")
                .await
                .map_err(|e| ConnectError::Setup(format!("COMMIT: {e}")))?;
            Ok(conn)
        }
    }
}

/// Runs `work` on the client while driving its connection, before diesel-async takes both over.
async fn drive_while<S, T, F>(
    connection: &mut tokio_postgres::Connection<S, T>,
    work: F,
) -> Result<(), ConnectError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    F: Future<Output = Result<(), tokio_postgres::Error>>,
{
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = work.as_mut().poll(cx) {
            return Poll::Ready(result.map_err(ConnectError::Postgres));
        }
        loop {
            match connection.poll_message(cx) {
                // Notices.
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(ConnectError::Postgres(e))),
                Poll::Ready(None) => {
                    return Poll::Ready(Err(ConnectError::Setup(
                        "the server closed the connection".into(),
                    )))
                }
                Poll::Pending => break,
            }
        }
        match work.as_mut().poll(cx) {
            Poll::Ready(result) => Poll::Ready(result.map_err(ConnectError::Postgres)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// One connection for `url` outside the pool, for tools and the demo's set-up.
pub async fn establish_url(url: &str) -> Result<super::SingleConn, super::DbError> {
    let target = Target::parse(url).map_err(super::DbError::Config)?;
    let connect = async {
        let conn = establish(&target).await?;
        Ok::<_, ConnectError>((conn, target.statements().await?))
    };
    match connect.await {
        Ok((conn, statements)) => Ok(super::DbConn::new(Box::new(conn), statements)),
        Err(e) => Err(super::DbError::Connect {
            target: target.redacted.clone(),
            message: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Target, ConfigError> {
        Target::parse(url)
    }

    #[test]
    fn ssl_parameters_are_taken_out_and_the_rest_passed_on() {
        let t = parse("postgres://u:pw@db.example:6432/gitlab?sslmode=require&application_name=rr&sslrootcert=%2Ftmp%2Fnone.pem")
            .expect("parses");
        assert_eq!(t.ssl_mode, SslMode::Require);
        assert_eq!(t.root, Some(RootSource::File("/tmp/none.pem".into())));
        assert_eq!(t.config.get_application_name(), Some("rr"));
        assert_eq!(t.config.get_dbname(), Some("gitlab"));
        assert_eq!(t.config.get_ports(), &[6432]);
        assert_eq!(t.redacted(), "postgres://u:***@db.example:6432/gitlab?sslmode=require&application_name=rr&sslrootcert=%2Ftmp%2Fnone.pem");
    }

    #[test]
    fn the_default_is_prefer_verify_full_with_system_roots_and_ssl_true_is_require() {
        assert_eq!(
            parse("postgres://u@h/d").expect("parses").ssl_mode,
            SslMode::Prefer
        );
        assert_eq!(
            parse("postgres://u@h/d?ssl=true").expect("parses").ssl_mode,
            SslMode::Require
        );
        let system = parse("postgres://u@h/d?sslrootcert=system").expect("parses");
        assert_eq!(system.ssl_mode, SslMode::VerifyFull);
        assert_eq!(system.root, Some(RootSource::System));
    }

    #[test]
    fn unix_sockets_never_use_ssl() {
        let t = parse("postgres://u@%2Fvar%2Frun%2Fpostgresql/d?sslmode=require").expect("parses");
        assert_eq!(t.ssl_mode, SslMode::Disable);
    }

    #[test]
    fn bad_ssl_settings_are_config_errors_naming_the_key() {
        for (url, needle) in [
            ("postgres://u@h/d?sslmode=verify", "sslmode `verify`"),
            (
                "postgres://u@h/d?sslcert=/c.pem",
                "`sslcert` is not supported",
            ),
            (
                "postgres://u@h/d?sslkey=/k.pem",
                "`sslkey` is not supported",
            ),
            ("postgres://u@h/d?ssl=1", "only `ssl=true`"),
            (
                "postgres://u@h/d?sslmode=require&sslrootcert=system",
                "weak sslmode \"require\" may not be used with sslrootcert=system",
            ),
            (
                "postgres://u@h/d?sslmode=verify-ca&sslrootcert=/nonexistent/root.pem",
                "root certificate file \"/nonexistent/root.pem\" does not exist",
            ),
            (
                "postgres://u@h/d?channel_binding=require",
                "channel_binding=require",
            ),
            ("postgres://u@h/d?no_such_option=1", "no_such_option"),
        ] {
            let e = parse(url)
                .err()
                .unwrap_or_else(|| panic!("{url} must be refused"));
            assert_eq!(e.key, "database.url", "{url}");
            assert!(e.message.contains(needle), "{url}: {}", e.message);
        }
    }

    #[test]
    fn a_missing_root_file_only_matters_to_verify_modes() {
        let t = parse("postgres://u@h/d?sslmode=require&sslrootcert=/nonexistent/root.pem")
            .expect("require without a root file does not verify, as in libpq");
        assert!(t.roots().expect("no error").is_none());
    }
}
