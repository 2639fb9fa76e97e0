//! A bench-private copy of the declared topics: the same file and the same
//! reconciler as `surge topics apply`, under a prefix of its own, so a bench
//! run never reads or writes anyone's data and its numbers never include
//! anyone else's traffic. Dropped at the end so runs do not pile up on the
//! broker.

use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::AdminOptions;
use surge_core::Settings;
use surge_kafka::{topics, ClientFactory};

/// Scratch topic the at-least-once copy writes to (shaped like coupon-result).
pub const COPY_TOPIC: &str = "bench-copy";

pub struct Sandbox {
    /// The settings every part of this run uses (topic prefix set).
    pub settings: Settings,
    pub factory: ClientFactory,
    /// Partitions of coupon-issue (and of every output watched).
    pub partitions: i32,
    names: Vec<String>,
}

impl Sandbox {
    /// Creates `<prefix>*` for every declared topic plus the copy target.
    pub async fn create(settings: &Settings, prefix: String) -> anyhow::Result<Self> {
        let mut settings = settings.clone();
        settings.topics.name_prefix = prefix;
        let factory = ClientFactory::new(settings.kafka.clone());
        let mut specs = topics::load(&settings.topics.file, &settings.topics)?;
        let result = specs
            .iter()
            .find(|s| s.name == format!("{}coupon-result", settings.topics.name_prefix))
            .context("coupon-result in the topics file")?
            .clone();
        let partitions = specs
            .iter()
            .find(|s| s.name == format!("{}coupon-issue", settings.topics.name_prefix))
            .context("coupon-issue in the topics file")?
            .partitions;
        specs.push(topics::TopicSpec {
            name: format!("{}{COPY_TOPIC}", settings.topics.name_prefix),
            ..result
        });
        topics::apply(&factory.admin()?, &specs, Duration::from_secs(30)).await?;
        Ok(Self {
            names: specs.into_iter().map(|s| s.name).collect(),
            settings,
            factory,
            partitions,
        })
    }

    pub fn prefix(&self) -> &str {
        &self.settings.topics.name_prefix
    }

    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.prefix())
    }

    /// Deletes the run's topics (best effort: a leftover is only disk).
    pub async fn drop_topics(self) {
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
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
