//! The one seam through which a test makes the service panic, to prove that supervision restarts
//! what panics: [`Faults`], injected through `ServiceOptions` into the Analyzers and the Writer,
//! which call it at their steps. Every service has one; only the test-only `faults` feature can
//! arm it, and nothing in the configuration reaches it, so a service started from the command line
//! has none armed (and each call costs one atomic load).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::sync::lock;

/// Where in the Writer a test may make it panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriterStep {
    /// On receiving a project's result, once it is buffered.
    Record,
    /// On a tick of the flush timer.
    Timer,
    /// On a request to flush, once the requester is waiting.
    Flush,
    /// When a bulk write completes, before its outcome is taken in.
    WriteDone,
}

#[derive(Debug, Default)]
pub struct Faults {
    /// A fault was asked for: only then are the sets below looked at.
    armed: AtomicBool,
    panic_once: Mutex<HashSet<i64>>,
    panic_always: Mutex<HashSet<i64>>,
    writer_panic_once: Mutex<HashSet<WriterStep>>,
}

/// Arming a fault: the tests' side of the seam.
#[cfg(feature = "faults")]
impl Faults {
    fn arm(&self) {
        self.armed.store(true, Ordering::Relaxed);
    }

    /// The next analysis of `project_id` panics.
    pub fn panic_once_on(&self, project_id: i64) {
        self.arm();
        lock(&self.panic_once).insert(project_id);
    }

    /// Every analysis of `project_id` panics.
    pub fn panic_always_on(&self, project_id: i64) {
        self.arm();
        lock(&self.panic_always).insert(project_id);
    }

    /// The Writer panics on the next result it receives.
    pub fn panic_writer_once(&self) {
        self.panic_writer_once_at(WriterStep::Record);
    }

    /// The Writer panics the next time it reaches `step`.
    pub fn panic_writer_once_at(&self, step: WriterStep) {
        self.arm();
        lock(&self.writer_panic_once).insert(step);
    }
}

/// Where the service asks whether to panic.
impl Faults {
    pub(crate) fn analysis(&self, project_id: i64) {
        if !self.armed.load(Ordering::Relaxed) {
            return;
        }
        let once = lock(&self.panic_once).remove(&project_id);
        let always = lock(&self.panic_always).contains(&project_id);
        if once || always {
            panic!("fault injected: analysis of project {project_id} panics");
        }
    }

    pub(crate) fn writer(&self, step: WriterStep) {
        if !self.armed.load(Ordering::Relaxed) {
            return;
        }
        if lock(&self.writer_panic_once).remove(&step) {
            panic!("fault injected: the writer panics at {step:?}");
        }
    }
}
