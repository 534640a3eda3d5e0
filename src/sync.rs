//! A mutex that outlives a panic: every lock in this crate guards plain data (counters, sets,
//! buffers) that a panicking holder cannot leave half-written, so a poisoned lock is used as is.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
