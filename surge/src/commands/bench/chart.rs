//! The bench result as a hand-written SVG: throughput of the four designs
//! per scenario (grouped bars, one scale), latency p50/p99 of surge and of
//! both Redis designs per scenario with the latency target as a line, and the
//! state figure underneath. No plotting dependency for four dozen shapes.

use serde_json::Value;

const W: f64 = 1100.0;
const H: f64 = 400.0;
const TOP: f64 = 60.0;
const PLOT_H: f64 = 220.0;

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// One group of bars starting at `x`, scaled to `max`; returns the SVG.
fn bars(x: f64, values: &[(f64, &str)], max: f64, unit: &str) -> String {
    let mut out = String::new();
    for (j, (v, color)) in values.iter().enumerate() {
        let h = PLOT_H * (v / max).clamp(0.0, 1.0);
        let (bx, y) = (x + j as f64 * 40.0, TOP + PLOT_H - h);
        out += &format!(
            "<rect x=\"{bx:.1}\" y=\"{y:.1}\" width=\"34\" height=\"{h:.1}\" fill=\"{color}\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{v:.0}{unit}</text>\n",
            bx + 17.0,
            y - 4.0
        );
    }
    out
}

fn legend(x: f64, y: f64, items: &[(&str, &str)]) -> String {
    items
        .iter()
        .enumerate()
        .map(|(i, (label, color))| {
            let y = y + i as f64 * 16.0;
            format!(
                "<rect x=\"{x}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{color}\"/>\
                 <text x=\"{:.1}\" y=\"{y:.1}\">{label}</text>\n",
                y - 9.0,
                x + 16.0
            )
        })
        .collect()
}

pub fn svg(report: &Value) -> String {
    let scenarios: Vec<&Value> = report["scenarios"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"20\" y=\"26\" font-size=\"16\">surge bench ({} build, {} cores): throughput and latency, same machine and broker</text>\n",
        report["build"].as_str().unwrap_or(""),
        report["machine"]["cores"]
    );

    // Throughput panel.
    let series = [
        ("copyAtLeastOnce", "at-least-once copy (ceiling)", "#9aa5b1"),
        ("surgeExactlyOnce", "surge, exactly once", "#2f6fdf"),
        ("redisLock", "Redis lock per coupon", "#d9534f"),
        ("redisAtomicLua", "Redis, atomic Lua decision", "#f0ad4e"),
    ];
    let max = scenarios
        .iter()
        .flat_map(|s| series.iter().map(move |(k, _, _)| f(&s["throughput"][*k])))
        .fold(1.0, f64::max);
    out += &format!(
        "<text x=\"40\" y=\"{:.1}\" font-size=\"13\">records/s</text>\n",
        TOP - 16.0
    );
    for (i, s) in scenarios.iter().enumerate() {
        let x = 40.0 + i as f64 * 170.0;
        let values: Vec<(f64, &str)> = series
            .iter()
            .map(|(k, _, c)| (f(&s["throughput"][*k]), *c))
            .collect();
        out += &bars(x, &values, max, "");
        out += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{}: surge/copy {:.2}, /lock {:.1}, /Lua {:.2}</text>\n",
            x + 77.0,
            TOP + PLOT_H + 18.0,
            s["scenario"].as_str().unwrap_or(""),
            f(&s["throughput"]["ratioSurgeToCopy"]),
            f(&s["throughput"]["ratioSurgeToRedisLock"]),
            f(&s["throughput"]["ratioSurgeToRedisAtomicLua"])
        );
    }
    let labels: Vec<(&str, &str)> = series.iter().map(|(_, l, c)| (*l, *c)).collect();
    out += &legend(40.0, TOP + PLOT_H + 44.0, &labels);

    // Latency panel: p50 and p99 of both designs at the same offered rate.
    let lx = 520.0;
    let lat = [
        ("surge", "p50Ms", "#8fb3f0"),
        ("surge", "p99Ms", "#2f6fdf"),
        ("redisLock", "p50Ms", "#eea3a1"),
        ("redisLock", "p99Ms", "#d9534f"),
        ("redisAtomicLua", "p50Ms", "#f5cd8f"),
        ("redisAtomicLua", "p99Ms", "#f0ad4e"),
    ];
    let target = f(&report["commitIntervalMs"]) + 50.0;
    let lmax = scenarios
        .iter()
        .flat_map(|s| lat.iter().map(move |(d, k, _)| f(&s["latency"][*d][*k])))
        .fold(target * 1.2, f64::max);
    out += &format!(
        "<text x=\"{lx}\" y=\"{:.1}\" font-size=\"13\">latency at a fixed rate, ms</text>\n",
        TOP - 16.0
    );
    for (i, s) in scenarios.iter().enumerate() {
        let x = lx + i as f64 * 270.0;
        let values: Vec<(f64, &str)> = lat
            .iter()
            .map(|(d, k, c)| (f(&s["latency"][*d][*k]), *c))
            .collect();
        out += &bars(x, &values, lmax, "");
        out += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{} @ {}/s</text>\n",
            x + 117.0,
            TOP + PLOT_H + 18.0,
            s["scenario"].as_str().unwrap_or(""),
            s["latency"]["offeredRate"]
        );
    }
    let ty = TOP + PLOT_H - PLOT_H * target / lmax;
    out += &format!(
        "<line x1=\"{lx}\" x2=\"{:.1}\" y1=\"{ty:.1}\" y2=\"{ty:.1}\" stroke=\"black\" stroke-dasharray=\"4 3\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">p99 target {target:.0} ms</text>\n",
        W - 20.0,
        W - 20.0,
        ty - 3.0
    );
    out += &legend(
        lx,
        TOP + PLOT_H + 44.0,
        &[
            ("surge p50 / p99 (request to visible decision)", "#2f6fdf"),
            ("Redis lock p50 / p99 (per operation)", "#d9534f"),
            ("atomic Lua p50 / p99 (per operation)", "#f0ad4e"),
        ],
    );

    if !report["state"].is_null() {
        let st = &report["state"];
        out += &format!(
            "<text x=\"40\" y=\"{:.1}\">state: {:.1} bytes per issued user ({} users, every request issues; target 64)</text>\n",
            H - 12.0,
            f(&st["stateBytesPerIssuedUser"]),
            st["users"]
        );
    }
    out += "</svg>\n";
    out
}
