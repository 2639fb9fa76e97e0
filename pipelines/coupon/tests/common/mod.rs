//! Shared by the coupon pipeline's harness tests: a harness over the
//! processor, command builders and readers of what it wrote.
#![allow(dead_code)]

use chrono::DateTime;
use surge_coupon::CouponProcessor;
use surge_engine::harness::Harness;
use surge_engine::{Millis, Reject};
use surge_schemas::coupon::{CouponAction, CouponCommand, CouponDecision};
use surge_schemas::TopicCodec;

pub const RESULTS: &str = "coupon-result";
pub const REPLIES: &str = "order-replies";
pub const PARTITIONS: i32 = 6;

/// The processor as `surge pipeline coupon` builds it, with offline codecs.
pub fn processor() -> CouponProcessor {
    CouponProcessor::new(
        TopicCodec::offline(1),
        TopicCodec::offline(2),
        RESULTS,
        REPLIES,
    )
}

/// `p` on coupon-issue and its two outputs, `PARTITIONS` each.
pub fn harness_of(p: CouponProcessor) -> Harness<CouponProcessor> {
    Harness::new(
        p,
        &[("coupon-issue", PARTITIONS)],
        &[(RESULTS, PARTITIONS), (REPLIES, PARTITIONS)],
    )
}

/// A command sent at `at` (its requestedAt; the log time is the feed's).
pub fn cmd(request: &str, coupon: &str, at: Millis, command: CouponAction) -> CouponCommand {
    CouponCommand {
        request_id: request.into(),
        coupon_id: coupon.into(),
        requested_at: DateTime::from_timestamp_millis(at).unwrap(),
        command,
    }
}

pub fn issue(request: &str, coupon: &str, user: &str) -> CouponCommand {
    cmd(
        request,
        coupon,
        1_000,
        CouponAction::Issue {
            user_id: user.into(),
        },
    )
}

pub fn create(request: &str, coupon: &str, stock: i64) -> CouponCommand {
    cmd(
        request,
        coupon,
        0,
        CouponAction::Create {
            stock,
            active_from: None,
            active_until: None,
            discount: None,
        },
    )
}

/// Feeds `c` keyed by its coupon, with log time `at`.
pub fn feed_at(
    h: &mut Harness<CouponProcessor>,
    c: CouponCommand,
    at: Millis,
) -> Result<(), Reject> {
    let key = c.coupon_id.clone();
    h.feed(0, &key, c, at).map(|_| ())
}

/// Every decision on coupon-result (committed, then pending), in order.
pub fn decisions(h: &Harness<CouponProcessor>) -> Vec<CouponDecision> {
    let codec = TopicCodec::<CouponDecision>::offline(1);
    h.committed()
        .iter()
        .chain(h.pending())
        .filter(|s| s.topic == RESULTS)
        .map(|s| futures::executor::block_on(codec.decode(s.payload.as_deref())).unwrap())
        .collect()
}
