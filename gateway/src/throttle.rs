//! Wrong admin tokens, throttled per client address: a token bucket of
//! failed attempts (`admin_auth_burst` of them, one more per
//! `admin_auth_refill`). An address whose bucket is empty gets 429 on every
//! admin request, whatever its token — otherwise a guesser would still
//! learn which guess was right. Successes take nothing from the bucket.
//!
//! IPv6 clients are keyed by their /64, which one host can fill with
//! addresses. Behind a proxy every client shares the proxy's address; the
//! gateway trusts no forwarding header (anyone can send one).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Buckets kept before refilled ones are forgotten.
const TRACKED: usize = 10_000;

pub struct AdminThrottle {
    burst: f64,
    refill: Duration,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// Refused since the bucket last ran dry (to log an episode once).
    throttled: bool,
}

/// An admin request from an address that is out of attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throttled {
    pub retry_after: Duration,
    /// The first refusal of this episode (log it; the rest are counted).
    pub first: bool,
}

impl AdminThrottle {
    pub fn new(burst: u32, refill: Duration) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            refill: refill.max(Duration::from_millis(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn buckets(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Bucket>> {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refilled(&self, b: &Bucket, now: Instant) -> f64 {
        let gained = now.saturating_duration_since(b.at).as_secs_f64() / self.refill.as_secs_f64();
        (b.tokens + gained).min(self.burst)
    }

    /// One admin request from `client`, its token already compared (in
    /// constant time, so comparing first reveals nothing): refused when the
    /// address is out of attempts, whatever the token; otherwise a wrong
    /// token uses one attempt. One lock, so concurrent guesses cannot all
    /// spend the same last attempt.
    pub fn attempt(
        &self,
        client: IpAddr,
        now: Instant,
        wrong_token: bool,
    ) -> Result<(), Throttled> {
        let key = key(client);
        let mut buckets = self.buckets();
        if !buckets.contains_key(&key) {
            if !wrong_token {
                return Ok(());
            }
            if buckets.len() >= TRACKED {
                // Full again means forgotten: same as never seen.
                buckets.retain(|_, b| self.refilled(b, now) < self.burst);
            }
        }
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
            throttled: false,
        });
        let tokens = self.refilled(b, now);
        if tokens < 1.0 {
            let first = !b.throttled;
            b.throttled = true;
            return Err(Throttled {
                retry_after: self.refill.mul_f64(1.0 - tokens),
                first,
            });
        }
        if tokens >= self.burst {
            b.throttled = false;
        }
        b.tokens = if wrong_token { tokens - 1.0 } else { tokens };
        b.at = now;
        Ok(())
    }
}

fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_burst_then_one_attempt_per_refill() {
        let t = AdminThrottle::new(3, 2 * S);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(t.attempt(a, t0, true).is_ok());
        }
        let refused = t.attempt(a, t0, true).unwrap_err();
        assert!(refused.first);
        assert_eq!(refused.retry_after, 2 * S);
        assert!(
            !t.attempt(a, t0 + S, true).unwrap_err().first,
            "logged once"
        );
        assert!(t.attempt(a, t0 + S, false).is_err(), "even the right token");
        assert!(
            t.attempt(b, t0, true).is_ok(),
            "another address is not affected"
        );
        // One refill interval later, one more attempt.
        assert!(t.attempt(a, t0 + 2 * S, true).is_ok());
        assert!(t.attempt(a, t0 + 2 * S, true).is_err());
        // After a whole bucket's worth of time, a full burst again.
        let later = t0 + 10 * S;
        for _ in 0..3 {
            assert!(t.attempt(a, later, true).is_ok());
        }
        assert!(
            t.attempt(a, later, true).unwrap_err().first,
            "a new episode"
        );
    }

    #[test]
    fn successes_use_nothing_up() {
        let t = AdminThrottle::new(1, 60 * S);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..100 {
            assert!(t.attempt(a, t0, false).is_ok());
        }
        assert!(t.attempt(a, t0, true).is_ok());
        assert!(t.attempt(a, t0, false).is_err());
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        assert_eq!(
            key("2001:db8::1".parse().unwrap()),
            key("2001:db8::ffff:1".parse().unwrap())
        );
        assert_ne!(
            key("2001:db8::1".parse().unwrap()),
            key("2001:db8:0:1::1".parse().unwrap())
        );
        assert_eq!(
            key("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
