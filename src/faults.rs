//! Faults that only tests switch on, to prove that supervision restarts what panics. Nothing in the
//! configuration reaches them: a service started from the command line has none.

use std::collections::HashSet;
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
    panic_once: Mutex<HashSet<i64>>,
    panic_always: Mutex<HashSet<i64>>,
    writer_panic_once: Mutex<HashSet<WriterStep>>,
}

impl Faults {
    /// The next analysis of `project_id` panics.
    pub fn panic_once_on(&self, project_id: i64) {
        lock(&self.panic_once).insert(project_id);
    }

    /// Every analysis of `project_id` panics.
    pub fn panic_always_on(&self, project_id: i64) {
        lock(&self.panic_always).insert(project_id);
    }

    /// The Writer panics on the next result it receives.
    pub fn panic_writer_once(&self) {
        self.panic_writer_once_at(WriterStep::Record);
    }

    /// The Writer panics the next time it reaches `step`.
    pub fn panic_writer_once_at(&self, step: WriterStep) {
        lock(&self.writer_panic_once).insert(step);
    }

    pub(crate) fn analysis(&self, project_id: i64) {
        let once = lock(&self.panic_once).remove(&project_id);
        let always = lock(&self.panic_always).contains(&project_id);
        if once || always {
            panic!("fault injected: analysis of project {project_id} panics");
        }
    }

    pub(crate) fn writer(&self, step: WriterStep) {
        if lock(&self.writer_panic_once).remove(&step) {
            panic!("fault injected: the writer panics at {step:?}");
        }
    }
}
