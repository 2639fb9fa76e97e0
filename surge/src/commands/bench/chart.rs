//! The bench result as an SVG: throughput of the three designs per scenario
//! (grouped bars on one scale) and the latency percentiles beside them.

use serde_json::Value;

const W: f64 = 900.0;
const H: f64 = 360.0;

pub fn svg(report: &Value) -> String {
    let scenarios: Vec<&Value> = report["scenarios"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let series = [
        ("copyAtLeastOnce", "at-least-once copy (ceiling)", "#9aa5b1"),
        ("surgeExactlyOnce", "surge, exactly once", "#2f6fdf"),
        ("redisLock", "Redis lock per coupon", "#d9534f"),
    ];
    let max = scenarios
        .iter()
        .flat_map(|s| series.iter().map(move |(k, _, _)| f(&s["throughput"][*k])))
        .fold(1.0, f64::max);
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="20" y="24" font-size="16">surge bench — throughput (records/s, {} build)</text>
"#,
        report["build"].as_str().unwrap_or("")
    );
    let (left, top, plot_h, group_w) = (40.0, 50.0, 220.0, 140.0);
    for (i, s) in scenarios.iter().enumerate() {
        let gx = left + i as f64 * (group_w + 30.0);
        for (j, (key, _, color)) in series.iter().enumerate() {
            let v = f(&s["throughput"][*key]);
            let h = plot_h * v / max;
            let x = gx + j as f64 * 42.0;
            let y = top + plot_h - h;
            out += &format!(
                r#"<rect x="{x:.1}" y="{y:.1}" width="36" height="{h:.1}" fill="{color}"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{v:.0}</text>
"#,
                x + 18.0,
                y - 4.0
            );
        }
        out += &format!(
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{} (EOS/copy {:.2}, EOS/lock {:.1})</text>
"#,
            gx + 63.0,
            top + plot_h + 18.0,
            s["scenario"].as_str().unwrap_or(""),
            f(&s["throughput"]["ratioSurgeToCopy"]),
            f(&s["throughput"]["ratioSurgeToRedisLock"])
        );
    }
    for (j, (_, label, color)) in series.iter().enumerate() {
        let y = top + plot_h + 40.0 + j as f64 * 16.0;
        out += &format!(
            r#"<rect x="{left}" y="{:.1}" width="10" height="10" fill="{color}"/><text x="{:.1}" y="{:.1}">{label}</text>
"#,
            y - 9.0,
            left + 16.0,
            y
        );
    }
    // Latency panel.
    let lx = W - 300.0;
    out += &format!(
        r#"<text x="{lx}" y="{:.1}" font-size="14">latency at a fixed rate (ms)</text>
"#,
        top
    );
    for (i, s) in scenarios.iter().enumerate() {
        let l = &s["latency"];
        out += &format!(
            r#"<text x="{lx}" y="{:.1}">{} @ {}/s: surge p50 {:.1}, p99 {:.1}; lock p50 {:.1}, p99 {:.1}</text>
"#,
            top + 24.0 + i as f64 * 18.0,
            s["scenario"].as_str().unwrap_or(""),
            l["offeredRate"],
            f(&l["surgeP50Ms"]),
            f(&l["surgeP99Ms"]),
            f(&l["redisLockP50Ms"]),
            f(&l["redisLockP99Ms"])
        );
    }
    out += "</svg>\n";
    out
}
