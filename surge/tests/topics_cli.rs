//! `surge topics apply` against the real broker: creates what is declared,
//! is idempotent, sets segment.ms and delete.retention.ms in place, and
//! reports (without fixing)
//! any other drift.

mod common;

use std::time::Duration;

use common::{stdout, surge, unique};
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use surge_kafka::ClientFactory;

/// The shipped topics file, without a prefix.
fn declared() -> Vec<surge_kafka::topics::TopicSpec> {
    surge_kafka::topics::load(
        &common::repo_root().join("config/topics.toml"),
        &Default::default(),
    )
    .unwrap()
}

fn admin() -> rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> {
    ClientFactory::new(common::settings().kafka)
        .admin()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_creates_then_changes_nothing_then_reports_drift() {
    let prefix = format!("{}-", unique("topics"));
    let env = [("SURGE_TOPICS__NAME_PREFIX", prefix.as_str())];
    let declared = declared();

    // Pre-create one declared topic with fewer partitions than declared: drift.
    let short = declared.iter().find(|t| t.name == "order-status").unwrap();
    let admin = admin();
    let name = format!("{prefix}order-status");
    admin
        .create_topics(
            &[NewTopic::new(
                &name,
                short.partitions - 1,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let first = surge(&["topics", "apply"], &env);
    let text = stdout(&first);
    assert_eq!(
        text.matches("created ").count(),
        declared.len() - 1,
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "DRIFT     {name}: has {} partitions, declared {}",
            short.partitions - 1,
            short.partitions
        )),
        "{text}"
    );
    assert_eq!(first.status.code(), Some(2), "drift gives exit 2");

    let second = surge(&["topics", "apply"], &env);
    let text = stdout(&second);
    assert!(
        text.contains(&format!(
            "0 created, {} unchanged, 1 drift",
            declared.len() - 1
        )),
        "{text}"
    );
    assert_eq!(second.status.code(), Some(2));

    // The drifting topic was left alone (no data-destroying fix).
    let md = admin
        .inner()
        .fetch_metadata(Some(&name), Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        md.topics()[0].partitions().len() as i32,
        short.partitions - 1
    );

    // Without drift, a re-apply is a clean no-op with exit 0.
    let prefix2 = format!("{}-", unique("topics"));
    let env2 = [("SURGE_TOPICS__NAME_PREFIX", prefix2.as_str())];
    assert!(surge(&["topics", "apply"], &env2).status.success());
    let again = surge(&["topics", "apply"], &env2);
    assert!(again.status.success());
    assert!(stdout(&again).contains(&format!("0 created, {} unchanged, 0 drift", declared.len())));

    // `drop` deletes a scratch prefix's topics, only when told to, and
    // never the unprefixed ones.
    let unprefixed = surge(
        &["topics", "drop", "--yes"],
        &[("SURGE_TOPICS__NAME_PREFIX", "")],
    );
    assert!(!unprefixed.status.success());
    assert!(
        common::stderr(&unprefixed).contains("never deletes the unprefixed ones"),
        "{}",
        common::stderr(&unprefixed)
    );
    let unconfirmed = surge(&["topics", "drop"], &env2);
    assert!(!unconfirmed.status.success());
    assert!(common::stderr(&unconfirmed).contains("add --yes"));
    // A marker topic `surge dlq replay` made beside a dead-letter topic is
    // the run's too: drop takes it (and says "absent" for the others).
    let marker = format!("{prefix2}coupon-pipeline-dlq-replayed");
    for result in admin
        .create_topics(
            &[NewTopic::new(&marker, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap()
    {
        result.unwrap_or_else(|(t, e)| panic!("create {t}: {e}"));
    }
    let dropped = surge(&["topics", "drop", "--yes"], &env2);
    assert!(dropped.status.success(), "{}", stdout(&dropped));
    assert_eq!(
        stdout(&dropped).matches("deleted   ").count(),
        declared.len() + 1,
        "{}",
        stdout(&dropped)
    );
    assert!(
        stdout(&dropped).contains(&format!("deleted   {marker}")),
        "{}",
        stdout(&dropped)
    );
    // Deletion is asynchronous on the broker: wait for metadata to agree.
    let mut left = usize::MAX;
    for _ in 0..40 {
        let md = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(10))
            .unwrap();
        left = md
            .topics()
            .iter()
            .filter(|t| t.name().starts_with(&prefix2))
            .count();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(left, 0, "topics under {prefix2} are gone");
}

/// A changelog made before it declared `segment` and `delete_retention`
/// (or by hand) gets the declared segment.ms and delete.retention.ms from
/// `apply`, with every other config set on the
/// topic kept — AlterConfigs replaces a topic's whole dynamic config, so a
/// careless set would reset an operator's settings — and is then unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn apply_sets_segment_ms_on_an_existing_changelog_and_keeps_its_other_configs() {
    use rdkafka::admin::ResourceSpecifier;

    let prefix = format!("{}-", unique("topics"));
    let env = [("SURGE_TOPICS__NAME_PREFIX", prefix.as_str())];
    let declared = declared();
    let changelog = declared
        .iter()
        .find(|t| t.name == "coupon-pipeline-changelog")
        .unwrap();
    let segment_ms = changelog
        .segment
        .expect("changelogs declare a segment")
        .as_millis()
        .to_string();
    let admin = admin();
    let name = format!("{prefix}coupon-pipeline-changelog");
    let min_isr = changelog.min_insync_replicas.to_string();
    let topic = NewTopic::new(&name, changelog.partitions, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("retention.ms", "-1")
        .set("min.insync.replicas", &min_isr)
        // An operator's own setting, which apply must not reset.
        .set("max.message.bytes", "2000000");
    admin
        .create_topics(&[topic], &AdminOptions::new())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let first = surge(&["topics", "apply"], &env);
    let text = stdout(&first);
    assert!(
        first.status.success(),
        "segment.ms is set, not drift: {text}"
    );
    let tombstones_ms = changelog
        .delete_retention
        .expect("changelogs declare a delete_retention")
        .as_millis()
        .to_string();
    assert!(
        text.contains(&format!(
            "altered   {name}: segment.ms 604800000 -> {segment_ms}"
        )) && text.contains(&format!(
            "altered   {name}: delete.retention.ms 86400000 -> {tombstones_ms}"
        )),
        "{text}"
    );
    assert!(text.contains(", 0 drift, 2 configs set"), "{text}");

    // A broker applies an altered config from the metadata log a moment
    // after the controller accepted it: read until it shows (10 s at most).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let configs = loop {
        let configs = admin
            .describe_configs(&[ResourceSpecifier::Topic(&name)], &AdminOptions::new())
            .await
            .unwrap()
            .remove(0)
            .unwrap();
        let segment = configs.get("segment.ms").and_then(|e| e.value.clone());
        if segment.as_deref() == Some(segment_ms.as_str()) || std::time::Instant::now() >= deadline
        {
            break configs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let value = |key: &str| {
        configs
            .get(key)
            .and_then(|e| e.value.clone())
            .unwrap_or_default()
    };
    assert_eq!(value("segment.ms"), segment_ms);
    assert_eq!(value("delete.retention.ms"), tombstones_ms);
    assert_eq!(
        value("max.message.bytes"),
        "2000000",
        "the operator's config is kept"
    );
    assert_eq!(value("cleanup.policy"), "compact");
    assert_eq!(value("retention.ms"), "-1");
    assert_eq!(value("min.insync.replicas"), min_isr);

    let again = surge(&["topics", "apply"], &env);
    assert!(again.status.success());
    assert!(
        stdout(&again).contains(&format!(
            "0 created, {} unchanged, 0 drift, 0 configs set",
            declared.len()
        )),
        "{}",
        stdout(&again)
    );
}
