//! The designs surge replaces, on one Redis, driven by the same concurrent
//! clients with the same requests as the pipeline:
//!
//! - [`Design::Lock`], as a naive seed backend does it: every issue request
//!   takes a Redis lock on its coupon (SET NX PX), reads the remaining stock
//!   and checks the issued set, decrements and adds the user, and unlocks
//!   (compare-and-delete, so a lock that expired is not stolen back);
//! - [`Design::AtomicLua`], what teams switch to when locks hurt: the whole
//!   FCFS decision — the coupon's window, its stock, its holder set, the
//!   decrement and the add — in one Lua script, one EVALSHA per request,
//!   atomic because Redis runs one script at a time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use redis::aio::MultiplexedConnection;
use redis::Script;
use surge_coupon::scenario::Scenario;
use surge_schemas::coupon::CouponAction;

use crate::commands::loadgen::traffic::Pace;

/// Throughput and per-request latency of one run.
#[derive(Debug, Default)]
pub struct LockRun {
    pub requests: usize,
    pub seconds: f64,
    pub issued: usize,
    /// Per operation: from the client taking the request to its unlock.
    pub latencies_ms: Vec<f64>,
    /// From the moment the request was offered (its slot at the rate) to the
    /// unlock: adds the wait for a free client when the design falls behind.
    pub offered_latencies_ms: Vec<f64>,
    pub lock_retries: usize,
}

/// Which Redis design decides the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Design {
    Lock,
    AtomicLua,
}

/// The whole decision, atomically. KEYS: remaining stock, holder set, window
/// hash (`from`/`until`, unix ms, absent = open); ARGV: user, now in unix ms.
/// Returns 0 issued, 1 sold out, 2 already held, 3 outside the window.
const DECIDE: &str = r#"
local w = redis.call('HMGET', KEYS[3], 'from', 'until')
local now = tonumber(ARGV[2])
if (w[1] and now < tonumber(w[1])) or (w[2] and now >= tonumber(w[2])) then return 3 end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 2 end
if tonumber(redis.call('GET', KEYS[1]) or '0') <= 0 then return 1 end
redis.call('DECR', KEYS[1])
redis.call('SADD', KEYS[2], ARGV[1])
return 0
"#;

const UNLOCK: &str = r#"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end"#;

/// Runs the scenario's requests through `design` with `clients` concurrent
/// clients, offered at `rate` per second (0: as fast as they go). Keys under
/// `ns`, removed after.
pub async fn run(
    url: &str,
    ns: &str,
    scenario: &Scenario,
    clients: usize,
    rate: u64,
    design: Design,
) -> anyhow::Result<LockRun> {
    let client = redis::Client::open(url).context("redis URL")?;
    let mut setup = client.get_multiplexed_async_connection().await?;
    let commands: Vec<_> = scenario.commands().collect();
    for c in &commands {
        if let CouponAction::Create {
            stock,
            active_from,
            active_until,
            ..
        } = c.command
        {
            let _: () = redis::cmd("SET")
                .arg(format!("{ns}:remaining:{}", c.coupon_id))
                .arg(stock)
                .query_async(&mut setup)
                .await?;
            let window = format!("{ns}:window:{}", c.coupon_id);
            for (field, at) in [("from", active_from), ("until", active_until)] {
                if let Some(at) = at {
                    let _: () = redis::cmd("HSET")
                        .arg(&window)
                        .arg(field)
                        .arg(at.timestamp_millis())
                        .query_async(&mut setup)
                        .await?;
                }
            }
        }
    }
    let requests: Arc<Vec<(String, String)>> = Arc::new(
        commands
            .iter()
            .filter_map(|c| match &c.command {
                CouponAction::Issue { user_id } => Some((c.coupon_id.clone(), user_id.clone())),
                _ => None,
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let pace = Arc::new(Pace::new(rate));
    let started = Instant::now();
    let gap = (rate > 0).then(|| Duration::from_secs_f64(1.0 / rate as f64));
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        // One connection per client, like one pool slot per request thread.
        let conn = client.get_multiplexed_async_connection().await?;
        let (requests, next, pace, ns) =
            (requests.clone(), next.clone(), pace.clone(), ns.to_string());
        tasks.push(tokio::spawn(async move {
            let offered = |i: usize| gap.map(|g| started + g.mul_f64(i as f64));
            match design {
                Design::Lock => {
                    let client = LockClient {
                        conn,
                        ns,
                        token: uuid::Uuid::new_v4().to_string(),
                        unlock: Script::new(UNLOCK),
                    };
                    client_loop(client, &requests, &next, &pace, offered).await
                }
                Design::AtomicLua => {
                    let client = LuaClient {
                        conn,
                        ns,
                        decide: Script::new(DECIDE),
                    };
                    client_loop(client, &requests, &next, &pace, offered).await
                }
            }
        }));
    }
    let mut run = LockRun::default();
    for t in tasks {
        let (issued, retries, mut lat, mut offered) = t.await??;
        run.issued += issued;
        run.lock_retries += retries;
        run.latencies_ms.append(&mut lat);
        run.offered_latencies_ms.append(&mut offered);
    }
    run.seconds = started.elapsed().as_secs_f64();
    run.requests = requests.len();
    // Leave nothing behind.
    remove_namespace(&mut setup, ns).await?;
    Ok(run)
}

/// Removes every key under `ns:` (SCAN, not KEYS: the Redis is shared).
pub async fn remove_namespace(conn: &mut MultiplexedConnection, ns: &str) -> anyhow::Result<()> {
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{ns}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            let _: () = redis::cmd("UNLINK").arg(&keys).query_async(conn).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// One client: takes the next request, waits for its slot, has `decider`
/// decide it and times it; returns (issued, lock retries, latencies,
/// latencies from the moment offered).
async fn client_loop(
    mut decider: impl Decider,
    requests: &[(String, String)],
    next: &AtomicUsize,
    pace: &Pace,
    offered: impl Fn(usize) -> Option<Instant>,
) -> anyhow::Result<(usize, usize, Vec<f64>, Vec<f64>)> {
    let (mut issued, mut retries) = (0usize, 0usize);
    let (mut latencies, mut offered_latencies) = (Vec::new(), Vec::new());
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some((coupon, user)) = requests.get(i) else {
            return Ok((issued, retries, latencies, offered_latencies));
        };
        pace.slot(i).await;
        let t0 = Instant::now();
        // The pacer may release a slot up to a millisecond early.
        let offered_at = offered(i).map_or(t0, |due| due.min(t0));
        let (got, tries) = decider.decide(coupon, user).await?;
        issued += usize::from(got);
        retries += tries;
        latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
        offered_latencies.push(offered_at.elapsed().as_secs_f64() * 1000.0);
    }
}

/// One design's decision of one request: whether it issued, and how many
/// times it had to retry taking a lock.
trait Decider {
    async fn decide(&mut self, coupon: &str, user: &str) -> anyhow::Result<(bool, usize)>;
}

/// Lock, read, check, write, unlock: five round trips and a spin.
struct LockClient {
    conn: MultiplexedConnection,
    ns: String,
    token: String,
    unlock: Script,
}

impl Decider for LockClient {
    async fn decide(&mut self, coupon: &str, user: &str) -> anyhow::Result<(bool, usize)> {
        let (ns, conn) = (&self.ns, &mut self.conn);
        let lock = format!("{ns}:lock:{coupon}");
        let mut retries = 0;
        loop {
            let got: Option<String> = redis::cmd("SET")
                .arg(&lock)
                .arg(&self.token)
                .arg("NX")
                .arg("PX")
                .arg(1000)
                .query_async(conn)
                .await?;
            if got.is_some() {
                break;
            }
            retries += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let remaining_key = format!("{ns}:remaining:{coupon}");
        let issued_key = format!("{ns}:issued:{coupon}");
        let remaining: i64 = redis::cmd("GET")
            .arg(&remaining_key)
            .query_async::<Option<i64>>(conn)
            .await?
            .unwrap_or(0);
        let holds: bool = redis::cmd("SISMEMBER")
            .arg(&issued_key)
            .arg(user)
            .query_async(conn)
            .await?;
        let issue = !holds && remaining > 0;
        if issue {
            let _: i64 = redis::cmd("DECR")
                .arg(&remaining_key)
                .query_async(conn)
                .await?;
            let _: i64 = redis::cmd("SADD")
                .arg(&issued_key)
                .arg(user)
                .query_async(conn)
                .await?;
        }
        let _: i64 = self
            .unlock
            .key(&lock)
            .arg(&self.token)
            .invoke_async(conn)
            .await?;
        Ok((issue, retries))
    }
}

/// The whole decision in one EVALSHA.
struct LuaClient {
    conn: MultiplexedConnection,
    ns: String,
    decide: Script,
}

impl Decider for LuaClient {
    async fn decide(&mut self, coupon: &str, user: &str) -> anyhow::Result<(bool, usize)> {
        let ns = &self.ns;
        let outcome: i64 = self
            .decide
            .key(format!("{ns}:remaining:{coupon}"))
            .key(format!("{ns}:issued:{coupon}"))
            .key(format!("{ns}:window:{coupon}"))
            .arg(user)
            .arg(chrono::Utc::now().timestamp_millis())
            .invoke_async(&mut self.conn)
            .await?;
        Ok((outcome == 0, 0))
    }
}
