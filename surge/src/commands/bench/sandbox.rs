//! A bench-private copy of the declared topics: the same file and the same
//! reconciler as `surge topics apply`, under a prefix of its own, so a bench
//! run never reads or writes anyone's data and its numbers never include
//! anyone else's traffic. Dropped at the end so runs do not pile up on the
//! broker.

use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::AdminOptions;
use surge_core::{Names, Settings};
use surge_kafka::{topics, ClientFactory};
use surge_schemas::coupon::{CouponCommand, CouponDecision};
use surge_schemas::Contract;

/// Scratch topic the at-least-once copy writes to (shaped like coupon-result).
pub const COPY_TOPIC: &str = "bench-copy";

pub struct Sandbox {
    /// The settings every part of this run uses (topic prefix set).
    pub settings: Settings,
    /// The run's names (its prefix).
    pub names: Names,
    pub factory: ClientFactory,
    /// Partitions of coupon-issue (and of every output watched).
    pub partitions: i32,
    /// Every topic created for the run (dropped at the end).
    topics: Vec<String>,
}

impl Sandbox {
    /// Creates `<prefix>*` for every declared topic plus the copy target.
    pub async fn create(settings: &Settings, prefix: String) -> anyhow::Result<Self> {
        let mut settings = settings.clone();
        settings.topics.name_prefix = prefix;
        let names = Names::from_settings(&settings);
        let factory = ClientFactory::new(settings.kafka.clone());
        let mut specs = topics::load(&settings.topics.file, &settings.topics)?;
        let result = specs
            .iter()
            .find(|s| s.name == names.topic(CouponDecision::TOPIC))
            .context("coupon-result in the topics file")?
            .clone();
        let partitions = specs
            .iter()
            .find(|s| s.name == names.topic(CouponCommand::TOPIC))
            .context("coupon-issue in the topics file")?
            .partitions;
        specs.push(topics::TopicSpec {
            name: names.topic(COPY_TOPIC),
            ..result
        });
        topics::apply(&factory.admin()?, &specs, Duration::from_secs(30)).await?;
        Ok(Self {
            topics: specs.into_iter().map(|s| s.name).collect(),
            settings,
            names,
            factory,
            partitions,
        })
    }

    /// The sandbox of one step of a run, `bench-<run_id>-<label>-*`, and
    /// the folder beside the report where its processes write their logs.
    pub async fn for_step(
        settings: &Settings,
        run_id: &str,
        label: &str,
        out_dir: &std::path::Path,
    ) -> anyhow::Result<(Self, std::path::PathBuf)> {
        let sandbox = Self::create(settings, format!("bench-{run_id}-{label}-")).await?;
        let logs = out_dir.join(sandbox.prefix().trim_end_matches('-'));
        std::fs::create_dir_all(&logs)?;
        Ok((sandbox, logs))
    }

    pub fn prefix(&self) -> &str {
        self.names.prefix()
    }

    /// The run's copy of topic `base`.
    pub fn topic(&self, base: &str) -> String {
        self.names.topic(base)
    }

    /// Partitions `base` was created with in the sandbox (the topics file).
    pub fn partitions_of(&self, base: &str) -> anyhow::Result<i32> {
        let name = self.topic(base);
        topics::load(&self.settings.topics.file, &self.settings.topics)?
            .into_iter()
            .find(|s| s.name == name)
            .map(|s| s.partitions)
            .with_context(|| format!("{base} in the topics file"))
    }

    /// Deletes the run's topics (best effort: a leftover is only disk).
    pub async fn drop_topics(self) {
        let names: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let outcome = match self.factory.admin() {
            Ok(admin) => admin.delete_topics(&names, &opts).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            super::say(format!("could not delete {}*: {e}", self.prefix()));
        }
    }
}
