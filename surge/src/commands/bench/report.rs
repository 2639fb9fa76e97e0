//! The targets of issue 6 evaluated against the figures, and the printed
//! report: one table per question (throughput, latency, memory), the ratios
//! beside the figures they divide, then every target with its value and
//! met / NOT met. Reporting only: nothing here fails a run.

use serde_json::{json, Value};

use super::state::TARGET_BYTES_PER_USER;

/// Latency target: p99 within the commit interval plus this, at half the
/// maximum rate.
const LATENCY_SLACK_MS: f64 = 50.0;

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// Every target with the figure it is judged on.
pub fn targets(report: &Value) -> Value {
    let commit_ms = f(&report["commitIntervalMs"]);
    let mut out = Vec::new();
    let mut push = |scope: &str, what: String, value: f64, target: f64, at_most: bool| {
        let met = if at_most {
            value > 0.0 && value <= target
        } else {
            value >= target
        };
        out.push(
            json!({ "scope": scope, "target": what, "value": value, "bound": target, "met": met }),
        );
    };
    for s in report["scenarios"].as_array().into_iter().flatten() {
        let name = s["scenario"].as_str().unwrap_or("");
        let t = &s["throughput"];
        push(
            name,
            "surge/copy >= 0.9".into(),
            f(&t["ratioSurgeToCopy"]),
            0.9,
            false,
        );
        let lock = if name == "hot" { 10.0 } else { 3.0 };
        push(
            name,
            format!("surge/lock >= {lock}"),
            f(&t["ratioSurgeToRedisLock"]),
            lock,
            false,
        );
        push(
            name,
            format!("surge p99 <= {:.0} ms", commit_ms + LATENCY_SLACK_MS),
            f(&s["latency"]["surge"]["p99Ms"]),
            commit_ms + LATENCY_SLACK_MS,
            true,
        );
    }
    if !report["state"].is_null() {
        push(
            "state run",
            format!("state <= {TARGET_BYTES_PER_USER:.0} B per issued user"),
            f(&report["state"]["stateBytesPerIssuedUser"]),
            TARGET_BYTES_PER_USER,
            true,
        );
    }
    Value::Array(out)
}

pub fn print(report: &Value) {
    let scenarios: Vec<&Value> = report["scenarios"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    println!(
        "surge bench: {} build, {} cores, commit interval {:.0} ms",
        report["build"].as_str().unwrap_or(""),
        report["machine"]["cores"],
        f(&report["commitIntervalMs"])
    );
    println!("$ {}", report["command"].as_str().unwrap_or(""));

    if !scenarios.is_empty() {
        coupon_tables(report, &scenarios);
    }
    let targets = report["targets"].as_array().map_or(&[][..], Vec::as_slice);
    if targets.is_empty() {
        return;
    }
    println!("\ntargets");
    for t in targets {
        println!(
            "  {:<10} {:<34} {:>10.2}  {}",
            t["scope"].as_str().unwrap_or(""),
            t["target"].as_str().unwrap_or(""),
            f(&t["value"]),
            if t["met"].as_bool() == Some(true) {
                "met"
            } else {
                "NOT met"
            }
        );
    }
}

/// Throughput, latency and memory of the coupon scenarios (hot, spread).
fn coupon_tables(report: &Value, scenarios: &[&Value]) {
    println!("\nthroughput, records/s, same preloaded requests (ratio = surge / other)");
    println!(
        "{:<8} {:>9} {:>11} {:>11} {:>11} {:>11} {:>11}",
        "scenario", "requests", "copy ALOS", "surge EOS", "Redis lock", "surge/copy", "surge/lock"
    );
    for s in scenarios {
        let t = &s["throughput"];
        println!(
            "{:<8} {:>9} {:>11.0} {:>11.0} {:>11.0} {:>11.2} {:>11.2}",
            s["scenario"].as_str().unwrap_or(""),
            s["requests"],
            f(&t["copyAtLeastOnce"]),
            f(&t["surgeExactlyOnce"]),
            f(&t["redisLock"]),
            f(&t["ratioSurgeToCopy"]),
            f(&t["ratioSurgeToRedisLock"]),
        );
    }

    println!(
        "\nlatency, ms, at a fixed offered rate (surge: request -> decision visible to read_committed,\n\
         after a 1 s warm-up, and p99 with it; lock: per operation, and from the moment offered)"
    );
    println!(
        "{:<8} {:>7} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9} {:>13} {:>13}",
        "scenario",
        "rate/s",
        "surge p50",
        "surge p99",
        "p99 w/wu",
        "commit avg",
        "lock p50",
        "lock p99",
        "lock p99 offr",
        "lock served/s"
    );
    for s in scenarios {
        let l = &s["latency"];
        println!(
            "{:<8} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>10.1} {:>9.1} {:>9.1} {:>13.1} {:>13.0}",
            s["scenario"].as_str().unwrap_or(""),
            l["offeredRate"],
            f(&l["surge"]["p50Ms"]),
            f(&l["surge"]["p99Ms"]),
            f(&l["surge"]["p99WithWarmupMs"]),
            f(&l["surgeMeanCommitMs"]),
            f(&l["redisLock"]["p50Ms"]),
            f(&l["redisLock"]["p99Ms"]),
            f(&l["redisLock"]["fromOfferedP99Ms"]),
            f(&l["redisLock"]["achievedRate"]),
        );
    }

    println!("\nmemory of the pipeline");
    println!(
        "{:<20} {:>13} {:>12} {:>9} {:>13}",
        "run", "peak RSS MiB", "state bytes", "issued", "B per issued"
    );
    let mib = |v: &Value| f(v) / 1_048_576.0;
    for s in scenarios {
        let m = &s["memory"];
        println!(
            "{:<20} {:>13.1} {:>12.0} {:>9.0} {:>13.1}",
            format!("{} backlog", s["scenario"].as_str().unwrap_or("")),
            mib(&m["pipelinePeakRssBytes"]),
            f(&m["stateBytes"]),
            f(&m["issued"]),
            f(&m["stateBytesPerIssuedUser"]),
        );
    }
    let st = &report["state"];
    if !st.is_null() {
        println!(
            "{:<20} {:>13.1} {:>12.0} {:>9.0} {:>13.1}   ({} users, {} coupons, every request issues)",
            "state run",
            mib(&st["pipelinePeakRssBytes"]),
            f(&st["stateBytes"]),
            f(&st["issued"]),
            f(&st["stateBytesPerIssuedUser"]),
            st["users"],
            st["coupons"],
        );
    }
}
