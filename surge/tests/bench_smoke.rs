//! `surge bench --quick` end to end on the real stack: every figure is
//! measured (positive), the ratios are the quotients of the figures they
//! compare, every target is evaluated against the figure it names, and the
//! JSON and SVG are written; the payments scenario's runs each charged
//! exactly once per request; the orders scenario measured both designs at
//! both provider latencies, its audit held and the lock design's charges
//! are in pg-sim's ledger; the history scenario decided every request,
//! wrote its changelog and restored from it. The figures mean nothing at this size; timing
//! is never asserted.

mod common;

use common::{stdout, surge};
use serde_json::Value;

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(-1.0)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[test]
fn bench_quick_measures_every_figure_and_writes_json_and_svg() {
    let out_json = common::repo_root()
        .join("target/test-logs")
        .join(common::unique("bench"))
        .join("bench.json");
    let out = surge(
        &[
            "bench",
            "--quick",
            "--scenario",
            "hot,spread,payments,orders,history",
            "--out",
            out_json.to_str().unwrap(),
        ],
        &[],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out_json).unwrap()).unwrap();
    let scenarios = report["scenarios"].as_array().unwrap();
    assert_eq!(
        scenarios
            .iter()
            .map(|s| s["scenario"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["hot", "spread"]
    );
    for s in scenarios {
        let t = &s["throughput"];
        for k in [
            "copyAtLeastOnce",
            "surgeExactlyOnce",
            "redisLock",
            "redisAtomicLua",
            "surgeCpuSeconds",
        ] {
            assert!(f(&t[k]) > 0.0, "{k} measured: {s}");
        }
        assert!(close(
            f(&t["ratioSurgeToRedisAtomicLua"]),
            f(&t["surgeExactlyOnce"]) / f(&t["redisAtomicLua"])
        ));
        let handled = s["requests"].as_u64().unwrap() + s["coupons"].as_u64().unwrap();
        assert!(close(
            f(&t["surgeRequestsPerCpuSecond"]),
            handled as f64 / f(&t["surgeCpuSeconds"])
        ));
        assert!(close(
            f(&t["ratioSurgeToCopy"]),
            f(&t["surgeExactlyOnce"]) / f(&t["copyAtLeastOnce"])
        ));
        assert!(close(
            f(&t["ratioSurgeToRedisLock"]),
            f(&t["surgeExactlyOnce"]) / f(&t["redisLock"])
        ));
        let l = &s["latency"];
        assert!(f(&l["offeredRate"]) > 0.0, "{s}");
        for design in ["surge", "redisLock", "redisAtomicLua"] {
            let d = &l[design];
            assert!(d["samples"].as_u64().unwrap() > 0, "{design}: {s}");
            assert!(f(&d["achievedRate"]) > 0.0, "{design}: {s}");
            assert!(
                f(&d["p50Ms"]) > 0.0 && f(&d["p99Ms"]) >= f(&d["p50Ms"]),
                "{design}: {s}"
            );
        }
        assert!(f(&l["redisLock"]["fromOfferedP99Ms"]) > 0.0, "{s}");
        assert!(f(&l["redisAtomicLua"]["fromOfferedP99Ms"]) > 0.0, "{s}");
        assert!(f(&l["surge"]["p99WithWarmupMs"]) > 0.0, "{s}");
        // The two halves of each request's latency add up to it (to the
        // millisecond of the producer timestamp that divides them), so
        // neither half's percentile can exceed the whole's.
        let whole = &l["surge"];
        for half in ["toDecision", "decisionToVisible"] {
            let (p50, p99) = (
                f(&whole[format!("{half}P50Ms").as_str()]),
                f(&whole[format!("{half}P99Ms").as_str()]),
            );
            assert!(p50 >= 0.0 && p99 >= p50, "{half}: {s}");
            assert!(p99 <= f(&whole["p99Ms"]) + 1.0, "{half}: {s}");
            assert!(p50 <= f(&whole["p50Ms"]) + 1.0, "{half}: {s}");
        }
        // Every design decides the same requests first come, first served:
        // the same number of units goes out.
        let m = &s["memory"];
        assert_eq!(f(&m["issued"]), f(&s["redisLockIssued"]), "{s}");
        assert_eq!(f(&m["issued"]), f(&s["redisAtomicLuaIssued"]), "{s}");
        assert!(f(&m["pipelinePeakRssBytes"]) > 0.0, "{s}");
        assert!(f(&m["issued"]) > 0.0 && f(&m["stateBytes"]) > 0.0, "{s}");
        assert!(close(
            f(&m["stateBytesPerIssuedUser"]),
            f(&m["stateBytes"]) / f(&m["issued"])
        ));
    }
    let st = &report["state"];
    assert!(f(&st["issued"]) > 0.0 && f(&st["stateBytes"]) > 0.0, "{st}");
    assert!(f(&st["pipelinePeakRssBytes"]) > 0.0, "{st}");
    assert!(close(
        f(&st["stateBytesPerIssuedUser"]),
        f(&st["stateBytes"]) / f(&st["issued"])
    ));
    // The front door took the hot sale's issue requests, every one a 202.
    let g = &report["gateway"];
    let hot = &scenarios[0];
    assert_eq!(
        g["requests"].as_u64().unwrap(),
        hot["requests"].as_u64().unwrap(),
        "{g}"
    );
    assert!(
        f(&g["acceptedPerSecond"]) > 0.0 && f(&g["seconds"]) > 0.0,
        "{g}"
    );
    assert!(close(
        f(&g["acceptedPerSecond"]),
        f(&g["requests"]) / f(&g["seconds"])
    ));
    assert!(
        f(&g["p50Ms"]) > 0.0 && f(&g["p99Ms"]) >= f(&g["p50Ms"]),
        "{g}"
    );
    // The batched run took the same requests (fresh ids), every one PENDING.
    let b = &g["batched"];
    assert_eq!(b["requests"], g["requests"], "{b}");
    assert_eq!(b["batchSize"], 100, "{b}");
    assert_eq!(
        b["calls"].as_u64().unwrap(),
        g["requests"].as_u64().unwrap().div_ceil(100),
        "{b}"
    );
    assert!(close(
        f(&b["acceptedPerSecond"]),
        f(&b["requests"]) / f(&b["seconds"])
    ));
    assert!(close(
        f(&b["ratioAcceptedToPipelineHot"]),
        f(&b["acceptedPerSecond"]) / f(&g["pipelineHotPerSecond"])
    ));
    assert!(
        f(&b["p50Ms"]) > 0.0 && f(&b["p99Ms"]) >= f(&b["p50Ms"]),
        "{b}"
    );
    assert!(f(&b["gatewayCpuSeconds"]) > 0.0, "{b}");
    assert_eq!(
        f(&g["pipelineHotPerSecond"]),
        f(&hot["throughput"]["surgeExactlyOnce"])
    );
    assert!(close(
        f(&g["ratioAcceptedToPipelineHot"]),
        f(&g["acceptedPerSecond"]) / f(&g["pipelineHotPerSecond"])
    ));
    let p = &report["payments"];
    let (conc, seq) = (&p["concurrent"], &p["sequential"]);
    assert_eq!(conc["requests"], 300, "{p}");
    assert_eq!(seq["requests"], 50, "{p}");
    assert_eq!(seq["maxInFlight"], 1, "{p}");
    assert!(conc["maxInFlight"].as_u64().unwrap() > 1, "{p}");
    for r in [conc, seq] {
        // Exactly once: one approved charge in pg-sim's ledger per request.
        assert_eq!(r["ledgerApprovedCharges"], r["requests"], "{p}");
        assert_eq!(r["declined"], 0, "{p}");
        assert_eq!(r["partitionsUsed"], p["partitions"], "{p}");
        assert!(f(&r["seconds"]) > 0.0, "{p}");
        assert!(close(
            f(&r["paymentsPerSecond"]),
            f(&r["requests"]) / f(&r["seconds"])
        ));
        assert_eq!(r["latencySamples"], r["requests"], "{p}");
        assert!(
            f(&r["latencyP50Ms"]) > 0.0 && f(&r["latencyP99Ms"]) >= f(&r["latencyP50Ms"]),
            "{p}"
        );
    }
    assert_eq!(f(&p["providerLatencyMs"]), 50.0);
    assert_eq!(f(&p["perPartitionCeiling"]), 20.0);
    assert!(close(f(&p["ceilingPerSecond"]), 20.0 * f(&p["partitions"])));
    assert!(close(
        f(&p["ratioToCeiling"]),
        f(&conc["paymentsPerSecond"]) / f(&p["ceilingPerSecond"])
    ));
    assert!(close(
        f(&p["ratioConcurrentToSequential"]),
        f(&conc["paymentsPerSecond"]) / f(&seq["paymentsPerSecond"])
    ));
    assert!(close(
        f(&p["ratioSequentialToOneCaller"]),
        f(&seq["paymentsPerSecond"]) / 20.0
    ));

    let o = &report["orders"];
    assert_eq!(o["orders"], 400, "{o}");
    let runs = o["runs"].as_array().unwrap();
    assert_eq!(
        runs.iter()
            .map(|r| f(&r["providerLatencyMs"]))
            .collect::<Vec<_>>(),
        [0.0, 50.0]
    );
    for r in runs {
        for design in ["surge", "redisLock"] {
            let d = &r[design];
            assert_eq!(d["orders"], 400, "{design}: {r}");
            assert!(
                close(f(&d["ordersPerSecond"]), f(&d["orders"]) / f(&d["seconds"])),
                "{design}: {r}"
            );
            // Every order got exactly one final state, some paid and some
            // refused (the sale's stock and coupons are scarce).
            let states: u64 = d["byState"]
                .as_object()
                .unwrap()
                .values()
                .map(|n| n.as_u64().unwrap())
                .sum();
            assert_eq!(states, 400, "{design}: {r}");
            assert!(
                d["byState"]["PAID"].as_u64().unwrap_or(0) > 0,
                "{design}: {r}"
            );
            let rejected = d["byState"]["REJECTED"].as_u64().unwrap_or(0);
            let by: u64 = d["rejectedBy"]
                .as_object()
                .unwrap()
                .values()
                .map(|n| n.as_u64().unwrap())
                .sum();
            assert!(rejected > 0 && by == rejected, "{design}: {r}");
            // Units sold are measured (from the inventory, and from Redis)
            // and within the stock.
            let sold = d["unitsSold"].as_i64().unwrap();
            assert!(
                sold > 0 && sold <= d["stock"].as_i64().unwrap(),
                "{design}: {r}"
            );
        }
        assert!(close(
            f(&r["ratioSurgeToRedisLock"]),
            f(&r["surge"]["ordersPerSecond"]) / f(&r["redisLock"]["ordersPerSecond"])
        ));
        let l = &r["latency"];
        assert!(f(&l["offeredRate"]) >= 10.0, "{r}");
        for design in ["surge", "redisLock"] {
            let d = &l[design];
            assert!(d["samples"].as_u64().unwrap() > 0, "{design}: {r}");
            assert!(
                f(&d["p50Ms"]) > 0.0 && f(&d["p99Ms"]) >= f(&d["p50Ms"]),
                "{design}: {r}"
            );
            assert!(f(&d["p99WithWarmupMs"]) > 0.0, "{design}: {r}");
        }
        assert!(f(&l["redisLock"]["fromOfferedP99Ms"]) > 0.0, "{r}");
        // The audit read exactly both sales' orders.
        assert_eq!(
            r["audit"]["orders"].as_u64().unwrap(),
            400 + r["latencyOrders"].as_u64().unwrap(),
            "{r}"
        );
        // The lock design's charges are in pg-sim's ledger, one per order it
        // charged, over both of its runs (the throughput run's among them).
        let charged = r["redisLock"]["charged"].as_u64().unwrap();
        let both = r["redisLockCharged"].as_u64().unwrap();
        assert!(charged > 0 && both > charged, "{r}");
        assert_eq!(r["redisLockLedgerCharges"].as_u64().unwrap(), both, "{r}");
    }

    // Per coupon scenario: copy, lock, p99 (and atomic Lua on hot); the
    // gateway, the state and the payments target — each judged on the
    // figure reported above.
    let targets = report["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 11, "{targets:?}");
    let judged = |scope: &str, prefix: &str| {
        targets
            .iter()
            .find(|t| t["scope"] == scope && t["target"].as_str().unwrap().starts_with(prefix))
            .unwrap_or_else(|| panic!("target {scope} {prefix}"))
    };
    for s in scenarios {
        let name = s["scenario"].as_str().unwrap();
        let hot = name == "hot";
        let t = judged(name, "surge/copy");
        assert_eq!(f(&t["value"]), f(&s["throughput"]["ratioSurgeToCopy"]));
        assert_eq!(t["met"], f(&t["value"]) >= if hot { 0.5 } else { 0.8 });
        let t = judged(name, "surge/lock");
        assert_eq!(f(&t["value"]), f(&s["throughput"]["ratioSurgeToRedisLock"]));
        let bound = if hot { 10.0 } else { 3.0 };
        assert_eq!(t["met"], f(&t["value"]) >= bound);
        if hot {
            let t = judged(name, "surge/atomic Lua");
            assert_eq!(
                f(&t["value"]),
                f(&s["throughput"]["ratioSurgeToRedisAtomicLua"])
            );
            assert_eq!(t["met"], f(&t["value"]) >= 1.0);
        }
        let t = judged(name, "surge p99");
        assert_eq!(f(&t["value"]), f(&s["latency"]["surge"]["p99Ms"]));
        assert_eq!(f(&t["bound"]), 150.0);
        assert_eq!(f(&t["goal"]), f(&report["commitIntervalMs"]) + 50.0);
        assert_eq!(t["met"], f(&t["value"]) > 0.0 && f(&t["value"]) <= 150.0);
    }
    let t = judged("gateway", "accepted/s");
    assert_eq!(f(&t["value"]), f(&g["ratioAcceptedToPipelineHot"]));
    assert_eq!(t["met"], f(&t["value"]) >= 0.5);
    let t = judged("gateway", "batched accepted/s");
    assert_eq!(
        f(&t["value"]),
        f(&g["batched"]["ratioAcceptedToPipelineHot"])
    );
    assert_eq!(t["met"], f(&t["value"]) >= 0.5);
    let t = judged("state run", "state");
    assert_eq!(f(&t["value"]), f(&st["stateBytesPerIssuedUser"]));
    assert_eq!(t["met"], f(&t["value"]) <= 64.0);
    let t = judged("payments", "payments/ceiling");
    assert_eq!(f(&t["value"]), f(&p["ratioToCeiling"]));
    assert_eq!(t["met"], f(&t["value"]) >= 5.0);

    // History, bounded and unbounded: every request decided once, state
    // sampled while deciding, each restore read the changelog the run
    // wrote; the ratios are the quotients of the two runs' figures.
    let h = &report["history"];
    assert_eq!(h["requests"], 20_000, "{h}");
    for name in ["bounded", "unbounded"] {
        let r = &h[name];
        assert_eq!(
            r["decisions"].as_u64().unwrap(),
            20_000 + h["coupons"].as_u64().unwrap(),
            "{name}: {r}"
        );
        assert!(f(&r["changelogRecordsWritten"]) > 0.0, "{name}: {r}");
        for at in ["quarter", "half", "threeQuarters", "end"] {
            assert!(
                f(&r["stateBytesAt"][at]["stateBytes"]) > 0.0,
                "{name} {at}: {r}"
            );
        }
        let restores = r["restores"].as_array().unwrap();
        assert!(!restores.is_empty(), "{name}: {r}");
        for x in restores {
            assert!(f(&x["changelogRecords"]) > 0.0, "{name}: {x}");
            assert!(f(&x["seconds"]) > 0.0, "{name}: {x}");
            assert!(f(&x["stateBytes"]) > 0.0, "{name}: {x}");
            assert!(
                f(&x["tombstones"]) <= f(&x["changelogRecords"]),
                "{name}: {x}"
            );
        }
    }
    assert_eq!(h["bounded"]["dedupeWindowSeconds"], 60);
    assert!(
        h["unbounded"]["dedupeWindowSeconds"].as_u64().unwrap()
            > 60 * h["windows"].as_u64().unwrap(),
        "the baseline's window covers the whole history: {h}"
    );
    for key in ["stateBytes", "restoreRecords", "restoreSeconds"] {
        assert!(
            close(
                f(&h["boundedOverUnbounded"][key]),
                f(&h["bounded"][key]) / f(&h["unbounded"][key])
            ),
            "{key}: {h}"
        );
    }
    // Expiry writes tombstones; a window that covers the history writes none.
    assert!(f(&h["bounded"]["restoreTombstones"]) > 0.0, "{h}");
    assert_eq!(f(&h["unbounded"]["restoreTombstones"]), 0.0, "{h}");
    // A restart rebuilds only the window: the bounded run's requests
    // mostly expired (their log times span five windows), the baseline's
    // none. Sizes, not timings; at this size the cleaner has compacted
    // nothing, so the records read are not compared.
    assert!(
        f(&h["bounded"]["restoredStateBytes"]) < f(&h["unbounded"]["restoredStateBytes"]),
        "{h}"
    );

    let svg = std::fs::read_to_string(out_json.with_extension("svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    assert!(
        svg.contains("surge, exactly once") && svg.contains("bytes per issued user"),
        "{svg}"
    );
    for heading in [
        "throughput",
        "latency",
        "memory",
        "targets",
        "surge/copy",
        "atomic Lua",
        "the front door",
        "batched: 100 per POST /coupon-requests",
        "per CPU-s",
        "payments, 50 ms provider latency",
        "concurrent / sequential",
        "orders, end to end",
        "surge / redis lock",
        "bounded / unbounded: state",
    ] {
        assert!(text.contains(heading), "{heading}: {text}");
    }
}
