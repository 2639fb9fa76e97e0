//! A connection's deadlines. A connection is waiting for a request head
//! (since its accept, or since the first byte of the next request), idle
//! (kept alive between requests), or busy (a request is being served: its
//! body has its own deadline, the handler its own bounds). The watchdog in
//! `server` asks [`ConnClock::expired`] and closes the connection when a
//! deadline has passed.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No complete request head within the header read timeout; `partial`
    /// when some of it had arrived (then the client is told 408).
    Head { partial: bool },
    /// Kept alive with no request for the idle timeout.
    Idle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head { since: Instant, partial: bool },
    Idle { since: Instant },
    Busy { in_flight: usize },
}

pub struct ConnClock {
    phase: Mutex<Phase>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl ConnClock {
    /// A connection accepted at `now`: its first head is due within the
    /// header read timeout, so a client that connects and says nothing
    /// holds a slot no longer than one that starts a request.
    pub fn new(now: Instant, header_read_timeout: Duration, idle_timeout: Duration) -> Self {
        Self {
            phase: Mutex::new(Phase::Head {
                since: now,
                partial: false,
            }),
            header_read_timeout,
            idle_timeout,
        }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        // A poisoned lock only means a panic elsewhere; the phase is still a value.
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes arrived from the client.
    pub fn bytes_read(&self, now: Instant) {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Idle { .. } => Phase::Head {
                since: now,
                partial: true,
            },
            Phase::Head { since, .. } => Phase::Head {
                since,
                partial: true,
            },
            busy => busy,
        };
    }

    /// A request head was complete and handed to the router.
    pub fn request_started(&self) {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy { in_flight } => Phase::Busy {
                in_flight: in_flight + 1,
            },
            _ => Phase::Busy { in_flight: 1 },
        };
    }

    /// A response was written out (or abandoned).
    pub fn request_finished(&self, now: Instant) {
        let mut phase = self.phase();
        if let Phase::Busy { in_flight } = *phase {
            *phase = if in_flight > 1 {
                Phase::Busy {
                    in_flight: in_flight - 1,
                }
            } else {
                Phase::Idle { since: now }
            };
        }
    }

    /// Part of a request head is in and no request has started since: what
    /// hyper writes now can only be its own answer to a head it refused.
    pub fn reading_head(&self) -> bool {
        matches!(*self.phase(), Phase::Head { partial: true, .. })
    }

    /// The next deadline, if any (none while busy).
    pub fn deadline(&self) -> Option<(Instant, Expiry)> {
        match *self.phase() {
            Phase::Head { since, partial } => {
                Some((since + self.header_read_timeout, Expiry::Head { partial }))
            }
            Phase::Idle { since } => Some((since + self.idle_timeout, Expiry::Idle)),
            Phase::Busy { .. } => None,
        }
    }

    pub fn expired(&self, now: Instant) -> Option<Expiry> {
        self.deadline()
            .filter(|(at, _)| *at <= now)
            .map(|(_, what)| what)
    }

    /// How often the watchdog looks while there is no deadline: a deadline
    /// set later is never earlier than one such period after it was set.
    pub fn period(&self) -> Duration {
        // Never 0: a zero timeout must not make the watchdog spin.
        self.header_read_timeout
            .min(self.idle_timeout)
            .max(Duration::from_millis(10))
    }
}

/// A request being served; dropped with its response body (sent or abandoned).
pub struct InFlight(std::sync::Arc<ConnClock>);

impl InFlight {
    pub fn start(clock: std::sync::Arc<ConnClock>) -> Self {
        clock.request_started();
        Self(clock)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_silent_connection_is_due_its_head() {
        let t0 = Instant::now();
        let c = ConnClock::new(t0, 5 * S, 60 * S);
        assert_eq!(c.expired(t0 + 4 * S), None);
        assert_eq!(c.expired(t0 + 5 * S), Some(Expiry::Head { partial: false }));
        c.bytes_read(t0 + S);
        // Trickling bytes does not move the deadline.
        c.bytes_read(t0 + 4 * S);
        assert_eq!(c.expired(t0 + 5 * S), Some(Expiry::Head { partial: true }));
        assert!(c.reading_head());
    }

    #[test]
    fn busy_has_no_deadline_and_idle_starts_when_the_last_response_ends() {
        let t0 = Instant::now();
        let c = ConnClock::new(t0, 5 * S, 60 * S);
        c.bytes_read(t0);
        c.request_started();
        c.request_started();
        assert!(!c.reading_head());
        assert_eq!(c.deadline(), None);
        c.request_finished(t0 + 100 * S);
        assert_eq!(c.deadline(), None, "one still in flight");
        c.request_finished(t0 + 200 * S);
        assert_eq!(c.expired(t0 + 259 * S), None);
        assert_eq!(c.expired(t0 + 260 * S), Some(Expiry::Idle));
        // The next request's first byte starts its head deadline.
        c.bytes_read(t0 + 230 * S);
        assert_eq!(
            c.expired(t0 + 235 * S),
            Some(Expiry::Head { partial: true })
        );
    }
}
