//! Was this process frozen? The classic zombie is a process that stopped
//! running for a while — SIGSTOP, a VM paused or migrated, a swap storm —
//! while the group and a successor moved on without it. It cannot notice
//! from inside its own calls (a blocking librdkafka call in a broker outage
//! looks the same from the loop), but a thread that does nothing but wake
//! every 100 ms can: when the whole process was frozen, it wakes to find
//! seconds gone on the monotonic clock (which keeps counting while a
//! process is stopped).

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A gap this long between two 100 ms ticks means the process was frozen
/// (scheduling delays on a busy machine are far shorter).
const FROZEN: Duration = Duration::from_secs(3);
const TICK: Duration = Duration::from_millis(100);

/// The end of the latest freeze and how long it lasted.
static LAST_FREEZE: Mutex<Option<(Instant, Duration)>> = Mutex::new(None);
static WATCHDOG: OnceLock<bool> = OnceLock::new();

/// Starts the watchdog thread (once per process).
pub(crate) fn watch() {
    WATCHDOG.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("freeze-watchdog".into())
            .spawn(|| {
                let mut last = Instant::now();
                loop {
                    std::thread::sleep(TICK);
                    let now = Instant::now();
                    let gap = now.duration_since(last);
                    if gap >= FROZEN {
                        *LAST_FREEZE.lock().expect("freeze lock") = Some((now, gap));
                    }
                    last = now;
                }
            });
        match spawned {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(message = "cannot start the freeze watchdog; every producer fence will count as real", error = %e);
                false
            }
        }
    });
}

/// The latest freeze that ended within `within`, with its length.
pub(crate) fn frozen_within(within: Duration) -> Option<Duration> {
    let last = *LAST_FREEZE.lock().expect("freeze lock");
    last.filter(|(end, _)| end.elapsed() <= within)
        .map(|(_, gap)| gap)
}

/// Whether the watchdog runs (a fence judged without it must count as real).
pub(crate) fn watching() -> bool {
    WATCHDOG.get() == Some(&true)
}
