//! The targets of the performance issue evaluated against the figures, and the printed
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

/// Every target with the figure it is judged on: `bound` is what the
/// performance issue asks for (met / NOT met), `goal` where it is headed.
pub fn targets(report: &Value) -> Value {
    let commit_ms = f(&report["commitIntervalMs"]);
    let mut out = Vec::new();
    let mut push = |scope: &str, what: String, value: f64, bound: f64, goal: f64, at_most: bool| {
        let met = if at_most {
            value > 0.0 && value <= bound
        } else {
            value >= bound
        };
        out.push(json!({
            "scope": scope, "target": what, "value": value,
            "bound": bound, "goal": goal, "met": met,
        }));
    };
    for s in report["scenarios"].as_array().into_iter().flatten() {
        let name = s["scenario"].as_str().unwrap_or("");
        let hot = name == "hot";
        let t = &s["throughput"];
        let copy = if hot { 0.5 } else { 0.8 };
        push(
            name,
            format!("surge/copy >= {copy}"),
            f(&t["ratioSurgeToCopy"]),
            copy,
            0.9,
            false,
        );
        let lock = if hot { 10.0 } else { 3.0 };
        push(
            name,
            format!("surge/lock >= {lock}"),
            f(&t["ratioSurgeToRedisLock"]),
            lock,
            lock,
            false,
        );
        if hot {
            push(
                name,
                "surge/atomic Lua >= 1".into(),
                f(&t["ratioSurgeToRedisAtomicLua"]),
                1.0,
                2.0,
                false,
            );
        }
        push(
            name,
            "surge p99 <= 150 ms".into(),
            f(&s["latency"]["surge"]["p99Ms"]),
            150.0,
            commit_ms + LATENCY_SLACK_MS,
            true,
        );
    }
    if let Some(g) = report["gateway"].as_object() {
        push(
            "gateway",
            "accepted/s / pipeline hot >= 0.5".into(),
            f(&g["ratioAcceptedToPipelineHot"]),
            0.5,
            1.0,
            false,
        );
        if g["batched"].is_object() {
            push(
                "gateway",
                "batched accepted/s / pipeline hot >= 0.5".into(),
                f(&g["batched"]["ratioAcceptedToPipelineHot"]),
                0.5,
                1.0,
                false,
            );
        }
    }
    if !report["state"].is_null() {
        push(
            "state run",
            format!("state <= {TARGET_BYTES_PER_USER:.0} B per issued user"),
            f(&report["state"]["stateBytesPerIssuedUser"]),
            TARGET_BYTES_PER_USER,
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
    if let Some(n) = report["brokerBefore"]["partitions"].as_u64() {
        println!(
            "broker before the run: {} topics, {n} partitions",
            report["brokerBefore"]["topics"]
        );
    }

    if !scenarios.is_empty() {
        coupon_tables(report, &scenarios);
    }
    let g = &report["gateway"];
    if !g.is_null() {
        println!(
            "\nthe front door: the hot sale's issue requests through `surge gateway`, {} in flight",
            g["concurrency"]
        );
        println!(
            "{:>10} {:>12} {:>9} {:>9} {:>14} {:>16}",
            "requests", "accepted/s", "202 p50", "202 p99", "pipeline hot/s", "accepted/pipeline"
        );
        println!(
            "{:>10} {:>12.0} {:>9.1} {:>9.1} {:>14.0} {:>16.2}",
            g["requests"],
            f(&g["acceptedPerSecond"]),
            f(&g["p50Ms"]),
            f(&g["p99Ms"]),
            f(&g["pipelineHotPerSecond"]),
            f(&g["ratioAcceptedToPipelineHot"]),
        );
        let b = &g["batched"];
        if b.is_object() {
            println!(
                "batched: {} per POST /coupon-requests, {} calls in flight (p50/p99 per call)",
                b["batchSize"], b["concurrency"]
            );
            println!(
                "{:>10} {:>12.0} {:>9.1} {:>9.1} {:>14.0} {:>16.2}   ({:.2} gateway CPU-s, {:.2} for single requests)",
                b["requests"],
                f(&b["acceptedPerSecond"]),
                f(&b["p50Ms"]),
                f(&b["p99Ms"]),
                f(&g["pipelineHotPerSecond"]),
                f(&b["ratioAcceptedToPipelineHot"]),
                f(&b["gatewayCpuSeconds"]),
                f(&g["gatewayCpuSeconds"]),
            );
        }
    }
    let targets = report["targets"].as_array().map_or(&[][..], Vec::as_slice);
    if targets.is_empty() {
        return;
    }
    println!("\ntargets (bound: the performance issue's; goal: where it is headed)");
    for t in targets {
        println!(
            "  {:<10} {:<34} {:>10.2}  {:<8} goal {}",
            t["scope"].as_str().unwrap_or(""),
            t["target"].as_str().unwrap_or(""),
            f(&t["value"]),
            if t["met"].as_bool() == Some(true) {
                "met"
            } else {
                "NOT met"
            },
            f(&t["goal"]),
        );
    }
}

/// Throughput, latency and memory of the coupon scenarios (hot, spread).
fn coupon_tables(report: &Value, scenarios: &[&Value]) {
    println!("\nthroughput, records/s, same preloaded requests (ratio = surge / other)");
    println!(
        "{:<8} {:>9} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
        "scenario",
        "requests",
        "copy ALOS",
        "surge EOS",
        "Redis lock",
        "atomic Lua",
        "surge/copy",
        "surge/lock",
        "surge/Lua"
    );
    for s in scenarios {
        let t = &s["throughput"];
        println!(
            "{:<8} {:>9} {:>11.0} {:>11.0} {:>11.0} {:>11.0} {:>11.2} {:>11.2} {:>11.2}",
            s["scenario"].as_str().unwrap_or(""),
            s["requests"],
            f(&t["copyAtLeastOnce"]),
            f(&t["surgeExactlyOnce"]),
            f(&t["redisLock"]),
            f(&t["redisAtomicLua"]),
            f(&t["ratioSurgeToCopy"]),
            f(&t["ratioSurgeToRedisLock"]),
            f(&t["ratioSurgeToRedisAtomicLua"]),
        );
    }
    println!(
        "\nper core: requests decided per CPU-second of the pipeline process \
         (all its threads, start-up included)"
    );
    for s in scenarios {
        let t = &s["throughput"];
        println!(
            "{:<8} {:>11.0} per CPU-s  ({:.2} CPU-s for {} requests)",
            s["scenario"].as_str().unwrap_or(""),
            f(&t["surgeRequestsPerCpuSecond"]),
            f(&t["surgeCpuSeconds"]),
            s["requests"].as_u64().unwrap_or(0) + s["coupons"].as_u64().unwrap_or(0),
        );
    }

    println!(
        "\nlatency, ms, at a fixed offered rate (surge: request -> decision visible to read_committed,\n\
         after a 1 s warm-up, and p99 with it; lock: per operation, and from the moment offered)"
    );
    println!(
        "{:<8} {:>7} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9} {:>13} {:>13} {:>8} {:>8} {:>12}",
        "scenario",
        "rate/s",
        "surge p50",
        "surge p99",
        "p99 w/wu",
        "commit avg",
        "lock p50",
        "lock p99",
        "lock p99 offr",
        "lock served/s",
        "Lua p50",
        "Lua p99",
        "Lua p99 offr"
    );
    for s in scenarios {
        let l = &s["latency"];
        println!(
            "{:<8} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>10.1} {:>9.1} {:>9.1} {:>13.1} {:>13.0} {:>8.1} {:>8.1} {:>12.1}",
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
            f(&l["redisAtomicLua"]["p50Ms"]),
            f(&l["redisAtomicLua"]["p99Ms"]),
            f(&l["redisAtomicLua"]["fromOfferedP99Ms"]),
        );
    }
    // Which half of surge's latency moved: waiting to be decided (input
    // fetch, a busy or committing loop) or waiting to be visible (the rest
    // of the batch, the commit, the reader's fetch).
    for s in scenarios {
        let l = &s["latency"]["surge"];
        println!(
            "{:<8} surge p50/p99: request -> decision {:.0}/{:.0} ms, decision -> visible {:.0}/{:.0} ms",
            s["scenario"].as_str().unwrap_or(""),
            f(&l["toDecisionP50Ms"]),
            f(&l["toDecisionP99Ms"]),
            f(&l["decisionToVisibleP50Ms"]),
            f(&l["decisionToVisibleP99Ms"]),
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
