//! What the service logs while a test runs in-process, captured as text: the service's actors run
//! on the test's own thread (an actix System of one arbiter), so a subscriber set as this thread's
//! default sees every event they log, and no other test's.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::subscriber::DefaultGuard;

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
