//! Faults that only tests switch on, to prove that supervision restarts what panics. Nothing in the
//! configuration reaches them: a service started from the command line has none.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::sync::lock;

#[derive(Debug, Default)]
pub struct Faults {
    panic_once: Mutex<HashSet<i64>>,
    panic_always: Mutex<HashSet<i64>>,
    writer_panic_once: AtomicBool,
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
        self.writer_panic_once.store(true, Ordering::SeqCst);
    }

    pub(crate) fn analysis(&self, project_id: i64) {
        let once = lock(&self.panic_once).remove(&project_id);
        let always = lock(&self.panic_always).contains(&project_id);
        if once || always {
            panic!("fault injected: analysis of project {project_id} panics");
        }
    }

    pub(crate) fn writer(&self) {
        if self.writer_panic_once.swap(false, Ordering::SeqCst) {
            panic!("fault injected: the writer panics");
        }
    }
}
