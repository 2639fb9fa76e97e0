//! The dedupe window (issue 14): a decided request that issued nothing is
//! remembered for the window of stream time (the records' log timestamps,
//! never the wall clock), then forgotten and tombstoned in the changelog;
//! an ISSUED request is remembered forever. Run through the engine's
//! in-process harness, no services.

use std::time::Duration;

mod common;

use common::{create, decisions, feed_at, harness_of, issue, processor};

use surge_coupon::ledger::{id_hash, request_identity, BUCKET_MS};
use surge_coupon::{CouponBook, CouponProcessor};
use surge_engine::harness::Harness;
use surge_engine::{Millis, Reject};
use surge_schemas::coupon::{CouponCommand, Outcome};

/// One hour: 60 buckets of a minute.
const WINDOW_MS: Millis = 3_600_000;
/// 2023-11-14T22:13:20Z plus 20 s: not on a bucket's edge.
const T0: Millis = 1_700_000_000_000 + 20_000;

fn harness() -> Harness<CouponProcessor> {
    harness_of(processor().with_dedupe_window(Duration::from_millis(WINDOW_MS as u64)))
}

fn feed(h: &mut Harness<CouponProcessor>, c: CouponCommand, at: Millis) -> Result<(), Reject> {
    feed_at(h, c, at)
}

fn outcomes_of(h: &Harness<CouponProcessor>, request: &str) -> Vec<Outcome> {
    decisions(h)
        .into_iter()
        .filter(|d| d.request_id == request)
        .map(|d| d.outcome)
        .collect()
}

/// The changelog key of request `request` of coupon c1.
fn request_key(request: &str) -> Vec<u8> {
    let mut k = vec![b'q'];
    k.extend_from_slice(&decided_id(request).to_be_bytes());
    k
}

/// The identity of request `request` of coupon c1.
fn decided_id(request: &str) -> u128 {
    request_identity("c1", request)
}

fn book(h: &Harness<CouponProcessor>) -> &CouponBook {
    h.state(h.partition_of(0, "c1"))
}

/// c1 with one unit: r1 takes it (ISSUED), r2 is SOLD_OUT, both at T0.
fn sold_out_at_t0(h: &mut Harness<CouponProcessor>) {
    feed(h, create("admin", "c1", 1), T0).unwrap();
    feed(h, issue("r1", "c1", "u1"), T0).unwrap();
    feed(h, issue("r2", "c1", "u2"), T0).unwrap();
    assert_eq!(outcomes_of(h, "r1"), [Outcome::Issued]);
    assert_eq!(outcomes_of(h, "r2"), [Outcome::SoldOut]);
    h.commit();
}

#[test]
fn a_retry_within_the_window_is_a_duplicate_and_one_after_it_a_new_request() {
    let mut h = harness();
    sold_out_at_t0(&mut h);
    // Just inside the window, ticks included: still the same request.
    feed(&mut h, issue("r2", "c1", "u2"), T0 + WINDOW_MS - 1).unwrap();
    h.tick(0).unwrap();
    h.tick(i64::MAX).unwrap(); // the wall clock plays no part
    feed(&mut h, issue("r2", "c1", "u2"), T0 + WINDOW_MS - 1).unwrap();
    h.commit();
    assert_eq!(
        outcomes_of(&h, "r2"),
        [Outcome::SoldOut],
        "a retry in the window"
    );
    assert!(book(&h).already_decided(decided_id("r2")));
    // Up to a bucket past the window an entry may or may not be there yet;
    // after it, it is gone: the retry is decided again, as a new request.
    // That second decision is the price of a bounded window.
    feed(&mut h, issue("r2", "c1", "u2"), T0 + WINDOW_MS + BUCKET_MS).unwrap();
    h.commit();
    assert_eq!(
        outcomes_of(&h, "r2"),
        [Outcome::SoldOut, Outcome::SoldOut],
        "decided again once the window passed"
    );
    // Decided again means remembered again, from its new time.
    feed(
        &mut h,
        issue("r2", "c1", "u2"),
        T0 + WINDOW_MS + 2 * BUCKET_MS,
    )
    .unwrap();
    assert_eq!(outcomes_of(&h, "r2").len(), 2);
    h.commit();
    h.assert_restore_law();
}

#[test]
fn stream_time_is_the_latest_record_time_not_the_record_at_hand() {
    let mut h = harness();
    sold_out_at_t0(&mut h);
    // A record far later moves the clock; a late record with an old
    // timestamp does not move it back.
    feed(&mut h, issue("r3", "c1", "u3"), T0 + 2 * WINDOW_MS).unwrap();
    feed(&mut h, issue("r2", "c1", "u2"), T0 + 1).unwrap();
    h.commit();
    assert_eq!(outcomes_of(&h, "r2"), [Outcome::SoldOut, Outcome::SoldOut]);
    h.assert_restore_law();
}

#[test]
fn an_issued_request_never_expires_and_its_holder_survives_a_restore() {
    let mut h = harness();
    sold_out_at_t0(&mut h);
    let p = h.partition_of(0, "c1");
    // Ten windows of stream time, ticking all along.
    for n in 1..=100 {
        let at = T0 + n * WINDOW_MS / 10;
        feed(&mut h, issue(&format!("later-{n}"), "c1", "u9"), at).unwrap();
        h.tick(0).unwrap();
        if n % 10 == 0 {
            h.commit();
        }
    }
    h.commit();
    assert!(
        !book(&h).already_decided(decided_id("r2")),
        "SOLD_OUT expired"
    );
    assert!(
        book(&h).already_decided(decided_id("admin")),
        "accepted admin terms are permanent"
    );
    assert!(
        book(&h).already_decided(decided_id("r1")),
        "ISSUED is permanent"
    );
    assert!(!h.changelog(p).contains(&(request_key("r1"), None)));
    for restart in [false, true] {
        if restart {
            h.restart();
        } else {
            h.crash_and_restore();
        }
        let c1 = book(&h).coupon("c1").unwrap();
        assert!(c1.holds(id_hash("u1")) && c1.issued() == 1);
        assert!(book(&h).already_decided(decided_id("r1")));
        let late = T0 + 11 * WINDOW_MS;
        // A retry of r1 is still silent; u1 asking again gets no second unit.
        feed(&mut h, issue("r1", "c1", "u1"), late).unwrap();
        assert_eq!(outcomes_of(&h, "r1"), [Outcome::Issued]);
        let fresh = format!("r1-again-{restart}");
        feed(&mut h, issue(&fresh, "c1", "u1"), late).unwrap();
        assert_eq!(outcomes_of(&h, &fresh), [Outcome::Duplicate]);
        h.commit();
    }
    h.assert_restore_law();
}

#[test]
fn tombstones_are_committed_and_a_restart_keeps_what_is_left() {
    let mut h = harness();
    sold_out_at_t0(&mut h);
    let p = h.partition_of(0, "c1");
    // r3 decided half a window later, then the clock passes r2's window.
    feed(&mut h, issue("r3", "c1", "u3"), T0 + WINDOW_MS / 2).unwrap();
    h.commit();
    feed(&mut h, issue("r4", "c1", "u4"), T0 + WINDOW_MS + BUCKET_MS).unwrap();
    h.tick(0).unwrap();
    assert!(!book(&h).already_decided(decided_id("r2")));
    assert!(
        !h.changelog(p).contains(&(request_key("r2"), None)),
        "not durable before the commit"
    );
    // An abort brings the expired entries back; the replay expires them again.
    let before_abort = h.abort_and_replay();
    assert!(!before_abort.is_empty());
    assert!(!book(&h).already_decided(decided_id("r2")));
    h.tick(0).unwrap();
    h.commit();
    let log = h.changelog(p);
    assert!(log.contains(&(request_key("r2"), None)), "r2's tombstone");
    assert!(
        !log.contains(&(request_key("admin"), None)),
        "accepted terms are kept"
    );
    assert!(!log.contains(&(request_key("r1"), None)));
    assert!(!log.contains(&(request_key("r3"), None)));
    let live = book(&h).clone();
    h.restart();
    assert_eq!(book(&h), &live);
    h.crash_and_restore();
    assert_eq!(book(&h), &live);
    for (r, kept) in [
        ("r1", true),
        ("r2", false),
        ("r3", true),
        ("r4", true),
        ("admin", true),
    ] {
        assert_eq!(book(&h).already_decided(decided_id(r)), kept, "{r}");
    }
    // The restored clock carries on: r3 expires where it would have.
    feed(
        &mut h,
        issue("r5", "c1", "u5"),
        T0 + WINDOW_MS * 3 / 2 + BUCKET_MS,
    )
    .unwrap();
    h.tick(0).unwrap();
    h.commit();
    assert!(!book(&h).already_decided(decided_id("r3")));
    h.restart();
    assert!(!book(&h).already_decided(decided_id("r3")));
    assert!(book(&h).already_decided(decided_id("r5")));
    h.assert_restore_law();
}

#[test]
fn state_stays_flat_over_ten_windows_of_history() {
    const REQUESTS: i64 = 200_000;
    const STOCK: i64 = 100;
    let mut h = harness();
    feed(&mut h, create("admin", "c1", STOCK), T0).unwrap();
    // Ten windows of log time, evenly spread, one coupon (one partition),
    // a new user per request: STOCK ISSUED, the rest SOLD_OUT.
    let span = 10 * WINDOW_MS;
    let at = |n: i64| T0 + n * span / REQUESTS;
    let per_window = REQUESTS / 10;
    // What a window can hold: its buckets and the one being decided in.
    let bound = STOCK as usize + 1 + (per_window + per_window / 60 * 2) as usize;
    let (mut most, mut bytes_at_half) = (0, 0);
    for n in 0..REQUESTS {
        feed(
            &mut h,
            issue(&format!("r{n}"), "c1", &format!("u{n}")),
            at(n),
        )
        .unwrap();
        if n % 1_000 == 999 {
            // A retry from half a window ago is still caught.
            let old = n - per_window / 2;
            if old >= 0 {
                feed(
                    &mut h,
                    issue(&format!("r{old}"), "c1", &format!("u{old}")),
                    at(n),
                )
                .unwrap();
            }
        }
        if n % 5_000 == 4_999 {
            h.tick(0).unwrap();
            h.commit();
            most = most.max(book(&h).decided_len());
            if n == REQUESTS / 2 - 1 {
                bytes_at_half = book(&h).approx_bytes_of();
            }
        }
    }
    h.commit();
    let b = book(&h);
    assert!(
        most <= bound,
        "at most {most} decided entries, bound {bound} (window's share + issued)"
    );
    assert!(
        b.decided_len() >= per_window as usize * 9 / 10,
        "the last window is remembered: {}",
        b.decided_len()
    );
    assert_eq!(b.coupon("c1").unwrap().issued(), STOCK);
    assert_eq!(
        b.decided_len() - b.expirable_len(),
        STOCK as usize + 1,
        "the ISSUED requests and the create are kept"
    );
    let bytes = b.approx_bytes_of();
    assert!(
        bytes <= bytes_at_half * 3 / 2,
        "state bytes {bytes} at the end vs {bytes_at_half} half-way"
    );
    assert_eq!(
        decisions(&h).len() as i64,
        REQUESTS + 1,
        "one decision per request: no retry in the window decided twice"
    );
    h.assert_restore_law();
}

trait ApproxBytes {
    fn approx_bytes_of(&self) -> usize;
}

impl ApproxBytes for CouponBook {
    fn approx_bytes_of(&self) -> usize {
        surge_engine::PartitionState::approx_bytes(self)
    }
}
