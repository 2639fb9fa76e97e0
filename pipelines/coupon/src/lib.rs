//! The FCFS coupon pipeline: reads coupon-issue (keyed by coupon id, so one
//! coupon's requests and admin commands are totally ordered in one
//! partition) and emits exactly one decision per request to coupon-result.
//!
//! `ledger` owns the per-partition state and its changelog encoding;
//! `decide` holds the business rules and nothing else; `audit` checks the
//! invariants from the outside (topics only), for `surge verify` and tests.

pub mod audit;
pub mod decide;
pub mod ledger;
pub mod scenario;

pub use decide::CouponProcessor;
pub use ledger::CouponBook;
