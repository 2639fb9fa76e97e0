//! The real `surge pipeline coupon`, run as an operator would run it: a child
//! process of this very binary, configured only through SURGE_* variables
//! (the bench prefix, its own group, metrics on a free port). Measured from
//! outside: its /metrics and its peak RSS from /proc.

use std::path::Path;

use anyhow::bail;
use surge_schemas::coupon::CouponDecision;
use surge_schemas::Contract;

use super::children::{self, Child};
use super::sandbox::Sandbox;
use super::watch::{self, Seen};

pub struct PipelineProcess {
    child: Child,
}

/// What the pipeline reports about itself after a run.
#[derive(Debug, Default, Clone, Copy)]
pub struct PipelineFigures {
    /// `surge_pipeline_state_bytes`: approximate heap bytes of partition state.
    pub state_bytes: f64,
    /// Decisions with outcome ISSUED.
    pub issued: f64,
    pub commits: f64,
    pub commit_seconds: f64,
    /// VmHWM of the process, bytes.
    pub peak_rss_bytes: u64,
    /// CPU time of the whole process (every thread, librdkafka's included),
    /// user + system, seconds.
    pub cpu_seconds: f64,
    /// Decisions of every outcome.
    pub decisions: f64,
    /// Records written to the changelog (values and tombstones).
    pub changelog_records: f64,
    /// The latest restore: its seconds and the changelog records it read.
    pub restore_seconds: f64,
    pub restore_records: f64,
    pub restore_tombstones: f64,
}

impl PipelineProcess {
    /// Starts the pipeline on the topics under `prefix` with `extra`
    /// settings (SURGE_* variables); its output goes to
    /// `<logs>/pipeline-coupon.log`.
    pub fn spawn_with(
        config: &Path,
        prefix: &str,
        extra: &[(&str, String)],
        logs: &Path,
    ) -> anyhow::Result<Self> {
        let child = children::pipeline(config, prefix, surge_core::names::COUPON, extra, logs)?;
        Ok(Self { child })
    }

    /// Waits until the pipeline owns its partitions, their state restored.
    pub async fn until_restored(&mut self) -> anyhow::Result<()> {
        children::until_assigned(&mut self.child).await
    }

    pub fn log(&self) -> &Path {
        &self.child.log
    }

    /// Scrapes /metrics (address from the log, since the port is the OS's
    /// choice) and reads the peak RSS. Zeros for what could not be read.
    pub async fn figures(&self) -> PipelineFigures {
        let body = self.scrape().await.unwrap_or_default();
        PipelineFigures {
            state_bytes: metric(&body, "surge_pipeline_state_bytes"),
            issued: metric(&body, "surge_pipeline_decisions_total{outcome=\"ISSUED\""),
            commits: metric(&body, "surge_pipeline_commit_duration_seconds_count"),
            commit_seconds: metric(&body, "surge_pipeline_commit_duration_seconds_sum"),
            peak_rss_bytes: peak_rss_bytes(self.child.id()),
            cpu_seconds: cpu_seconds(self.child.id()),
            decisions: metric_sum(&body, "surge_pipeline_decisions_total{"),
            changelog_records: metric(&body, "surge_pipeline_records_out_total{kind=\"changelog\""),
            restore_seconds: metric(&body, "surge_pipeline_last_restore_duration_seconds"),
            restore_records: metric(&body, "surge_pipeline_restore_records_total"),
            restore_tombstones: metric(&body, "surge_pipeline_restore_tombstones_total"),
        }
    }

    /// [`Self::figures`] once two scrapes 200 ms apart agree: the watcher can
    /// see a committed batch a moment before the pipeline counts it.
    pub async fn settled_figures(&self) -> PipelineFigures {
        let mut last = self.figures().await;
        for _ in 0..25 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let now = self.figures().await;
            if now.issued == last.issued && now.commits == last.commits {
                return now;
            }
            last = now;
        }
        last
    }

    async fn scrape(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.child.log).ok()?;
        let (_, rest) = text.rsplit_once("metrics and health address=")?;
        let addr = rest.split_whitespace().next()?;
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    }

    /// SIGTERM (the pipeline commits or aborts and leaves the group) and wait.
    pub fn stop(self) {
        drop(self.child);
    }
}

/// Starts the pipeline on the sandbox's preloaded coupon-issue and counts
/// its decisions on coupon-result until `want` are visible. Returns them and
/// the still running pipeline (for latency runs and its figures).
pub async fn decide_backlog(
    sandbox: &Sandbox,
    config: &Path,
    logs: &Path,
    want: usize,
) -> anyhow::Result<(Seen, PipelineProcess)> {
    let (seen, pipeline, _) = decide_backlog_with(sandbox, config, logs, want, &[], false).await?;
    Ok((seen, pipeline))
}

/// [`decide_backlog`] with `extra` settings for the pipeline and, when
/// `sample`, its (decisions, state bytes) scraped every second meanwhile.
pub async fn decide_backlog_with(
    sandbox: &Sandbox,
    config: &Path,
    logs: &Path,
    want: usize,
    extra: &[(&str, String)],
    sample: bool,
) -> anyhow::Result<(Seen, PipelineProcess, Vec<(f64, f64)>)> {
    let pipeline = PipelineProcess::spawn_with(config, sandbox.prefix(), extra, logs)?;
    let topic = sandbox.topic(CouponDecision::TOPIC);
    let count = watch::count(sandbox, &topic, want, "pipeline");
    tokio::pin!(count);
    let mut samples = Vec::new();
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    let seen = loop {
        tokio::select! {
            seen = &mut count => break seen,
            _ = every.tick(), if sample => {
                let f = pipeline.figures().await;
                if f.decisions > 0.0 {
                    samples.push((f.decisions, f.state_bytes));
                }
            }
        }
    };
    match seen {
        Ok(seen) if seen.records >= want => {
            if sample {
                let f = pipeline.figures().await;
                samples.push((f.decisions, f.state_bytes));
            }
            Ok((seen, pipeline, samples))
        }
        Ok(seen) => {
            let log = pipeline.log().display().to_string();
            pipeline.stop();
            bail!(
                "the pipeline decided {} of {want} requests; see {log}",
                seen.records
            )
        }
        Err(e) => {
            pipeline.stop();
            Err(e)
        }
    }
}

/// The first sample whose series starts with `series` (0 when absent).
fn metric(body: &str, series: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The sum of every sample whose series starts with `series`.
fn metric_sum(body: &str, series: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Peak resident set (VmHWM) of a process, in bytes.
fn peak_rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// User + system CPU time of a process so far, in seconds (/proc/<pid>/stat
/// fields 14 and 15, in clock ticks).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    cpu_seconds_of(&stat)
}

fn cpu_seconds_of(stat: &str) -> f64 {
    // The command name (field 2) may hold spaces: count from its ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks / if hz > 0 { hz as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_time_is_user_plus_system_ticks() {
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        // pid (comm with a space) state ppid ... utime=250 stime=50 ...
        let stat = "42 (surge pipe) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 9 0 1 0 0";
        assert!((super::cpu_seconds_of(stat) - 300.0 / hz).abs() < 1e-9);
        assert_eq!(super::cpu_seconds_of("garbage"), 0.0);
    }

    #[test]
    fn metric_reads_the_series_value() {
        let body = "# HELP x\nsurge_pipeline_state_bytes 1234\n\
                    surge_pipeline_decisions_total{outcome=\"ISSUED\",pipeline=\"coupon\"} 7\n";
        assert_eq!(super::metric(body, "surge_pipeline_state_bytes"), 1234.0);
        assert_eq!(
            super::metric(body, "surge_pipeline_decisions_total{outcome=\"ISSUED\""),
            7.0
        );
        assert_eq!(super::metric(body, "absent"), 0.0);
    }
}
