//! What the service logs while a test runs in-process, captured as text: the service's actors run
//! on the test's own thread (an actix System of one arbiter), so a subscriber set as this thread's
//! default sees every event they log, and no other test's.
//!
//! `tracing` decides once per call site whether anyone listens, when the site is first reached.
//! With a single subscriber registered it asks only the reaching thread's default: a site another
//! test's thread (without a subscriber) reaches first would be switched off for this one too. A
//! second subscriber, registered for the whole process, makes it ask every registered one.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tracing::subscriber::{DefaultGuard, NoSubscriber};
use tracing::Dispatch;

/// Registered once and never dropped: with it, no capture is ever the only subscriber.
static SECOND_SUBSCRIBER: OnceLock<Dispatch> = OnceLock::new();

/// The text lines logged on this thread since [`Logs::capture`], until it is dropped.
pub struct Logs {
    text: Arc<Mutex<Vec<u8>>>,
    _default: DefaultGuard,
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Captures this thread's events at `info` and above, formatted as the service's text logs
    /// are (one event per line, no colours).
    pub fn capture() -> Self {
        SECOND_SUBSCRIBER.get_or_init(|| Dispatch::new(NoSubscriber::default()));
        let text = Arc::new(Mutex::new(Vec::new()));
        let sink = text.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_target(false)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        Self {
            text,
            _default: tracing::subscriber::set_default(subscriber),
        }
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().unwrap_or_else(PoisonError::into_inner))
            .into_owned()
    }
}
