//! The few libc calls xtask needs, declared by hand so the crate stays dependency-free.
//!
//! Linux only (the project's machines are Debian): the signal numbers below are Linux's.

use std::ffi::c_int;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

pub const SIGINT: c_int = 2;
pub const SIGKILL: c_int = 9;
pub const SIGTERM: c_int = 15;

unsafe extern "C" {
    /// glibc's `signal` has BSD semantics (handler stays installed, syscalls restart).
    fn signal(signum: c_int, handler: usize) -> usize;
    safe fn kill(pid: c_int, sig: c_int) -> c_int;
    safe fn geteuid() -> u32;
}

/// The last SIGINT/SIGTERM received, 0 if none, and how many were received.
static LAST: AtomicI32 = AtomicI32::new(0);
static COUNT: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(sig: c_int) {
    // Only lock-free atomics: anything else is not async-signal-safe.
    LAST.store(sig, Ordering::SeqCst);
    COUNT.fetch_add(1, Ordering::SeqCst);
}

/// Catches SIGINT and SIGTERM instead of dying on them, so that the Drop guards that stop
/// PostgreSQL and moto still run. A caught (not ignored) signal is reset to the default in
/// exec'd children, so they still die on Ctrl-C as usual.
pub fn catch_interrupts() {
    // SAFETY: `on_signal` is an `extern "C" fn(c_int)` that only touches an atomic.
    unsafe {
        signal(SIGINT, on_signal as extern "C" fn(c_int) as usize);
        signal(SIGTERM, on_signal as extern "C" fn(c_int) as usize);
    }
}

/// The last signal received since start (SIGINT or SIGTERM), if any.
pub fn received() -> Option<c_int> {
    match LAST.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// How many SIGINT/SIGTERM were received since start.
pub fn received_count() -> u32 {
    COUNT.load(Ordering::SeqCst)
}

/// Sends `sig` to a whole process group (children spawned with `process_group(0)` lead their own).
pub fn kill_group(pgid: u32, sig: c_int) {
    let _ = kill(-(pgid as c_int), sig);
}

pub fn is_root() -> bool {
    geteuid() == 0
}
