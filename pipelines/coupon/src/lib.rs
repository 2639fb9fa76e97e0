//! The FCFS coupon pipeline: reads coupon-issue (keyed by coupon id, so one
//! coupon's requests and admin commands are totally ordered in one
//! partition) and emits exactly one decision per request to coupon-result.
//!
//! `ledger` owns the per-partition state and its changelog encoding;
//! `decide` holds the business rules and nothing else.

pub mod decide;
pub mod ledger;

pub use decide::CouponProcessor;
pub use ledger::CouponBook;
