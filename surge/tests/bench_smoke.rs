//! `surge bench --quick` end to end on the real stack: every figure is
//! measured (positive), the ratios are the quotients of the figures they
//! compare, the targets are evaluated, and the JSON and SVG are written.
//! The figures themselves mean nothing at this size; timing is never asserted.

mod common;

use common::{stdout, surge};

#[test]
fn bench_quick_measures_every_figure_and_writes_json_and_svg() {
    let out_dir = common::repo_root()
        .join("target/test-logs")
        .join(common::unique("bench"));
    let out = surge(
        &["bench", "--quick", "--out", out_dir.to_str().unwrap()],
        &[],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("bench.json")).unwrap())
            .unwrap();
    let scenarios = report["scenarios"].as_array().unwrap();
    assert_eq!(
        scenarios
            .iter()
            .map(|s| s["scenario"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["hot", "spread"]
    );
    for s in scenarios {
        let f = |v: &serde_json::Value| v.as_f64().unwrap_or(-1.0);
        let t = &s["throughput"];
        for k in ["copyAtLeastOnce", "surgeExactlyOnce", "redisLock"] {
            assert!(f(&t[k]) > 0.0, "{k} measured: {s}");
        }
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
        assert!(close(
            f(&t["ratioSurgeToCopy"]),
            f(&t["surgeExactlyOnce"]) / f(&t["copyAtLeastOnce"])
        ));
        assert!(close(
            f(&t["ratioSurgeToRedisLock"]),
            f(&t["surgeExactlyOnce"]) / f(&t["redisLock"])
        ));
        let l = &s["latency"];
        assert!(l["samples"].as_u64().unwrap() > 0, "{s}");
        assert!(
            f(&l["surgeP50Ms"]) > 0.0 && f(&l["surgeP99Ms"]) >= f(&l["surgeP50Ms"]),
            "{s}"
        );
        assert!(
            f(&l["redisLockP50Ms"]) > 0.0 && f(&l["redisLockP99Ms"]) >= f(&l["redisLockP50Ms"]),
            "{s}"
        );
        let m = &s["memory"];
        assert!(f(&m["pipelinePeakRssBytes"]) > 0.0, "{s}");
        assert!(f(&m["issued"]) > 0.0 && f(&m["stateBytes"]) > 0.0, "{s}");
        assert!(close(
            f(&m["stateBytesPerIssuedUser"]),
            f(&m["stateBytes"]) / f(&m["issued"])
        ));
        assert_eq!(s["targets"].as_object().unwrap().len(), 4, "{s}");
    }
    let svg = std::fs::read_to_string(out_dir.join("bench.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("surge, exactly once"),
        "{svg}"
    );
    assert!(
        text.contains("EOS/copy") && text.contains("target "),
        "{text}"
    );
}
