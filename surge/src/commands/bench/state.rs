//! State bytes per issued user, measured where the figure means something:
//! a spread sale in which (almost) every request issues a unit — as many
//! distinct users as requests, stock above demand, no retries. On the
//! throughput backlogs most requests are duplicates or sold out, so their
//! state is mostly the request-id dedupe set and "per issued user" would
//! divide it by a small number.

use std::path::Path;

use serde_json::{json, Value};
use surge_core::Settings;
use surge_coupon::scenario::Scenario;
use surge_schemas::coupon::CouponCommand;
use surge_schemas::Contract;

use super::pipeline::decide_backlog;
use super::sandbox::Sandbox;
use super::say;
use crate::commands::loadgen;

/// The target: at most this many bytes of pipeline state per issued user.
pub const TARGET_BYTES_PER_USER: f64 = 64.0;

pub async fn run(
    settings: &Settings,
    config: &Path,
    out_dir: &Path,
    run_id: &str,
    users: usize,
    coupons: usize,
    seed: u64,
) -> anyhow::Result<Value> {
    let (sandbox, logs) = Sandbox::for_step(settings, run_id, "state", out_dir).await?;
    let sale = Scenario {
        prefix: format!("s{run_id}"),
        coupons: coupons.max(1),
        // Never sold out: every distinct (coupon, user) issues.
        stock: users as i64,
        users,
        requests: users,
        duplicate_ratio: 0.0,
        seed,
    };
    say(format!(
        "state: {users} users over {} coupons into {}",
        sale.coupons,
        sandbox.topic(CouponCommand::TOPIC)
    ));
    loadgen::kafka::send(&sale, 0, &sandbox.settings).await?;
    let (_, pipeline) =
        decide_backlog(&sandbox, config, &logs, sale.coupons + sale.requests).await?;
    let figures = pipeline.settled_figures().await;
    pipeline.stop();
    sandbox.drop_topics().await;
    let per_user = figures.state_bytes / figures.issued.max(1.0);
    Ok(json!({
        "users": users,
        "coupons": sale.coupons,
        "requests": sale.requests,
        "issued": figures.issued,
        "stateBytes": figures.state_bytes,
        "stateBytesPerIssuedUser": per_user,
        "pipelinePeakRssBytes": figures.peak_rss_bytes,
        "targetMet": figures.issued > 0.0 && per_user <= TARGET_BYTES_PER_USER,
    }))
}
