//! A process-wide "stop soon" request: set by the command line's SIGINT/SIGTERM handler,
//! polled by long loops (the trainers check it after every step and stop with a checkpoint,
//! as at a `--minutes` deadline), so an interrupted run loses no finished step.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks long-running loops to stop at their next safe point. Async-signal-safe (one atomic
/// store), so a signal handler may call it.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
