//! The PostgreSQL sink, exactly once, on the real stack: while the coupon
//! pipeline decides 100,000 requests, the sink is SIGKILLed at random moments
//! (5 times) and PostgreSQL itself is restarted; afterwards the tables hold
//! exactly the decisions on coupon-result: no missing row, no duplicate,
//! issued counts equal per coupon. Then a replay of the topic from the
//! beginning (a new consumer group) changes nothing.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::coupon::{flash_sale, signal, Fixture, Instance};
use rand::Rng;
use sqlx::{Connection, PgConnection};
use surge_schemas::coupon::{CouponDecision, Outcome};

async fn fresh_database(admin_url: &str) -> String {
    let name = common::unique("db").replace('-', "_");
    let mut admin = PgConnection::connect(admin_url).await.unwrap();
    sqlx::query(&format!("create database {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

fn spawn_sink(fx: &Fixture, db_url: &str, group: &str) -> Instance {
    let log = fx.logs.join("sink-postgres.log");
    let file = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_surge"))
        .current_dir(common::repo_root())
        .args(["sink", "postgres"])
        .env("SURGE_TOPICS__NAME_PREFIX", &fx.prefix)
        .env("SURGE_POSTGRES__URL", db_url)
        .env("SURGE_SINKS__POSTGRES__GROUP_ID", group)
        .env("SURGE_SINKS__POSTGRES__METRICS_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .map(Instance)
        .unwrap()
}

/// What the tables say: request id → (outcome, sequence), plus per-coupon issued counts.
async fn tables(
    db_url: &str,
) -> Option<(
    HashMap<String, (String, Option<i64>)>,
    BTreeMap<String, (i64, i64)>,
)> {
    let mut conn = PgConnection::connect(db_url).await.ok()?;
    let decisions: Vec<(String, String, Option<i64>)> =
        sqlx::query_as("select request_id, outcome, sequence from coupon_decisions")
            .fetch_all(&mut conn)
            .await
            .ok()?;
    let per_coupon: Vec<(String, i64, i64)> = sqlx::query_as(
        "select c.coupon_id, c.issued, (select count(*) from issued_coupons i where i.coupon_id = c.coupon_id) from coupons c",
    )
    .fetch_all(&mut conn)
    .await
    .ok()?;
    Some((
        decisions.into_iter().map(|(r, o, s)| (r, (o, s))).collect(),
        per_coupon
            .into_iter()
            .map(|(c, issued, rows)| (c, (issued, rows)))
            .collect(),
    ))
}

fn expected(
    decisions: &[CouponDecision],
) -> (
    HashMap<String, (String, Option<i64>)>,
    BTreeMap<String, (i64, i64)>,
) {
    let rows = decisions
        .iter()
        .map(|d| {
            (
                d.request_id.clone(),
                (d.outcome.symbol().to_string(), d.sequence),
            )
        })
        .collect();
    let mut per_coupon: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for d in decisions {
        let e = per_coupon.entry(d.coupon_id.clone()).or_default();
        e.0 = d.issued; // the latest decision's count (log order)
        if d.outcome == Outcome::Issued {
            e.1 += 1;
        }
    }
    (rows, per_coupon)
}

/// Sum of the offsets the sink stored (0 while PostgreSQL is unreachable).
async fn stored_total(db_url: &str) -> i64 {
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

fn stack(args: &[&str]) {
    let status = Command::new(common::repo_root().join("scripts/stack"))
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "scripts/stack {args:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkills_and_a_postgres_restart_leave_exactly_the_topic_in_the_tables() {
    let fx = Fixture::new("pg-sink").await;
    let db = fresh_database(&fx.settings.postgres.url).await;
    let group = common::unique("pg-sink-group");
    let commands = flash_sale(8, 1_500, 4_000, 100_000, 3);
    let distinct = commands
        .iter()
        .map(|c| c.request_id.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len();
    let producer = {
        let (prefix, commands) = (fx.prefix.clone(), commands.clone());
        tokio::spawn(async move {
            let fx = Fixture::reuse(&prefix).await;
            // About 20 s of flow, so that kills and the restart land mid-stream.
            for chunk in commands.chunks(5_000) {
                fx.produce(chunk).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let mut pipeline = fx.spawn_pipeline("0", &[]);

    let mut rng = rand::rng();
    for kill in 1..=5 {
        let mut sink = spawn_sink(&fx, &db, &group);
        // Kill while it works: only once it has written since it started.
        let before = stored_total(&db).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while stored_total(&db).await <= before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            stored_total(&db).await > before,
            "sink instance {kill} made progress"
        );
        if kill == 1 {
            // PostgreSQL goes away under the writing sink for longer than the
            // pool's 5 s acquire timeout (so writes fail and are retried), then
            // comes back; the sink must carry on from where it was.
            let before_outage = stored_total(&db).await;
            stack(&["down", "postgres"]);
            tokio::time::sleep(Duration::from_secs(7)).await;
            stack(&["up", "postgres"]);
            let deadline = Instant::now() + Duration::from_secs(60);
            while stored_total(&db).await <= before_outage && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(
                stored_total(&db).await > before_outage,
                "the sink resumed writing after PostgreSQL came back"
            );
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..1_500))).await;
        assert!(
            sink.try_wait().unwrap().is_none(),
            "the sink survived on its own until the kill"
        );
        signal(&sink, "KILL");
        sink.wait().unwrap();
    }
    let sink_log = std::fs::read_to_string(fx.logs.join("sink-postgres.log")).unwrap();
    assert!(
        sink_log.contains("store write failed; retrying the same batch"),
        "the PostgreSQL restart was felt and retried"
    );
    producer.await.unwrap();
    let mut sink = spawn_sink(&fx, &db, &group);

    let decisions = fx.decisions(distinct, Duration::from_secs(300)).await;
    assert_eq!(decisions.len(), distinct);
    let want = expected(&decisions);
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut got = None;
    while Instant::now() < deadline {
        got = tables(&db).await;
        if got.as_ref() == Some(&want) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (rows, per_coupon) = got.expect("tables readable");
    let missing = want.0.keys().filter(|k| !rows.contains_key(*k)).count();
    let wrong = want
        .0
        .iter()
        .filter(|(k, v)| rows.get(*k).is_some_and(|r| r != *v))
        .count();
    assert_eq!(
        (missing, wrong, rows.len()),
        (0, 0, want.0.len()),
        "coupon_decisions equals the topic"
    );
    assert_eq!(
        per_coupon, want.1,
        "per coupon: issued count and issued_coupons rows equal the topic"
    );

    // Replaying the whole topic (a new group, same stored offsets table) changes nothing.
    signal(&sink, "TERM");
    assert_eq!(sink.wait().unwrap().code(), Some(0));
    let mut again = spawn_sink(&fx, &db, &common::unique("replay-group"));
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        tables(&db).await.as_ref(),
        Some(&want),
        "a replay from a new group changes nothing"
    );
    signal(&again, "TERM");
    assert_eq!(again.wait().unwrap().code(), Some(0));
    signal(&pipeline, "TERM");
    assert!(pipeline.wait().unwrap().success());
}
