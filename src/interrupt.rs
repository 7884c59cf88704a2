//! Ctrl-C and SIGTERM stop a run cleanly. The binary calls [`install`]; the
//! first signal only raises a flag, which the run polls between batches
//! ([`check`]) and answers with [`Error::Interrupted`], so the staging folder
//! is removed and the previous report stays as it was (see
//! `report::staging`). A second signal ends the process at once, for a user
//! who does not want to wait for the current batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{LazyLock, OnceLock};

use crate::error::Error;

/// Set by the first SIGINT/SIGTERM; never set when no handler is installed
/// (the library used from other programs, and the tests).
static RAISED: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static INSTALLED: OnceLock<()> = OnceLock::new();

/// Exit status after a second signal: the run did not complete (an error, 2).
pub const HARD_EXIT_CODE: i32 = 2;

/// Installs the handlers for SIGINT and SIGTERM (once; later calls do nothing).
pub fn install() -> Result<(), std::io::Error> {
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first, so it runs before the flag is set: it exits only
        // if the flag was already raised by an earlier signal.
        signal_hook::flag::register_conditional_shutdown(signal, HARD_EXIT_CODE, Arc::clone(&RAISED))?;
        // SAFETY: the action only stores into an atomic, which is async-signal-safe.
        unsafe {
            signal_hook::low_level::register(signal, move || {
                SIGNAL.store(signal, Ordering::SeqCst);
                RAISED.store(true, Ordering::SeqCst);
            })?;
        }
    }
    let _ = INSTALLED.set(());
    Ok(())
}

/// `Err(Error::Interrupted)` once a signal has arrived.
pub fn check() -> Result<(), Error> {
    if RAISED.load(Ordering::SeqCst) {
        let signal = match SIGNAL.load(Ordering::SeqCst) {
            signal_hook::consts::SIGTERM => "SIGTERM",
            _ => "SIGINT (Ctrl-C)",
        };
        return Err(Error::Interrupted { signal });
    }
    Ok(())
}
