//! What a flash sale sends: the flags shared by `surge loadgen` and
//! `surge chaos`, turned into a deterministic [`Scenario`], and the pacing of
//! an offered rate.

use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use surge_coupon::scenario::Scenario;

#[derive(Debug, Clone, Args)]
pub struct Traffic {
    /// `hot`: every request on one coupon; `spread`: requests over many coupons.
    #[arg(long, value_enum, default_value = "hot")]
    pub scenario: ScenarioKind,
    /// Coupons to create (spread only; hot always uses one).
    #[arg(long, default_value_t = 50)]
    pub coupons: usize,
    /// Stock of each coupon.
    #[arg(long, default_value_t = 1_000)]
    pub stock: i64,
    /// Distinct users asking.
    #[arg(long, default_value_t = 20_000)]
    pub users: usize,
    /// Issue requests to send (upstream retries included).
    #[arg(long, default_value_t = 100_000)]
    pub requests: usize,
    /// Share of requests that re-send an earlier request id (upstream retries), 0 to 1.
    #[arg(long, default_value_t = 0.05, value_parser = parse_ratio)]
    pub duplicate_ratio: f64,
    /// Requests per second to offer; 0 sends as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seed of the generated traffic.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Prefix of coupon, request and user ids (default: a fresh `flash-<random>`).
    #[arg(long)]
    pub id_prefix: Option<String>,
}

/// A share or probability on the command line: a number from 0 to 1
/// (clap's value parser, so a bad one is a usage error naming the flag).
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    let ratio: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(format!("must be between 0 and 1, got {ratio}"));
    }
    Ok(ratio)
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ScenarioKind {
    Hot,
    Spread,
}

impl Traffic {
    /// The scenario with a fixed id prefix (a fresh one unless given).
    pub fn scenario(&self) -> Scenario {
        let prefix = self.id_prefix.clone().unwrap_or_else(|| {
            format!("flash-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
        });
        Scenario {
            prefix,
            coupons: if self.scenario == ScenarioKind::Hot {
                1
            } else {
                self.coupons.max(1)
            },
            stock: self.stock,
            users: self.users,
            requests: self.requests,
            duplicate_ratio: self.duplicate_ratio,
            seed: self.seed,
        }
    }
}

/// Holds the i-th send until its slot at the offered rate, on the async
/// timer (never blocking a worker thread). Sleeps only when at least a
/// millisecond ahead, so high rates send in small bursts.
pub struct Pace {
    started: Instant,
    gap: Option<Duration>,
}

impl Pace {
    pub fn new(rate: u64) -> Self {
        Self {
            started: Instant::now(),
            gap: (rate > 0).then(|| Duration::from_secs_f64(1.0 / rate as f64)),
        }
    }

    pub async fn slot(&self, i: usize) {
        let Some(gap) = self.gap else { return };
        let due = self.started + gap.mul_f64(i as f64);
        if due > Instant::now() + Duration::from_millis(1) {
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

/// Prints progress at most once a second (and at the end).
pub struct Progress {
    started: Instant,
    last: Instant,
    total: usize,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        let now = Instant::now();
        Self {
            started: now,
            last: now - Duration::from_secs(2),
            total,
        }
    }

    pub fn tick(&mut self, done: usize, what: &str) {
        if self.last.elapsed() >= Duration::from_secs(1) || done == self.total {
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            eprintln!(
                "[loadgen] {done:>9}/{} {what}  {:>8.0}/s",
                self.total,
                done as f64 / secs
            );
            self.last = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        traffic: Traffic,
    }

    #[test]
    fn the_duplicate_ratio_is_a_share_from_0_to_1() {
        let parse = |v: &str| Cli::try_parse_from(["loadgen", &format!("--duplicate-ratio={v}")]);
        for ok in ["0", "0.5", "1"] {
            assert_eq!(
                parse(ok).unwrap().traffic.duplicate_ratio,
                ok.parse::<f64>().unwrap()
            );
        }
        assert_eq!(
            Cli::try_parse_from(["loadgen"])
                .unwrap()
                .traffic
                .duplicate_ratio,
            0.05,
            "the default passes its own parser"
        );
        for bad in ["2", "-0.1", "NaN", "inf", "lots"] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
            let text = err.to_string();
            assert!(text.contains("--duplicate-ratio"), "{bad}: {text}");
        }
        assert!(parse("2")
            .unwrap_err()
            .to_string()
            .contains("must be between 0 and 1, got 2"));
    }
}
