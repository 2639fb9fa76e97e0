//! Both sinks, exactly once, on the real stack. While the coupon pipeline
//! decides 100,000 requests, the PostgreSQL and Redis sinks are SIGKILLed at
//! random moments (6 times each), PostgreSQL is restarted under its sink and
//! Redis is flushed under its sink. Afterwards `surge verify` finds both
//! stores equal to coupon-result (so Redis agrees with PostgreSQL for every
//! coupon, request id and holder); a flush of an idle cache is rebuilt to the
//! same content; a replay from a new group changes nothing; and verify fails
//! on a row deleted from PostgreSQL and on a decision altered in Redis.
//!
//! Redis runs this test in its own database (number 9) and "FLUSHALL" is a
//! FLUSHDB of it, so tests sharing the Redis server keep their keys.

mod common;

use common::orders::stack;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::coupon::{flash_sale, signal, Fixture};
use common::{stdout, surge};
use rand::Rng;
use redis::AsyncCommands;
use sqlx::{Connection, PgConnection};
use surge_redis::Keyspace;
use surge_schemas::coupon::CouponDecision;
use surge_schemas::Contract;

const REDIS_DB: u32 = 9;

/// An issue request and a stock adjustment for coupons that do not exist,
/// an invalid create (negative stock), and a repeat of that create's id
/// (deduped: one decision).
fn ghost_requests() -> Vec<surge_schemas::coupon::CouponCommand> {
    use surge_schemas::coupon::{CouponAction, CouponCommand};
    let command = |request: &str, coupon: &str, command| CouponCommand {
        request_id: request.into(),
        coupon_id: coupon.into(),
        requested_at: surge_schemas::now(),
        command,
    };
    let refused_create = command(
        "ghost-r2",
        "ghost-2",
        CouponAction::Create {
            stock: -1,
            active_from: None,
            active_until: None,
            discount: None,
        },
    );
    vec![
        command(
            "ghost-r1",
            "ghost-1",
            CouponAction::Issue {
                user_id: "u-ghost".into(),
            },
        ),
        refused_create.clone(),
        refused_create,
        command(
            "ghost-r3",
            "ghost-3",
            CouponAction::AdjustStock {
                delta: 5,
                reason: None,
            },
        ),
    ]
}

/// Sum of the offsets the PostgreSQL sink stored (0 while unreachable).
async fn pg_progress(db_url: &str) -> i64 {
    let Ok(mut conn) = PgConnection::connect(db_url).await else {
        return 0;
    };
    sqlx::query_scalar::<_, Option<i64>>("select sum(next_offset)::bigint from sink_offsets")
        .fetch_one(&mut conn)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

struct Cache {
    conn: redis::aio::MultiplexedConnection,
    keys: Keyspace,
    offsets: String,
}

impl Cache {
    async fn open(url: &str, fx: &Fixture) -> Self {
        let client = redis::Client::open(url).unwrap();
        let keys = Keyspace::new(fx.prefix.trim_end_matches('-'));
        Self {
            conn: client.get_multiplexed_async_connection().await.unwrap(),
            offsets: keys.offsets(&fx.topic("coupon-result")),
            keys,
        }
    }

    /// Sum of the offsets the Redis sink stored.
    async fn progress(&mut self) -> i64 {
        let offsets: Vec<i64> = self.conn.hvals(&self.offsets).await.unwrap_or_default();
        offsets.iter().sum()
    }

    /// Every key of the keyspace with its hash content.
    async fn dump(&mut self) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(self.keys.all_pattern())
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.conn)
                .await
                .unwrap();
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut out = BTreeMap::new();
        for k in keys {
            let h: BTreeMap<String, String> = self.conn.hgetall(&k).await.unwrap();
            out.insert(k, h);
        }
        out
    }

    async fn flush(&mut self) {
        let _: () = redis::cmd("FLUSHDB")
            .query_async(&mut self.conn)
            .await
            .unwrap();
    }
}

/// The committed offsets of `group` on `topic` (what kafka-consumer-groups shows).
fn group_offsets(fx: &Fixture, group: &str, topic: &str, partitions: &[i32]) -> Vec<(i32, i64)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = fx
        .factory
        .read_committed_consumer_config("test-group-offsets", group)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

async fn wait_for_progress(what: &str, mut progress: impl AsyncFnMut() -> i64) {
    let before = progress().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress().await <= before {
        assert!(Instant::now() < deadline, "{what} made no progress in 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kills_a_postgres_restart_and_a_redis_flush_leave_both_stores_equal_to_the_topic() {
    let fx = Fixture::new("sinks").await;
    let db = common::fresh_database(&fx.settings.postgres.url).await;
    let redis_url = format!("{}/{REDIS_DB}", fx.settings.redis.url.trim_end_matches('/'));
    let mut cache = Cache::open(&redis_url, &fx).await;
    let pg_group = common::unique("pg-group");
    let redis_group = common::unique("redis-group");
    let stores_env = [
        ("SURGE_POSTGRES__URL", db.as_str()),
        ("SURGE_REDIS__URL", redis_url.as_str()),
    ];
    let pg_env = [
        stores_env[0],
        stores_env[1],
        ("SURGE_SINKS__POSTGRES__GROUP_ID", pg_group.as_str()),
    ];
    let redis_env = [
        stores_env[0],
        stores_env[1],
        ("SURGE_SINKS__REDIS__GROUP_ID", redis_group.as_str()),
    ];

    let mut commands = flash_sale(8, 1_500, 4_000, 100_000, 3);
    // Requests for coupons nobody created, as any caller can send them: their
    // decisions (UNKNOWN_COUPON, INVALID) are stored, but no coupon.
    commands.splice(0..0, ghost_requests());
    let distinct = commands
        .iter()
        .map(|c| c.request_id.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len();
    let producer = {
        let (prefix, commands) = (fx.prefix.clone(), commands.clone());
        tokio::spawn(async move {
            let fx = Fixture::reuse(&prefix).await;
            // About 20 s of flow, so that kills, the restart and the flush land mid-stream.
            for chunk in commands.chunks(5_000) {
                fx.produce(chunk).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let mut pipeline = fx.spawn_pipeline("0", &[]);

    let mut rng = rand::rng();
    for round in 1..=6 {
        let mut pg = fx.spawn_sink("postgres", &pg_env);
        let mut rs = fx.spawn_sink("redis", &redis_env);
        // Kill while they work: only once each has written since it started.
        wait_for_progress("the PostgreSQL sink", async || pg_progress(&db).await).await;
        wait_for_progress("the Redis sink", async || cache.progress().await).await;
        if round == 1 {
            // PostgreSQL goes away for longer than the pool's 5 s acquire
            // timeout (writes fail and are retried), then comes back.
            stack(&["down", "postgres"]);
            tokio::time::sleep(Duration::from_secs(7)).await;
            stack(&["up", "postgres"]);
            wait_for_progress("the PostgreSQL sink after the restart", async || {
                pg_progress(&db).await
            })
            .await;
        }
        if round == 3 {
            // The cache is wiped under the writing sink: it must notice and rebuild.
            cache.flush().await;
            wait_for_progress("the Redis sink after the flush", async || {
                cache.progress().await
            })
            .await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..1_500))).await;
        assert!(
            pg.try_wait().unwrap().is_none(),
            "the PostgreSQL sink lived until the kill"
        );
        signal(&pg, "KILL");
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..700))).await;
        assert!(
            rs.try_wait().unwrap().is_none(),
            "the Redis sink lived until the kill"
        );
        signal(&rs, "KILL");
        pg.wait().unwrap();
        rs.wait().unwrap();
    }
    let log =
        |store: &str| std::fs::read_to_string(fx.logs.join(format!("sink-{store}.log"))).unwrap();
    assert!(
        log("postgres").contains("store write failed; retrying the same batch"),
        "the PostgreSQL restart was felt and retried"
    );
    assert!(
        log("redis").contains("the store's offsets moved; rewinding to them"),
        "the Redis sink noticed the flush"
    );
    producer.await.unwrap();
    let mut pg = fx.spawn_sink("postgres", &pg_env);
    let mut rs = fx.spawn_sink("redis", &redis_env);
    let decisions = fx.decisions(distinct, Duration::from_secs(300)).await;
    assert_eq!(decisions.len(), distinct);

    // Both stores equal the topic: every coupon row, request decision and holder.
    let verify_env = [
        ("SURGE_TOPICS__NAME_PREFIX", fx.prefix.as_str()),
        ("SURGE_REDIS__KEYSPACE", fx.prefix.trim_end_matches('-')),
        stores_env[0],
        stores_env[1],
    ];
    let out = surge(&["verify", "--wait", "180"], &verify_env);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("postgres and redis equal to the topic"),
        "{text}"
    );
    // verify compares with what the topic proves; check the stores directly
    // too, so the rule cannot be wrong the same way in both.
    let ghosts =
        sqlx::query_scalar::<_, i64>("select count(*) from coupons where coupon_id like 'ghost-%'")
            .fetch_one(&mut PgConnection::connect(&db).await.unwrap())
            .await
            .unwrap();
    assert_eq!(ghosts, 0, "PostgreSQL holds no coupon nobody created");
    let ghost_keys: Vec<String> = cache
        .dump()
        .await
        .into_keys()
        .filter(|k| k.contains(":coupon:ghost-"))
        .collect();
    assert!(ghost_keys.is_empty(), "Redis holds {ghost_keys:?}");
    for (request, outcome) in [
        ("ghost-r1", "UNKNOWN_COUPON"),
        ("ghost-r2", "INVALID"),
        ("ghost-r3", "UNKNOWN_COUPON"),
    ] {
        let stored: String =
            sqlx::query_scalar("select outcome from coupon_decisions where request_id = $1")
                .bind(request)
                .fetch_one(&mut PgConnection::connect(&db).await.unwrap())
                .await
                .unwrap();
        assert_eq!(stored, outcome, "{request}: its decision is stored");
    }
    let holders = decisions
        .iter()
        .filter(|d| d.outcome == surge_schemas::coupon::Outcome::Issued)
        .count();
    assert_eq!(
        holders,
        8 * 1_500,
        "every unit issued (4,000 users ask for each coupon)"
    );

    // FLUSHALL on an idle cache: the sink rebuilds the same content from the topic.
    let before = cache.dump().await;
    assert!(
        before.len() > distinct,
        "a key per request, plus coupons and users"
    );
    cache.flush().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = cache.dump().await;
        if now == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rebuilt cache differs: {} keys before, {} now",
            before.len(),
            now.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Replaying the whole topic into PostgreSQL (a new group) changes nothing.
    signal(&pg, "TERM");
    assert_eq!(pg.wait().unwrap().code(), Some(0));
    // Kafka's tools see the sink's progress: its group holds what the store holds.
    let stored: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM sink_offsets WHERE topic = $1 ORDER BY partition",
    )
    .bind(fx.topic(CouponDecision::TOPIC))
    .fetch_all(&mut PgConnection::connect(&db).await.unwrap())
    .await
    .unwrap();
    assert!(!stored.is_empty());
    assert_eq!(
        group_offsets(
            &fx,
            &pg_group,
            &fx.topic(CouponDecision::TOPIC),
            &stored.iter().map(|(p, _)| *p).collect::<Vec<_>>()
        ),
        stored,
        "the sink's Kafka group reports the offsets it wrote to the store"
    );
    let replay_group = common::unique("replay-group");
    let mut again = fx.spawn_sink(
        "postgres",
        &[
            stores_env[0],
            stores_env[1],
            ("SURGE_SINKS__POSTGRES__GROUP_ID", &replay_group),
        ],
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    let out = surge(&["verify", "--stores", "postgres"], &verify_env);
    assert!(out.status.success(), "{}", stdout(&out));
    signal(&again, "TERM");
    assert_eq!(again.wait().unwrap().code(), Some(0));

    // verify is not a rubber stamp: a deleted row and an altered key are named.
    let mut conn = PgConnection::connect(&db).await.unwrap();
    let victim: (String, String) = sqlx::query_as(
        "delete from issued_coupons where (coupon_id, user_id) in
           (select coupon_id, user_id from issued_coupons limit 1) returning coupon_id, user_id",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let altered = decisions
        .iter()
        .find(|d| d.outcome == surge_schemas::coupon::Outcome::SoldOut)
        .unwrap();
    let _: () = cache
        .conn
        .hset(
            cache.keys.request(&altered.coupon_id, &altered.request_id),
            "outcome",
            "ISSUED",
        )
        .await
        .unwrap();
    let out = surge(&["verify"], &verify_env);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("6. postgres: 1 of 12000 holders missing") && text.contains(&victim.1),
        "{text}"
    );
    assert!(
        text.contains("6. redis: 1 decisions differ from the topic")
            && text.contains(&altered.request_id),
        "{text}"
    );

    // Operators see it: the rebuilds, the writes, lag against the LSO, health.
    let addr = common::metrics_address(&fx.logs.join("sink-redis.log"));
    let (status, metrics) = common::http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        common::metric(
            &metrics,
            &format!(
                "surge_sink_rewinds_total{{topic=\"{}\",sink=\"redis\"}}",
                fx.topic(CouponDecision::TOPIC)
            )
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        common::metric(
            &metrics,
            &format!(
                "surge_sink_writes_total{{topic=\"{}\",sink=\"redis\"}}",
                fx.topic(CouponDecision::TOPIC)
            )
        ) > 0.0,
        "{metrics}"
    );
    assert!(
        metrics.contains("surge_sink_consumer_lag_records{partition="),
        "{metrics}"
    );
    assert_eq!(common::http_get(&addr, "/health").0, 200);

    signal(&rs, "TERM");
    assert_eq!(rs.wait().unwrap().code(), Some(0));
    // The Redis sink's group holds what its store holds too: the offsets
    // hash of coupon-result (partition → next offset), under the group as
    // configured (coupon-result keeps it unsuffixed). Checked once the sink
    // stopped, long after its last write, as for PostgreSQL above: the
    // commits are async, and right after a flush the group is legitimately
    // ahead of the emptied store (the store is the truth; the sink rewinds
    // to it). The rebuild above rewrote and so reported every partition
    // again, and nothing reached coupon-result since, so here they agree,
    // and both sinks stored the same end of the topic.
    let redis_stored: BTreeMap<i32, i64> = cache.conn.hgetall(&cache.offsets).await.unwrap();
    let redis_stored: Vec<(i32, i64)> = redis_stored.into_iter().collect();
    assert_eq!(
        redis_stored, stored,
        "both sinks stored coupon-result up to its end"
    );
    assert_eq!(
        group_offsets(
            &fx,
            &redis_group,
            &fx.topic(CouponDecision::TOPIC),
            &redis_stored.iter().map(|(p, _)| *p).collect::<Vec<_>>()
        ),
        redis_stored,
        "the Redis sink's Kafka group reports the offsets it wrote to the store"
    );
    signal(&pipeline, "TERM");
    assert!(pipeline.wait().unwrap().success());
}
