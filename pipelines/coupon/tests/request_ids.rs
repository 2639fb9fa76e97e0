//! A request id identifies one request of its coupon (issue 14): the same
//! id with the same content again is an upstream retry, decided once and
//! silently; the same id with another content for the same coupon is
//! dead-lettered as `request_id_reused`, never dropped silently, and never
//! answered with the first request's decision; the same id for another
//! coupon is another request.
//! Run through the engine's in-process harness (savepoints, commits,
//! restarts from the committed changelog), no services.

use surge_coupon::decide::REQUEST_ID_REUSED;
use surge_coupon::ledger::id_hash;
use surge_coupon::CouponProcessor;
use surge_engine::harness::Harness;
use surge_engine::Reject;
use surge_schemas::coupon::{CouponAction, CouponCommand, Discount, Outcome};
use surge_schemas::Money;

mod common;

use common::{cmd, create, decisions, feed_at, harness_of, issue, processor};

fn harness() -> Harness<CouponProcessor> {
    harness_of(processor())
}

fn redeem(request: &str, coupon: &str, order: &str, user: &str) -> CouponCommand {
    cmd(
        request,
        coupon,
        2_000,
        CouponAction::Redeem {
            order_id: order.into(),
            user_id: user.into(),
        },
    )
}

/// Feeds `c` where the engine would decide it: the partition owning its coupon.
fn feed(h: &mut Harness<CouponProcessor>, c: CouponCommand) -> Result<(), Reject> {
    feed_at(h, c, 1_000)
}

/// Feeds `c` and expects it to be dead-lettered as a reused id; returns the message.
fn feed_reused(h: &mut Harness<CouponProcessor>, c: CouponCommand) -> String {
    let what = format!("{c:?}");
    match feed(h, c) {
        Err(Reject::Poison { reason, message }) => {
            assert_eq!(reason, REQUEST_ID_REUSED, "{what}");
            message
        }
        Err(e) => panic!("{what}: rejected for a retry: {e}"),
        Ok(()) => panic!("{what}: a reused request id was not dead-lettered"),
    }
}

fn decisions_of(
    h: &Harness<CouponProcessor>,
    request: &str,
) -> Vec<(String, Option<String>, Outcome)> {
    decisions(h)
        .into_iter()
        .filter(|d| d.request_id == request)
        .map(|d| (d.coupon_id, d.user_id, d.outcome))
        .collect()
}

/// A coupon id other than `of` on the partition that owns `of`.
fn coupon_beside(h: &Harness<CouponProcessor>, of: &str) -> String {
    let p = h.partition_of(0, of);
    (0..)
        .map(|n| format!("{of}-{n}"))
        .find(|c| h.partition_of(0, c) == p)
        .unwrap()
}

fn reason_counts(h: &Harness<CouponProcessor>) -> Vec<String> {
    h.dead_letters().iter().map(|d| d.2.clone()).collect()
}

#[test]
fn a_retry_with_the_same_content_is_decided_once_and_silently() {
    let mut h = harness();
    feed(&mut h, create("admin", "c1", 5)).unwrap();
    feed(&mut h, issue("r1", "c1", "u1")).unwrap();
    feed(&mut h, redeem("o1/redeem", "c1", "o1", "u1")).unwrap();
    h.commit();
    let before = h.state(h.partition_of(0, "c1")).clone();
    // Retries, one with a new requested_at as a client's retry carries.
    feed(&mut h, issue("r1", "c1", "u1")).unwrap();
    feed(
        &mut h,
        cmd(
            "r1",
            "c1",
            9_999,
            CouponAction::Issue {
                user_id: "u1".into(),
            },
        ),
    )
    .unwrap();
    feed(&mut h, redeem("o1/redeem", "c1", "o1", "u1")).unwrap();
    feed(&mut h, create("admin", "c1", 5)).unwrap();
    h.commit();
    assert_eq!(
        decisions_of(&h, "r1"),
        vec![("c1".into(), Some("u1".into()), Outcome::Issued)]
    );
    assert_eq!(decisions(&h).len(), 3, "one decision per request");
    assert!(h.dead_letters().is_empty(), "{:?}", h.dead_letters());
    assert_eq!(h.state(h.partition_of(0, "c1")), &before);
    h.assert_restore_law();
}

/// A request id names a request of one coupon: the same id for another
/// coupon is another request, decided on that coupon's book whether or not
/// the two coupons share a partition (partitions cannot tell each other an
/// id is taken, and the answer must not depend on where a coupon lives).
#[test]
fn one_request_id_on_two_coupons_is_two_requests_wherever_they_live() {
    let mut h = harness();
    let beside = coupon_beside(&h, "c1");
    let elsewhere = (0..)
        .map(|n| format!("c1-far-{n}"))
        .find(|c| h.partition_of(0, c) != h.partition_of(0, "c1"))
        .unwrap();
    for (n, c) in ["c1", beside.as_str(), elsewhere.as_str()]
        .iter()
        .enumerate()
    {
        feed(&mut h, create(&format!("admin-{n}"), c, 5)).unwrap();
    }
    feed(&mut h, issue("r1", "c1", "u1")).unwrap();
    feed(&mut h, issue("r1", &beside, "u2")).unwrap();
    feed(&mut h, issue("r1", &elsewhere, "u3")).unwrap();
    h.commit();
    // Retries of each, before and after a restart, stay silent.
    h.restart();
    for _ in 0..2 {
        feed(&mut h, issue("r1", "c1", "u1")).unwrap();
        feed(&mut h, issue("r1", &beside, "u2")).unwrap();
        feed(&mut h, issue("r1", &elsewhere, "u3")).unwrap();
        h.crash_and_restore();
    }
    h.commit();
    let mut got = decisions_of(&h, "r1");
    got.sort();
    let mut want = vec![
        ("c1".to_string(), Some("u1".to_string()), Outcome::Issued),
        (beside.clone(), Some("u2".into()), Outcome::Issued),
        (elsewhere.clone(), Some("u3".into()), Outcome::Issued),
    ];
    want.sort();
    assert_eq!(got, want, "one decision per (coupon, request id)");
    assert!(h.dead_letters().is_empty(), "{:?}", h.dead_letters());
    // Within one coupon the id is taken: other content is a reuse.
    let message = feed_reused(&mut h, issue("r1", &beside, "u9"));
    assert!(
        message.starts_with(&format!(
            "request id r1 of coupon {beside} was first used for a different request"
        )) && message.ends_with("this one: issue for user u9"),
        "{message}"
    );
    h.commit();
    h.assert_restore_law();
}

#[test]
fn a_request_id_reused_for_another_user_is_dead_lettered() {
    let mut h = harness();
    let p = h.partition_of(0, "c1");
    feed(&mut h, create("admin", "c1", 5)).unwrap();
    feed(&mut h, issue("r1", "c1", "u1")).unwrap();
    let message = feed_reused(&mut h, issue("r1", "c1", "u9"));
    assert!(
        message.contains("request id r1 ") && message.ends_with("this one: issue for user u9"),
        "{message}"
    );
    h.commit();
    let c1 = h.state(p).coupon("c1").unwrap();
    assert!(c1.holds(id_hash("u1")) && !c1.holds(id_hash("u9")));
    assert_eq!(c1.issued(), 1);
    assert_eq!(
        decisions_of(&h, "r1"),
        vec![("c1".into(), Some("u1".into()), Outcome::Issued)]
    );
    assert_eq!(reason_counts(&h), vec![REQUEST_ID_REUSED]);
    h.assert_restore_law();
}

#[test]
fn a_request_id_reused_for_another_action_order_or_terms_is_dead_lettered() {
    let mut h = harness();
    feed(&mut h, create("admin", "c1", 5)).unwrap();
    feed(&mut h, issue("r1", "c1", "u1")).unwrap();
    feed(&mut h, redeem("o1/redeem", "c1", "o1", "u1")).unwrap();
    feed(
        &mut h,
        cmd(
            "adjust",
            "c1",
            0,
            CouponAction::AdjustStock {
                delta: 2,
                reason: None,
            },
        ),
    )
    .unwrap();
    h.commit();
    let p = h.partition_of(0, "c1");
    let before = h.state(p).clone();
    let decided = decisions(&h).len();
    let reuses = [
        // Another action under an issue's id.
        redeem("r1", "c1", "o1", "u1"),
        // Another order under a redemption's id.
        redeem("o1/redeem", "c1", "o2", "u1"),
        // Another action for the same order.
        cmd(
            "o1/redeem",
            "c1",
            2_000,
            CouponAction::Release {
                order_id: "o1".into(),
            },
        ),
        // Other admin terms under an admin request id.
        create("admin", "c1", 6),
        cmd(
            "admin",
            "c1",
            0,
            CouponAction::Create {
                stock: 5,
                active_from: None,
                active_until: None,
                discount: Some(Discount::fixed(Money(500))),
            },
        ),
        cmd(
            "adjust",
            "c1",
            0,
            CouponAction::AdjustStock {
                delta: -2,
                reason: None,
            },
        ),
    ];
    let n = reuses.len();
    for c in reuses {
        feed_reused(&mut h, c);
    }
    h.commit();
    assert_eq!(reason_counts(&h), vec![REQUEST_ID_REUSED; n]);
    assert_eq!(decisions(&h).len(), decided, "no decision for any reuse");
    assert_eq!(h.state(p), &before);
    assert_eq!(h.state(p).coupon("c1").unwrap().terms().unwrap().stock, 7);
}

#[test]
fn reuse_is_still_detected_after_a_restart_from_the_changelog() {
    let mut h = harness();
    let p = h.partition_of(0, "c1");
    feed(&mut h, create("admin-1", "c1", 5)).unwrap();
    feed(&mut h, issue("r1", "c1", "u1")).unwrap();
    feed(&mut h, redeem("o1/redeem", "c1", "o1", "u1")).unwrap();
    h.commit();
    h.restart();
    h.assert_restore_law();
    feed_reused(&mut h, issue("r1", "c1", "u9"));
    feed_reused(&mut h, redeem("o1/redeem", "c1", "o2", "u1"));
    feed_reused(&mut h, create("admin-1", "c1", 6));
    // Retries are still silent.
    feed(&mut h, issue("r1", "c1", "u1")).unwrap();
    feed(&mut h, redeem("o1/redeem", "c1", "o1", "u1")).unwrap();
    assert!(h.pending().is_empty(), "{:?}", h.pending());

    // A crash with an uncommitted decision: the replay decides it again,
    // and the restored book knows what it asked for.
    feed(&mut h, issue("r2", "c1", "u2")).unwrap();
    h.crash_and_restore();
    h.commit();
    assert_eq!(
        decisions_of(&h, "r2"),
        vec![("c1".into(), Some("u2".into()), Outcome::Issued)]
    );
    h.crash_and_restore();
    feed_reused(&mut h, issue("r2", "c1", "u3"));
    feed(&mut h, issue("r2", "c1", "u2")).unwrap();
    h.commit();
    // A reuse fed before a crash is dead-lettered again when replayed.
    let dead = h.dead_letters().len();
    feed_reused(&mut h, issue("r1", "c1", "u7"));
    h.crash_and_restore();
    assert_eq!(h.dead_letters().len(), dead + 2);
    h.commit();
    assert!(h.dead_letters().iter().all(|d| d.1 == p));
    assert_eq!(
        decisions_of(&h, "r1"),
        vec![("c1".into(), Some("u1".into()), Outcome::Issued)]
    );
    let c1 = h.state(p).coupon("c1").unwrap();
    assert_eq!(c1.issued(), 2, "u1 and u2, nobody else");
    h.assert_restore_law();
}
