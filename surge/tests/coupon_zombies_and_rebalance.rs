//! Ownership changes on the real stack.
//!
//! Zombie: an instance paused (SIGSTOP) in the middle of a transaction, whose
//! work moves on to another instance, must not commit anything once it
//! wakes, and the decisions stay exactly once. Covered for both ways work
//! moves: a replacement with the same identity (transactional.id epoch bump:
//! the zombie is fenced and exits 3), and another member taking its
//! partitions after its session expired. In the second case the zombie wakes
//! into a race it cannot control: if its commit timer fires first, the
//! coordinator refuses its stale group metadata (KIP-447) and it exits 3; if
//! librdkafka reports the session timeout first, the assignment is lost and
//! it aborts the open transaction, then rejoins as a new member. Both are
//! correct; what must never happen is the paused transaction committing,
//! which would decide requests twice.
//!
//! False fence: a static member fenced while no other surge process holds
//! its identity (what a broker outage does) recovers in place and keeps
//! deciding, exactly once.
//!
//! Rebalance: two instances share the group; one stops and another starts
//! mid-stream; the invariants hold.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::coupon::{check_invariants, flash_sale, signal, Fixture, Instance};
use common::{http_get, metric, metrics_address, wait_for_log};
use surge_schemas::coupon::CouponCommand;

/// Short sessions so that work moves within seconds of a member going silent.
const FAST_GROUP: [(&str, &str); 1] = [("SURGE_KAFKA__LIBRDKAFKA__SESSION.TIMEOUT.MS", "6000")];

fn wait_exit(child: &mut Instance, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// Produces `commands` in chunks, a little at a time, from a task.
fn trickle(
    prefix: String,
    commands: Vec<CouponCommand>,
    chunk: usize,
    pause: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let fx = Fixture::reuse(&prefix).await;
        for c in commands.chunks(chunk) {
            fx.produce(c).await;
            tokio::time::sleep(pause).await;
        }
    })
}

/// How the paused instance's work moves on, and how it may react on waking.
#[derive(PartialEq)]
enum Takeover {
    /// Replaced by its own identity: fenced, exit 3.
    SameIdentity,
    /// Another member took its partitions: fenced, or lost and rejoined.
    OtherMember,
    /// As `OtherMember`, but its commit timer cannot fire before it notices
    /// the session timeout: it must take the lost-assignment path.
    OtherMemberMidInterval,
}

async fn zombie_cannot_commit(takeover: Takeover, what: &str) {
    let (replacement_instance, commit_interval) = match takeover {
        Takeover::SameIdentity => ("0", "3s"),
        Takeover::OtherMember => ("1", "3s"),
        // Longer than the pause, shorter than transaction.timeout.ms (60 s).
        Takeover::OtherMemberMidInterval => ("1", "30s"),
    };
    let fx = Fixture::with_env(what, &FAST_GROUP).await;
    let commands = flash_sale(4, 400, 1_200, 30_000, 5);
    let distinct = commands
        .iter()
        .map(|c| c.request_id.as_str())
        .collect::<HashSet<_>>()
        .len();
    let producer = trickle(
        fx.prefix.clone(),
        commands.clone(),
        1_000,
        Duration::from_millis(200),
    );

    // A keeps its transactions open for seconds, so the pause lands inside
    // one: no early commit when its trickled input runs dry either.
    let slow = [
        ("SURGE_PIPELINES__COUPON__COMMIT_INTERVAL", commit_interval),
        (
            "SURGE_PIPELINES__COUPON__MIN_COMMIT_INTERVAL",
            commit_interval,
        ),
        ("SURGE_PIPELINES__COUPON__MAX_BATCH_RECORDS", "1000000"),
    ];
    let mut zombie = fx.spawn_pipeline("0", &slow);
    let zombie_log_path = fx.logs.join("pipeline-0.log");
    // Paused only once it owns partitions and has records in a transaction
    // (the producer trickles every 200 ms), however slow the machine is.
    wait_for_log(
        &zombie_log_path,
        "partitions assigned and restored",
        Duration::from_secs(120),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(&zombie, "STOP");
    let mut successor = fx.spawn_pipeline(replacement_instance, &[]);
    // Long enough for the successor to own all partitions (session timeout 6 s).
    tokio::time::sleep(Duration::from_secs(12)).await;
    signal(&zombie, "CONT");
    // Either way the zombie settles within a session timeout or two.
    let code = wait_exit(&mut zombie, Duration::from_secs(30));

    producer.await.unwrap();
    let log = fx.issue_log(commands.len()).await;
    let decisions = fx.decisions(distinct, Duration::from_secs(300)).await;
    signal(&successor, "TERM");
    assert_eq!(
        wait_exit(&mut successor, Duration::from_secs(60)),
        Some(0),
        "the successor shuts down cleanly"
    );
    let code = match code {
        Some(code) => Some(code),
        None => {
            // Still running: it must have rejoined; it stops like any member.
            signal(&zombie, "TERM");
            wait_exit(&mut zombie, Duration::from_secs(60))
        }
    };

    let zombie_log = std::fs::read_to_string(&zombie_log_path).unwrap();
    let tail = &zombie_log[zombie_log.len().saturating_sub(3000)..];
    let fenced = code == Some(3) && zombie_log.contains("fenced");
    let lost = zombie_log.contains("assignment lost; aborting the open transaction");
    // Its own identity was free (the successor is another instance): the
    // fence was judged false, and the zombie rejoined as itself.
    let recovered = code == Some(0) && zombie_log.contains("recovered in place from a fence");
    match takeover {
        Takeover::SameIdentity => assert!(
            fenced && zombie_log.contains("another process holds this identity"),
            "a zombie replaced by its own identity is fenced and exits 3 (exit {code:?}); its log:\n{tail}"
        ),
        Takeover::OtherMember => assert!(
            recovered || (lost && code == Some(0)),
            "the zombie either finds its transaction refused, judges the fence false (nobody \
             else holds its instance) and rejoins, or aborts its lost transaction and carries \
             on as a new member (exit 0 on TERM either way); exit {code:?}, its log:\n{tail}"
        ),
        Takeover::OtherMemberMidInterval => assert!(
            lost && code == Some(0),
            "the zombie aborts its lost transaction and carries on as a new member \
             (exit 0 on TERM); exit {code:?}, its log:\n{tail}"
        ),
    }
    // The paused transaction never committed: nothing was decided twice.
    let violations = check_invariants(&log, &decisions);
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zombie_replaced_by_the_same_identity_is_fenced() {
    zombie_cannot_commit(Takeover::SameIdentity, "zombie-same-id").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zombie_whose_partitions_moved_to_another_member_cannot_commit() {
    zombie_cannot_commit(Takeover::OtherMember, "zombie-other-id").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zombie_that_finds_its_assignment_lost_aborts_and_rejoins() {
    zombie_cannot_commit(Takeover::OtherMemberMidInterval, "zombie-lost").await;
}

/// A consumer that is not a surge pipeline joins with the pipeline's
/// group.instance.id, which fences the pipeline's consumer
/// (FENCED_INSTANCE_ID, as a rejoin after a broker outage can), then goes
/// away. Nobody else holds the instance: the pipeline recovers in place —
/// new producer epoch, state restored — and the sale ends exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_fence_with_nobody_else_holding_the_identity_recovers_in_place() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let fx = Fixture::with_env("false-fence", &FAST_GROUP).await;
    let commands = flash_sale(4, 300, 1_000, 12_000, 13);
    let distinct = commands
        .iter()
        .map(|c| c.request_id.as_str())
        .collect::<HashSet<_>>()
        .len();
    let producer = trickle(
        fx.prefix.clone(),
        commands.clone(),
        1_000,
        Duration::from_millis(300),
    );
    let mut pipeline = fx.spawn_pipeline("0", &[]);
    let log_path = fx.logs.join("pipeline-0.log");
    wait_for_log(
        &log_path,
        "partitions assigned and restored",
        Duration::from_secs(120),
    );

    let group = format!("{}surge-coupon", fx.prefix);
    let settings = common::settings();
    let interloper: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &settings.kafka.bootstrap_servers)
        .set("group.id", &group)
        .set("group.instance.id", format!("{group}-0"))
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "6000")
        .set("client.id", "interloper")
        .create()
        .unwrap();
    interloper
        .subscribe(&[fx.topic("coupon-issue").as_str()])
        .unwrap();
    // Polled until the group gave it the partitions: the pipeline is fenced.
    let deadline = Instant::now() + Duration::from_secs(60);
    while interloper.assignment().unwrap().count() == 0 {
        assert!(Instant::now() < deadline, "the interloper never joined");
        interloper.poll(Duration::from_millis(200));
    }
    drop(interloper);

    wait_for_log(
        &log_path,
        "recovered in place from a fence",
        Duration::from_secs(60),
    );
    producer.await.unwrap();
    let log = fx.issue_log(commands.len()).await;
    let decisions = fx.decisions(distinct, Duration::from_secs(300)).await;
    assert!(
        pipeline.try_wait().unwrap().is_none(),
        "the pipeline is still running after the fence"
    );
    let (_, body) = http_get(&metrics_address(&log_path), "/metrics");
    assert_eq!(
        metric(&body, "surge_pipeline_fence_recoveries_total"),
        1.0,
        "one recovery counted"
    );
    signal(&pipeline, "TERM");
    assert_eq!(wait_exit(&mut pipeline, Duration::from_secs(60)), Some(0));
    let violations = check_invariants(&log, &decisions);
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_instance_stops_and_another_starts_mid_stream() {
    let fx = Fixture::with_env("rebalance", &FAST_GROUP).await;
    let commands = flash_sale(6, 500, 2_000, 40_000, 9);
    let distinct = commands
        .iter()
        .map(|c| c.request_id.as_str())
        .collect::<HashSet<_>>()
        .len();
    let producer = trickle(
        fx.prefix.clone(),
        commands.clone(),
        2_000,
        Duration::from_millis(300),
    );

    let mut a = fx.spawn_pipeline("a", &[]);
    let mut b = fx.spawn_pipeline("b", &[]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    signal(&a, "TERM");
    assert_eq!(
        wait_exit(&mut a, Duration::from_secs(60)),
        Some(0),
        "a stops cleanly mid-stream"
    );
    let mut c = fx.spawn_pipeline("c", &[]);

    producer.await.unwrap();
    let log = fx.issue_log(commands.len()).await;
    let decisions = fx.decisions(distinct, Duration::from_secs(300)).await;
    for child in [&mut b, &mut c] {
        signal(child, "TERM");
        assert_eq!(wait_exit(child, Duration::from_secs(60)), Some(0));
    }
    // a's partitions moved on: beyond b's first assignment, b or c was assigned more.
    let assignments: usize = ["pipeline-b.log", "pipeline-c.log"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(fx.logs.join(f))
                .unwrap_or_default()
                .matches("partitions assigned")
                .count()
        })
        .sum();
    assert!(
        assignments >= 2,
        "a's partitions were reassigned after it stopped ({assignments} assignments in b and c)"
    );
    let violations = check_invariants(&log, &decisions);
    assert!(violations.is_empty(), "{violations:#?}");
}
