//! What the payment and order scenarios run beside the broker: this binary's
//! own `surge pg-sim` and `surge pipeline <name>` as child processes, each
//! configured only through SURGE_* variables (a bench prefix, its own group
//! and transactional identity, metrics on a free port), and pg-sim's ledger
//! read and dropped afterwards.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use surge_core::Names;

use super::say;

/// `surge pg-sim` with its own ledger `schema`, answering every call after
/// exactly `latency_ms` and nothing else (no declines, errors or hangs),
/// whatever the config file says. Returns it and its address once listening.
pub async fn pg_sim(
    config: &Path,
    schema: &str,
    latency_ms: f64,
    log: PathBuf,
) -> anyhow::Result<(Child, String)> {
    let mut sim = Child::spawn(
        config,
        &["pg-sim"],
        &[
            ("SURGE_PG_SIM__LISTEN", "127.0.0.1:0".into()),
            ("SURGE_PG_SIM__SCHEMA", schema.into()),
            (
                "SURGE_PG_SIM__FAULTS__LATENCY_MEDIAN_MS",
                latency_ms.to_string(),
            ),
            ("SURGE_PG_SIM__FAULTS__LATENCY_SIGMA", "0".into()),
            ("SURGE_PG_SIM__FAULTS__DECLINE_RATIO", "0".into()),
            ("SURGE_PG_SIM__FAULTS__ERROR_BEFORE_RATIO", "0".into()),
            ("SURGE_PG_SIM__FAULTS__ERROR_AFTER_RATIO", "0".into()),
            ("SURGE_PG_SIM__FAULTS__TIMEOUT_AFTER_RATIO", "0".into()),
            ("SURGE_PG_SIM__FAULTS__CONFLICT_RATIO", "0".into()),
        ],
        log,
    )?;
    let address = sim
        .wait_for("pg-sim listening address=", Duration::from_secs(60))
        .await?;
    Ok((sim, address))
}

/// `surge pipeline <name>` on the topics under `prefix`, with its own group
/// and transactional identity (so it never joins or fences a real
/// instance), metrics on a free port and no injected aborts; `extra` adds
/// settings. Its output goes to `<logs>/pipeline-<name>.log`.
pub fn pipeline(
    config: &Path,
    prefix: &str,
    name: &str,
    extra: &[(&str, String)],
    logs: &Path,
) -> anyhow::Result<Child> {
    let section = name.to_uppercase();
    let mut env: Vec<(String, String)> = vec![
        ("SURGE_TOPICS__NAME_PREFIX".into(), prefix.into()),
        (
            format!("SURGE_PIPELINES__{section}__GROUP_ID"),
            Names::new(prefix).pipeline_group(name),
        ),
        (
            format!("SURGE_PIPELINES__{section}__INSTANCE_ID"),
            "bench".into(),
        ),
        (
            format!("SURGE_PIPELINES__{section}__METRICS_LISTEN"),
            "127.0.0.1:0".into(),
        ),
        (
            format!("SURGE_PIPELINES__{section}__INJECT_ABORT_RATIO"),
            "0".into(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    Child::spawn(
        config,
        &["pipeline", name],
        &env,
        logs.join(format!("pipeline-{name}.log")),
    )
}

/// Waits until `pipeline` owns its partitions: group join and state restore
/// are not what a scenario measures.
pub async fn until_assigned(pipeline: &mut Child) -> anyhow::Result<()> {
    pipeline
        .wait_for("partitions assigned and restored", Duration::from_secs(120))
        .await
        .map(|_| ())
}

/// Approved charges in pg-sim's ledger whose idempotency key starts with
/// `key_prefix` ("" for all).
pub async fn approved_charges(url: &str, schema: &str, key_prefix: &str) -> anyhow::Result<i64> {
    let pool = sqlx::PgPool::connect(url).await.context("postgres")?;
    let count: Result<i64, _> = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{schema}\".payments \
         WHERE kind = 'CHARGE' AND status = 'APPROVED' AND starts_with(key, $1)"
    ))
    .bind(key_prefix)
    .fetch_one(&pool)
    .await;
    pool.close().await;
    count.with_context(|| format!("reading pg-sim's ledger {schema}"))
}

/// Drops a run's ledger (best effort: a leftover is only rows).
pub async fn drop_schema(url: &str, schema: &str) {
    // Quiet: PostgreSQL notices each table the cascade drops.
    let options = url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .map(|o| o.options([("client_min_messages", "warning")]));
    let outcome = match options {
        Ok(o) => sqlx::PgPool::connect_with(o).await,
        Err(e) => Err(e),
    };
    let outcome = match outcome {
        Ok(pool) => {
            let r = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .execute(&pool)
                .await
                .map(|_| ());
            pool.close().await;
            r
        }
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        say(format!("could not drop schema {schema}: {e}"));
    }
}

/// A child process of this binary, configured through SURGE_* variables,
/// its output in `log`. SIGTERM and wait when dropped, on every path out.
pub struct Child {
    child: std::process::Child,
    pub log: PathBuf,
    exited: bool,
}

impl Child {
    pub fn spawn(
        config: &Path,
        args: &[&str],
        env: &[(&str, String)],
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let file = std::fs::File::create(&log)?;
        let child = Command::new(std::env::current_exe()?)
            .arg("--config")
            .arg(config)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()?;
        Ok(Self {
            child,
            log,
            exited: false,
        })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the log has a line with `needle`; returns the word right
    /// after it (e.g. the address after `address=`).
    pub async fn wait_for(&mut self, needle: &str, within: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some((_, rest)) = text.split_once(needle) {
                return Ok(rest.split_whitespace().next().unwrap_or("").to_string());
            }
            if let Some(status) = self.child.try_wait()? {
                self.exited = true;
                bail!(
                    "exited ({status}) before logging {needle:?}; see {}",
                    self.log.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "no {needle:?} within {within:?}; see {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Child {
    /// SIGTERM (a pipeline commits or aborts and leaves its group), then
    /// SIGKILL if it has not exited within [`STOP_WITHIN`]: one stuck in a
    /// commit against a broker that is gone must not hang the bench.
    fn drop(&mut self) {
        if self.exited {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child, whose pid stays ours until waited on.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_WITHIN;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        say(format!(
            "pid {pid} did not stop within {STOP_WITHIN:?} of SIGTERM: killed; see {}",
            self.log.display()
        ));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a child may take to stop after SIGTERM.
const STOP_WITHIN: Duration = Duration::from_secs(30);
