//! The declarative topic set (config/topics.toml) and its reconciler.
//!
//! `apply` creates what is missing and reports drift on what exists; it never
//! deletes, never lowers anything and never adds partitions by itself (more
//! partitions remap keys to partitions, which breaks per-key order: that is
//! an operator's decision).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use serde::Deserialize;
use surge_core::settings::TopicsSettings;
use surge_core::Names;

#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("bad topics file {path}: {error}")]
    Parse { path: String, error: String },
    #[error("topic {topic}: {reason}")]
    Invalid { topic: String, reason: String },
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicFile {
    #[serde(default)]
    defaults: TopicDefaults,
    #[serde(default)]
    topic: Vec<TopicEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicDefaults {
    partitions: i32,
    replication_factor: i32,
    min_insync_replicas: i32,
    cleanup_policy: CleanupPolicy,
    retention: String,
    #[serde(default)]
    segment: Option<String>,
    #[serde(default)]
    delete_retention: Option<String>,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        Self {
            partitions: 6,
            replication_factor: 1,
            min_insync_replicas: 1,
            cleanup_policy: CleanupPolicy::Delete,
            retention: "7d".into(),
            segment: None,
            delete_retention: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicEntry {
    name: String,
    partitions: Option<i32>,
    replication_factor: Option<i32>,
    min_insync_replicas: Option<i32>,
    cleanup_policy: Option<CleanupPolicy>,
    retention: Option<String>,
    segment: Option<String>,
    delete_retention: Option<String>,
}

/// Kafka's cleanup.policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanupPolicy {
    Delete,
    Compact,
}

impl CleanupPolicy {
    pub fn as_kafka(self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Compact => "compact",
        }
    }
}

/// One topic as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub min_insync_replicas: i32,
    pub cleanup_policy: CleanupPolicy,
    /// `None` keeps data forever (retention.ms = -1).
    pub retention: Option<Duration>,
    /// segment.ms: the broker rolls the active segment at least this often.
    /// Compaction never touches the active segment, so a compacted
    /// changelog needs it to shed superseded records and tombstones before
    /// the broker default (1 GiB or 7 days) would roll it. `None`: the
    /// broker's default.
    pub segment: Option<Duration>,
    /// delete.retention.ms: how long a compacted topic keeps a tombstone
    /// after the cleaner first met it. A reader that started before the
    /// cleaner dropped it still sees the delete, if it reads the tombstone
    /// within that time; a changelog's only reader is a restore. `None`:
    /// the broker's default (a day).
    pub delete_retention: Option<Duration>,
}

impl TopicSpec {
    /// The topic configs surge manages, as Kafka names them.
    pub fn configs(&self) -> BTreeMap<&'static str, String> {
        let retention_ms = self
            .retention
            .map(|d| d.as_millis().to_string())
            .unwrap_or_else(|| "-1".into());
        let mut configs = BTreeMap::from([
            ("cleanup.policy", self.cleanup_policy.as_kafka().to_string()),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
            ("retention.ms", retention_ms),
        ]);
        if let Some(segment) = self.segment {
            configs.insert("segment.ms", segment.as_millis().to_string());
        }
        if let Some(d) = self.delete_retention {
            configs.insert("delete.retention.ms", d.as_millis().to_string());
        }
        configs
    }
}

/// How long a changelog restore may take before the pipeline gives up
/// (it then retries from the start). A compacted topic's tombstones must
/// be kept at least this long: a restore that read a value and not yet its
/// tombstone when the cleaner dropped it would bring the value back.
pub const RESTORE_LIMIT: Duration = Duration::from_secs(600);

/// Configs `apply` changes on an existing topic instead of reporting drift:
/// safe at any time (the broker applies segment.ms at its next roll and
/// delete.retention.ms at the cleaner's next pass; no record is moved, and
/// a lower delete.retention.ms only drops tombstones sooner, never below
/// [`RESTORE_LIMIT`], which `parse` enforces). The rest stays an operator's
/// decision.
const ALTERABLE: &[&str] = &["segment.ms", "delete.retention.ms"];

/// Reads the topics file and applies `settings` overrides (prefix, replication).
pub fn load(path: &Path, settings: &TopicsSettings) -> Result<Vec<TopicSpec>, TopicsError> {
    let text = std::fs::read_to_string(path).map_err(|error| TopicsError::Read {
        path: path.display().to_string(),
        error,
    })?;
    parse(&text, settings).map_err(|e| match e {
        TopicsError::Parse { error, .. } => TopicsError::Parse {
            path: path.display().to_string(),
            error,
        },
        other => other,
    })
}

/// As [`load`], from text.
pub fn parse(text: &str, settings: &TopicsSettings) -> Result<Vec<TopicSpec>, TopicsError> {
    let file: TopicFile = toml::from_str(text).map_err(|e| TopicsError::Parse {
        path: String::new(),
        error: e.to_string(),
    })?;
    let d = &file.defaults;
    let names = Names::new(settings.name_prefix.clone());
    let mut seen = HashMap::new();
    let mut out = Vec::new();
    for t in file.topic {
        let name = names.topic(&t.name);
        if seen.insert(name.clone(), ()).is_some() {
            return Err(TopicsError::Invalid {
                topic: name,
                reason: "declared twice".into(),
            });
        }
        let replication_factor = settings
            .replication_factor
            .or(t.replication_factor)
            .unwrap_or(d.replication_factor);
        let min_insync_replicas = settings
            .min_insync_replicas
            .or(t.min_insync_replicas)
            .unwrap_or(d.min_insync_replicas);
        let retention_text = t.retention.as_deref().unwrap_or(&d.retention);
        let retention = match retention_text {
            "forever" => None,
            other => Some(
                humantime::parse_duration(other).map_err(|e| TopicsError::Invalid {
                    topic: name.clone(),
                    reason: format!(
                        "retention `{other}`: {e} (use e.g. \"7d\", \"12h\" or \"forever\")"
                    ),
                })?,
            ),
        };
        let duration = |key: &str, text: Option<&str>| match text {
            None => Ok(None),
            Some(text) => {
                humantime::parse_duration(text)
                    .map(Some)
                    .map_err(|e| TopicsError::Invalid {
                        topic: name.clone(),
                        reason: format!("{key} `{text}`: {e} (use e.g. \"1h\")"),
                    })
            }
        };
        let segment = duration("segment", t.segment.as_deref().or(d.segment.as_deref()))?;
        let delete_retention = duration(
            "delete_retention",
            t.delete_retention
                .as_deref()
                .or(d.delete_retention.as_deref()),
        )?;
        let spec = TopicSpec {
            name,
            partitions: t.partitions.unwrap_or(d.partitions),
            replication_factor,
            min_insync_replicas,
            cleanup_policy: t.cleanup_policy.unwrap_or(d.cleanup_policy),
            retention,
            segment,
            delete_retention,
        };
        if let (CleanupPolicy::Compact, Some(d)) = (spec.cleanup_policy, spec.delete_retention) {
            if d < RESTORE_LIMIT {
                return Err(TopicsError::Invalid {
                    topic: spec.name,
                    reason: format!(
                        "delete_retention {} is shorter than a restore may take ({}): a restore could miss a tombstone and bring back what it deleted",
                        humantime::format_duration(d),
                        humantime::format_duration(RESTORE_LIMIT)
                    ),
                });
            }
        }
        if spec.partitions < 1 || spec.replication_factor < 1 {
            return Err(TopicsError::Invalid {
                topic: spec.name,
                reason: "partitions and replication_factor must be at least 1".into(),
            });
        }
        if spec.min_insync_replicas > spec.replication_factor {
            return Err(TopicsError::Invalid {
                topic: spec.name,
                reason: format!(
                    "min_insync_replicas {} exceeds replication_factor {}: no write could ever succeed",
                    spec.min_insync_replicas, spec.replication_factor
                ),
            });
        }
        out.push(spec);
    }
    Ok(out)
}

/// A difference between a declared topic and the cluster that `apply` does not fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    Partitions {
        topic: String,
        declared: i32,
        actual: i32,
    },
    ReplicationFactor {
        topic: String,
        declared: i32,
        actual: i32,
    },
    Config {
        topic: String,
        key: String,
        declared: String,
        actual: String,
    },
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Drift::Partitions { topic, declared, actual } => write!(
                f,
                "{topic}: has {actual} partitions, declared {declared} (not changed: adding partitions remaps keys; use kafka-topics --alter if intended)"
            ),
            Drift::ReplicationFactor { topic, declared, actual } => {
                write!(f, "{topic}: replication factor is {actual}, declared {declared} (needs a partition reassignment)")
            }
            Drift::Config { topic, key, declared, actual } => write!(f, "{topic}: {key} is {actual}, declared {declared}"),
        }
    }
}

/// What `apply` did and found.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub created: Vec<String>,
    pub unchanged: Vec<String>,
    /// `<topic>: <key> <old> -> <new>` for each [`ALTERABLE`] config set.
    pub altered: Vec<String>,
    pub drift: Vec<Drift>,
}

/// Creates missing topics, sets the [`ALTERABLE`] configs of existing ones,
/// and reports any other drift.
pub async fn apply(
    admin: &AdminClient<DefaultClientContext>,
    specs: &[TopicSpec],
    timeout: Duration,
) -> Result<ApplyReport, TopicsError> {
    let mut report = ApplyReport::default();
    let existing = describe(admin, timeout)?;
    let missing: Vec<&TopicSpec> = specs
        .iter()
        .filter(|s| !existing.contains_key(&s.name))
        .collect();
    if !missing.is_empty() {
        let configs: Vec<BTreeMap<&str, String>> = missing.iter().map(|s| s.configs()).collect();
        let new_topics: Vec<NewTopic> = missing
            .iter()
            .zip(&configs)
            .map(|(s, cfg)| {
                let mut t = NewTopic::new(
                    &s.name,
                    s.partitions,
                    TopicReplication::Fixed(s.replication_factor),
                );
                for (k, v) in cfg {
                    t = t.set(k, v);
                }
                t
            })
            .collect();
        let opts = AdminOptions::new()
            .operation_timeout(Some(timeout))
            .request_timeout(Some(timeout));
        for result in admin.create_topics(&new_topics, &opts).await? {
            match result {
                Ok(name) => report.created.push(name),
                // Someone else created it between describe and create: compare below.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(TopicsError::Invalid {
                        topic: name,
                        reason: format!("create failed: {code}"),
                    })
                }
            }
        }
    }
    // A topic created a moment ago (here or by another apply) is missing
    // from metadata, or listed with an error, until its leaders are elected:
    // wait until every declared topic is visible before comparing.
    let existing = if missing.is_empty() {
        existing
    } else {
        describe_all(admin, specs, timeout).await?
    };
    for spec in specs.iter().filter(|s| !report.created.contains(&s.name)) {
        let Some((partitions, rf)) = existing.get(&spec.name).copied() else {
            return Err(TopicsError::Invalid {
                topic: spec.name.clone(),
                reason: format!("exists but is not in the cluster metadata after {timeout:?}"),
            });
        };
        let before = report.drift.len();
        if partitions != spec.partitions {
            report.drift.push(Drift::Partitions {
                topic: spec.name.clone(),
                declared: spec.partitions,
                actual: partitions,
            });
        }
        if rf != spec.replication_factor {
            report.drift.push(Drift::ReplicationFactor {
                topic: spec.name.clone(),
                declared: spec.replication_factor,
                actual: rf,
            });
        }
        let actual = topic_configs(admin, &spec.name, timeout).await?;
        let mut alter = BTreeMap::new();
        for (key, declared) in spec.configs() {
            let now = actual.get(key).map(|(v, _)| v.clone()).unwrap_or_default();
            if now == declared {
                continue;
            }
            if ALTERABLE.contains(&key) {
                report
                    .altered
                    .push(format!("{}: {key} {now} -> {declared}", spec.name));
                alter.insert(key, declared);
            } else {
                report.drift.push(Drift::Config {
                    topic: spec.name.clone(),
                    key: key.to_string(),
                    declared,
                    actual: now,
                });
            }
        }
        if !alter.is_empty() {
            set_configs(admin, &spec.name, &actual, &alter, timeout).await?;
        } else if report.drift.len() == before {
            report.unchanged.push(spec.name.clone());
        }
    }
    Ok(report)
}

/// [`describe`], repeated until every one of `specs` is listed or `timeout` passes.
async fn describe_all(
    admin: &AdminClient<DefaultClientContext>,
    specs: &[TopicSpec],
    timeout: Duration,
) -> Result<HashMap<String, (i32, i32)>, TopicsError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let existing = describe(admin, timeout)?;
        let all = specs.iter().all(|s| existing.contains_key(&s.name));
        if all || tokio::time::Instant::now() >= deadline {
            return Ok(existing);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Topic name → (partitions, replication factor of partition 0).
fn describe(
    admin: &AdminClient<DefaultClientContext>,
    timeout: Duration,
) -> Result<HashMap<String, (i32, i32)>, TopicsError> {
    // Metadata is small; a blocking call here is fine in a CLI context and is
    // also what rdkafka offers.
    let md = admin.inner().fetch_metadata(None, timeout)?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| {
            let rf = t
                .partitions()
                .first()
                .map(|p| p.replicas().len() as i32)
                .unwrap_or(0);
            (t.name().to_string(), (t.partitions().len() as i32, rf))
        })
        .collect())
}

/// Sets `changes` on an existing `topic` and keeps every other config set
/// on it (the bench tunes a sandbox changelog's compaction this way).
pub async fn set_topic_configs(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    changes: &BTreeMap<&str, String>,
    timeout: Duration,
) -> Result<(), TopicsError> {
    let actual = topic_configs(admin, topic, timeout).await?;
    set_configs(admin, topic, &actual, changes, timeout).await
}

/// Sets `changes` on `topic`. AlterConfigs (the only alter rdkafka offers)
/// replaces a topic's whole dynamic config, so every config set on the
/// topic itself today (`actual`, source DynamicTopic: ours and any an
/// operator set) is sent again with the changes over it.
async fn set_configs(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    actual: &HashMap<String, (String, ConfigSource)>,
    changes: &BTreeMap<&str, String>,
    timeout: Duration,
) -> Result<(), TopicsError> {
    let mut all: BTreeMap<&str, &str> = actual
        .iter()
        .filter(|(_, (_, source))| *source == ConfigSource::DynamicTopic)
        .map(|(k, (v, _))| (k.as_str(), v.as_str()))
        .collect();
    for (k, v) in changes {
        all.insert(k, v);
    }
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for (k, v) in &all {
        alter = alter.set(k, v);
    }
    let opts = AdminOptions::new().request_timeout(Some(timeout));
    for r in admin.alter_configs(&[alter], &opts).await? {
        r.map_err(|(_, code)| TopicsError::Invalid {
            topic: topic.to_string(),
            reason: format!("setting {changes:?} failed: {code}"),
        })?;
    }
    Ok(())
}

/// Every config of `topic` with a value, and where it comes from.
async fn topic_configs(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    timeout: Duration,
) -> Result<HashMap<String, (String, ConfigSource)>, TopicsError> {
    let opts = AdminOptions::new().request_timeout(Some(timeout));
    let results = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &opts)
        .await?;
    let mut out = HashMap::new();
    for r in results {
        let resource = r.map_err(KafkaError::AdminOp)?;
        for entry in resource.entries {
            if let Some(v) = entry.value {
                out.insert(entry.name, (v, entry.source));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeSet;
    use surge_core::names::PIPELINES;

    fn shipped(prefix: &str) -> Vec<TopicSpec> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/topics.toml");
        let settings = TopicsSettings {
            name_prefix: prefix.into(),
            ..Default::default()
        };
        load(&path, &settings).unwrap()
    }

    fn spec<'a>(specs: &'a [TopicSpec], name: &str) -> &'a TopicSpec {
        specs
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} is not declared in config/topics.toml"))
    }

    /// Every name the resolver makes for the code (the topic of every
    /// contract, public or between pipelines, and each pipeline's changelog
    /// and dead-letter topic) is
    /// declared in the shipped file, under any prefix, and the file declares
    /// nothing else: the code and config/topics.toml cannot disagree.
    #[test]
    fn changelogs_roll_hourly_keep_tombstones_an_hour_and_a_bad_duration_names_its_topic() {
        let specs = shipped("");
        for p in PIPELINES {
            let c = spec(&specs, &format!("{p}-pipeline-changelog"));
            assert_eq!(c.segment, Some(Duration::from_secs(3600)), "{p}");
            assert_eq!(c.configs()["segment.ms"], "3600000");
            assert_eq!(c.delete_retention, Some(Duration::from_secs(3600)), "{p}");
            assert_eq!(c.configs()["delete.retention.ms"], "3600000");
        }
        let input = spec(&specs, "coupon-issue");
        assert_eq!(input.segment, None);
        assert!(
            !input.configs().contains_key("segment.ms")
                && !input.configs().contains_key("delete.retention.ms"),
            "broker defaults"
        );
        let err = parse(
            "[[topic]]\nname = \"t\"\nsegment = \"soon\"\n",
            &TopicsSettings::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("topic t") && err.contains("segment `soon`"),
            "{err}"
        );
        let err = parse(
            "[[topic]]\nname = \"t\"\ncleanup_policy = \"compact\"\ndelete_retention = \"5m\"\n",
            &TopicsSettings::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("topic t") && err.contains("shorter than a restore may take"),
            "{err}"
        );
        let err = parse(
            "[[topic]]\nname = \"t\"\ndelete_retention = \"-1\"\n",
            &TopicsSettings::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("topic t") && err.contains("delete_retention `-1`"),
            "{err}"
        );
    }

    #[test]
    fn the_shipped_topics_file_declares_exactly_the_names_the_code_makes() {
        for prefix in ["", "t1-"] {
            let n = Names::new(prefix);
            let mut made: BTreeSet<String> = BTreeSet::new();
            for c in surge_schemas::ALL_CONTRACTS {
                made.insert(n.topic(c.topic));
            }
            for p in PIPELINES {
                made.insert(n.changelog(p));
                made.insert(n.dlq(p));
            }
            let declared: BTreeSet<String> = shipped(prefix).into_iter().map(|s| s.name).collect();
            let missing: Vec<_> = made.difference(&declared).collect();
            let stray: Vec<_> = declared.difference(&made).collect();
            assert!(
                missing.is_empty(),
                "made by the code but not declared in config/topics.toml: {missing:?}"
            );
            assert!(
                stray.is_empty(),
                "declared in config/topics.toml but made by no code (see surge_core::names): {stray:?}"
            );
        }
    }

    #[test]
    fn internal_topics_have_their_purpose_s_settings() {
        let specs = shipped("");
        let n = Names::default();
        let input = spec(&specs, "coupon-issue");
        for p in PIPELINES {
            let changelog = spec(&specs, &n.changelog(p));
            assert_eq!(changelog.cleanup_policy, CleanupPolicy::Compact, "{p}");
            assert_eq!(
                changelog.retention, None,
                "{p}: changelogs are kept forever"
            );
            assert_eq!(
                changelog.partitions, input.partitions,
                "{p}: a changelog partition per input partition"
            );
            let dlq = spec(&specs, &n.dlq(p));
            assert_eq!(dlq.partitions, 1, "{p}");
            assert_eq!(dlq.cleanup_policy, CleanupPolicy::Delete, "{p}");
        }
    }

    /// The saga's inputs (and the coupon pipeline's, which also serves the
    /// saga) are co-partitioned: one task is one partition number across them.
    #[test]
    fn the_saga_inputs_are_co_partitioned_at_the_default_count() {
        let specs = shipped("");
        for t in [
            "coupon-issue",
            "order-create",
            "order-cancel",
            "order-replies",
            "inventory-commands",
        ] {
            assert_eq!(spec(&specs, t).partitions, 6, "{t}");
        }
    }

    #[test]
    fn overrides_apply_to_every_topic() {
        let text = "[[topic]]\nname = \"a\"\nreplication_factor = 1\n";
        let s = TopicsSettings {
            replication_factor: Some(3),
            min_insync_replicas: Some(2),
            name_prefix: "t1-".into(),
            ..Default::default()
        };
        let specs = parse(text, &s).unwrap();
        assert_eq!(specs[0].name, "t1-a");
        assert_eq!(
            (specs[0].replication_factor, specs[0].min_insync_replicas),
            (3, 2)
        );
    }

    #[test]
    fn rejects_impossible_and_unknown_settings() {
        let e = parse(
            "[[topic]]\nname = \"a\"\nmin_insync_replicas = 2\n",
            &TopicsSettings::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("exceeds replication_factor"), "{e}");
        let e = parse(
            "[[topic]]\nname = \"a\"\npartition = 2\n",
            &TopicsSettings::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("unknown field `partition`") && e.to_string().contains("line 3"),
            "{e}"
        );
        let e = parse(
            "[[topic]]\nname = \"a\"\nretention = \"soon\"\n",
            &TopicsSettings::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("retention"), "{e}");
    }
}
