//! Whether `database.url` leads to PostgreSQL itself or to a pooler, for the statement mode when
//! the URL does not set `prepared_statements`.
//!
//! Two signals, neither of which a direct connection can give:
//! - **the cancel key**: PostgreSQL's `BackendKeyData` carries the id of the server process, the
//!   one `pg_backend_pid()` returns. A pooler hands out a key of its own (PgBouncer's is random),
//!   since a client's cancel request must reach whichever server process runs its query then.
//! - **a shared server process**: with connection A idle, a second connection B is served by A's
//!   server process. On PostgreSQL each connection has a process of its own while it lives. A
//!   transaction pooler with an idle server usually does this (PgBouncer hands out the server
//!   released last), but a busy one may not, so its absence proves nothing.
//!
//! "Direct" is concluded only when neither shows: a pooler taken for PostgreSQL would break the
//! run, PostgreSQL taken for a pooler would only be slower, and neither signal can fire on
//! PostgreSQL. A pooler in session mode is taken for one in transaction mode (a busy transaction
//! pool looks the same): slower, not broken; `prepared_statements=true` says otherwise.
//!
//! Not used, because they cannot tell: `server_version` and `application_name` (PgBouncer passes
//! the server's on), `SHOW POOLS` (PgBouncer answers it only on its admin console, a database of
//! its own).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::{ready, Ready};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};
use tokio_postgres::{Client, SimpleQueryMessage};

use super::connect::{self, ConnectError, Statements, Target};

/// What the probe found, and why, in words fit for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub statements: Statements,
    pub why: String,
}

/// Opens two connections to `target`, reads the signals, and closes both. Sends only simple
/// queries, so it prepares nothing on any server connection it meets.
pub async fn probe(target: &Target) -> Result<Finding, ConnectError> {
    let failed = |what: &str, e: String| ConnectError::Probe(format!("{what}: {e}"));
    let (a, a_connection) = connect::connect_client(target).await?;
    tokio::spawn(a_connection);
    let pid_a = backend_pid(&a)
        .await
        .map_err(|e| failed("reading pg_backend_pid() on the first connection", e))?;
    let key_pid = cancel_key_pid(&a)
        .await
        .map_err(|e| failed("reading the first connection's cancel key", e))?;
    // A stays open and idle: on PostgreSQL its process cannot serve B.
    let (b, b_connection) = connect::connect_client(target).await?;
    tokio::spawn(b_connection);
    let pid_b = backend_pid(&b)
        .await
        .map_err(|e| failed("reading pg_backend_pid() on the second connection", e))?;
    drop(b);
    drop(a);
    Ok(decide(key_pid, pid_a, pid_b))
}

/// The decision from what was read: the cancel key's process id and each connection's
/// `pg_backend_pid()`.
pub fn decide(key_pid: i32, pid_a: i32, pid_b: i32) -> Finding {
    if key_pid != pid_a {
        Finding {
            statements: Statements::PerTransaction,
            why: "a pooler: the connection's cancel key does not name its server process \
                  (taken to pool transactions)"
                .into(),
        }
    } else if pid_a == pid_b {
        Finding {
            statements: Statements::PerTransaction,
            why: "a pooler in transaction mode: a second connection was served by the idle first \
                  one's server process"
                .into(),
        }
    } else {
        Finding {
            statements: Statements::Prepared,
            why: "PostgreSQL itself: the cancel key names the server process, and each connection \
                  has its own"
                .into(),
        }
    }
}

async fn backend_pid(client: &Client) -> Result<i32, String> {
    let messages = client
        .simple_query("SELECT pg_backend_pid()")
        .await
        .map_err(|e| crate::errors::chain(&e))?;
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0),
            _ => None,
        })
        .ok_or_else(|| "no row".to_string())?
        .parse()
        .map_err(|e| format!("not a process id: {e}"))
}

/// The frontend codes of the requests tokio-postgres writes for a cancel key.
const SSL_REQUEST: i32 = 80_877_103;
const CANCEL_REQUEST: i32 = 80_877_102;

/// The process id of `client`'s cancel key (`BackendKeyData`). tokio-postgres keeps it private,
/// but writes it in a cancel request to any stream it is given: the request is written to an
/// in-memory pipe and read back, and reaches no server.
async fn cancel_key_pid(client: &Client) -> Result<i32, String> {
    let (ours, mut theirs) = tokio::io::duplex(64);
    let token = client.cancel_token();
    let send = token.cancel_query_raw(ours, Clear);
    let read = async move {
        loop {
            let mut head = [0u8; 8];
            theirs.read_exact(&mut head).await?;
            let [l0, l1, l2, l3, c0, c1, c2, c3] = head;
            match (
                i32::from_be_bytes([l0, l1, l2, l3]),
                i32::from_be_bytes([c0, c1, c2, c3]),
            ) {
                // With an sslmode that asks for TLS: say yes, and `Clear` leaves it unencrypted.
                (8, SSL_REQUEST) => theirs.write_all(b"S").await?,
                (16, CANCEL_REQUEST) => {
                    let mut key = [0u8; 8];
                    theirs.read_exact(&mut key).await?;
                    let [p0, p1, p2, p3, ..] = key;
                    return Ok(i32::from_be_bytes([p0, p1, p2, p3]));
                }
                (length, code) => {
                    return Err(io::Error::other(format!(
                        "unexpected request (length {length}, code {code})"
                    )))
                }
            }
        }
    };
    let (sent, read) = futures_util::future::join(send, read).await;
    match (read, sent) {
        (Ok(pid), _) => Ok(pid),
        (Err(_), Err(e)) => Err(crate::errors::chain(&e)),
        (Err(e), Ok(())) => Err(e.to_string()),
    }
}

/// The "TLS" of the in-memory pipe: none.
struct Clear;

impl TlsConnect<DuplexStream> for Clear {
    type Stream = ClearStream;
    type Error = io::Error;
    type Future = Ready<Result<ClearStream, io::Error>>;

    fn connect(self, stream: DuplexStream) -> Self::Future {
        ready(Ok(ClearStream(stream)))
    }
}

struct ClearStream(DuplexStream);

impl AsyncRead for ClearStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClearStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl TlsStream for ClearStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_only_when_neither_signal_shows() {
        assert_eq!(decide(100, 100, 101).statements, Statements::Prepared);
        // PgBouncer's random key, whatever server B gets.
        assert_eq!(decide(-7, 100, 101).statements, Statements::PerTransaction);
        assert_eq!(decide(-7, 100, 100).statements, Statements::PerTransaction);
        // A pooler that passed a server's key on, caught sharing A's process with B.
        assert_eq!(decide(100, 100, 100).statements, Statements::PerTransaction);
    }
}
