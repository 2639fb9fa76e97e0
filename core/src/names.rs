//! Every Kafka topic, registry subject and default consumer group name surge
//! uses is made here, and only here.
//!
//! Names are built from base names (`coupon-issue`, a pipeline's `coupon`)
//! and the settings' `topics.name_prefix`, which isolates tests and tenants:
//! the prefix goes in front of every topic, and the registry subject follows
//! the prefixed topic (TopicNameStrategy), so `surge schemas register` and
//! every producer and consumer agree on it. config/topics.toml declares the
//! base names; a test in surge-kafka checks that every name made here is
//! declared there.
//!
//! This module knows no contract types (surge-core must not depend on
//! surge-schemas): a topic's base name is its contract's `Contract::TOPIC`
//! (public topics and those between pipelines alike); what is named here is
//! what only a pipeline owns.

use crate::Settings;

/// The pipelines, as `surge pipeline <name>` names them. Each owns
/// [`Names::changelog`] and [`Names::dlq`] topics.
pub const PIPELINES: &[&str] = &[COUPON, INVENTORY, ORDER, PAYMENT];

/// The coupon pipeline: coupon-issue → coupon-result (and redeem/release replies).
pub const COUPON: &str = "coupon";
/// The inventory pipeline: stock per product, driven by the order saga.
pub const INVENTORY: &str = "inventory";
/// The order saga.
pub const ORDER: &str = "order";
/// The payment pipeline.
pub const PAYMENT: &str = "payment";

/// The names of one deployment (one topics name prefix).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names under `prefix` (empty: the plain names of config/topics.toml).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// Names under the settings' `topics.name_prefix`.
    pub fn from_settings(settings: &Settings) -> Self {
        Self::new(settings.topics.name_prefix.clone())
    }

    /// The prefix in front of every name.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The topic declared as `base` in config/topics.toml: `<prefix><base>`.
    pub fn topic(&self, base: &str) -> String {
        format!("{}{base}", self.prefix)
    }

    /// The registry subject of the values of topic `base`:
    /// `<prefix><base>-value` (TopicNameStrategy on the prefixed topic).
    pub fn subject(&self, base: &str) -> String {
        format!("{}-value", self.topic(base))
    }

    /// The changelog of `pipeline`'s state: `<prefix><pipeline>-pipeline-changelog`.
    pub fn changelog(&self, pipeline: &str) -> String {
        self.topic(&format!("{pipeline}-pipeline-changelog"))
    }

    /// The dead-letter topic of `pipeline`: `<prefix><pipeline>-pipeline-dlq`.
    pub fn dlq(&self, pipeline: &str) -> String {
        self.topic(&format!("{pipeline}-pipeline-dlq"))
    }

    /// The default consumer group of `pipeline` (`<prefix>surge-<pipeline>`);
    /// `[pipelines.<name>] group_id` overrides it. Its transactional ids
    /// derive from it, so changing it moves committed offsets and fencing.
    pub fn pipeline_group(&self, pipeline: &str) -> String {
        format!("{}surge-{pipeline}", self.prefix)
    }

    /// The default consumer group of the sink into `store`
    /// (`<prefix>surge-sink-<store>`); `[sinks.<store>] group_id` overrides it.
    pub fn sink_group(&self, store: &str) -> String {
        format!("{}surge-sink-{store}", self.prefix)
    }

    /// The name the sink into `store` keeps its offsets under in that store
    /// (`<prefix><store>`), so deployments with different prefixes can share
    /// one database.
    pub fn sink(&self, store: &str) -> String {
        self.topic(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unprefixed_names_are_the_declared_ones() {
        let n = Names::default();
        assert_eq!(n.topic("coupon-issue"), "coupon-issue");
        assert_eq!(n.subject("coupon-issue"), "coupon-issue-value");
        assert_eq!(n.changelog("order"), "order-pipeline-changelog");
        assert_eq!(n.dlq("order"), "order-pipeline-dlq");
        assert_eq!(n.pipeline_group("coupon"), "surge-coupon");
        assert_eq!(n.sink_group("postgres"), "surge-sink-postgres");
        assert_eq!(n.sink("redis"), "redis");
    }

    #[test]
    fn the_prefix_goes_in_front_of_every_name() {
        let n = Names::new("t1-");
        assert_eq!(n.prefix(), "t1-");
        assert_eq!(n.topic("coupon-result"), "t1-coupon-result");
        assert_eq!(
            n.subject("coupon-result"),
            "t1-coupon-result-value",
            "the subject follows the prefixed topic"
        );
        assert_eq!(
            n.subject("coupon-result"),
            format!("{}-value", n.topic("coupon-result"))
        );
        assert_eq!(n.changelog("inventory"), "t1-inventory-pipeline-changelog");
        assert_eq!(n.dlq("payment"), "t1-payment-pipeline-dlq");
        assert_eq!(n.pipeline_group("coupon"), "t1-surge-coupon");
        assert_eq!(n.sink_group("redis"), "t1-surge-sink-redis");
        assert_eq!(n.sink("postgres"), "t1-postgres");
    }

    #[test]
    fn built_from_the_settings_prefix() {
        let mut s = Settings::default();
        assert_eq!(Names::from_settings(&s), Names::default());
        s.topics.name_prefix = "tenant-a.".into();
        assert_eq!(
            Names::from_settings(&s).changelog("coupon"),
            "tenant-a.coupon-pipeline-changelog"
        );
    }

    #[test]
    fn every_pipeline_has_distinct_internal_topics_and_group() {
        let n = Names::default();
        let mut all: Vec<String> = PIPELINES
            .iter()
            .flat_map(|p| [n.changelog(p), n.dlq(p), n.pipeline_group(p)])
            .collect();
        let count = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), count, "two names collide: {all:?}");
    }
}
