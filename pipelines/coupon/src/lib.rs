//! The FCFS coupon pipeline: reads coupon-issue (keyed by coupon id, so one
//! coupon's requests and admin commands are totally ordered in one
//! partition) and emits exactly one decision per request to coupon-result.
//!
//! `ledger` owns the per-partition state and its changelog encoding;
//! `decide` holds the business rules and nothing else; `audit` checks the
//! invariants from the outside (topics only), for `surge verify` and tests;
//! `gauges` shows each coupon's stock burn-down as metrics;
//! `stores` checks that a store's content equals the topic (invariant 6).

pub mod audit;
pub mod decide;
pub mod gauges;
pub mod ledger;
pub mod scenario;
pub mod stores;

pub use decide::CouponProcessor;
pub use gauges::StockGauges;
pub use ledger::CouponBook;
