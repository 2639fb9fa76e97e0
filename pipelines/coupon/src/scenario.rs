//! Flash-sale workloads: the coupons with their stock, then a stream of
//! issue requests from a population of users, some of them upstream retries
//! (the same request id again). Deterministic for a seed. Used by
//! `surge loadgen` and by the tests.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use surge_schemas::coupon::{CouponAction, CouponCommand};

/// What to generate.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Coupon ids are `<prefix>-<n>`; request ids `<prefix>-req-<n>`; users `<prefix>-user-<n>`.
    pub prefix: String,
    pub coupons: usize,
    pub stock: i64,
    pub users: usize,
    /// Issue requests to send (retries included).
    pub requests: usize,
    /// Share of requests that re-send an earlier request id.
    pub duplicate_ratio: f64,
    pub seed: u64,
}

impl Scenario {
    pub fn coupon_ids(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.coupons).map(|c| format!("{}-{c}", self.prefix))
    }

    /// The create commands, then the requests, in the order to send them.
    pub fn commands(&self) -> impl Iterator<Item = CouponCommand> + '_ {
        let creates = self.coupon_ids().map(|id| CouponCommand {
            request_id: format!("{id}-create"),
            coupon_id: id,
            requested_at: surge_schemas::now(),
            command: CouponAction::Create {
                stock: self.stock,
                active_from: None,
                active_until: None,
                discount: None,
            },
        });
        creates.chain(Requests {
            s: self,
            rng: StdRng::seed_from_u64(self.seed),
            sent: 0,
            recent: VecDeque::new(),
        })
    }
}

struct Requests<'a> {
    s: &'a Scenario,
    rng: StdRng,
    sent: usize,
    /// Recent requests, for retries (bounded: retries come soon after the original).
    recent: VecDeque<CouponCommand>,
}

impl Iterator for Requests<'_> {
    type Item = CouponCommand;

    fn next(&mut self) -> Option<CouponCommand> {
        if self.sent >= self.s.requests {
            return None;
        }
        self.sent += 1;
        if !self.recent.is_empty() && self.rng.random_bool(self.s.duplicate_ratio.clamp(0.0, 1.0)) {
            let i = self.rng.random_range(0..self.recent.len());
            return Some(self.recent[i].clone());
        }
        let coupon = self.rng.random_range(0..self.s.coupons.max(1));
        let user = self.rng.random_range(0..self.s.users.max(1));
        let cmd = CouponCommand {
            request_id: format!("{}-req-{}", self.s.prefix, self.sent),
            coupon_id: format!("{}-{coupon}", self.s.prefix),
            requested_at: surge_schemas::now(),
            command: CouponAction::Issue {
                user_id: format!("{}-user-{user}", self.s.prefix),
            },
        };
        if self.recent.len() >= 10_000 {
            self.recent.pop_front();
        }
        self.recent.push_back(cmd.clone());
        Some(cmd)
    }
}
