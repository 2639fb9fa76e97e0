//! Kafka client configurations from [`KafkaSettings`].

use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;
use surge_core::settings::KafkaSettings;

/// Builds every Kafka client of a process from one settings section.
#[derive(Debug, Clone)]
pub struct ClientFactory {
    settings: KafkaSettings,
}

impl ClientFactory {
    pub fn new(settings: KafkaSettings) -> Self {
        Self { settings }
    }

    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }

    /// Connection and security settings common to all clients; `role`
    /// suffixes the client.id so broker logs show who is who.
    pub fn base(&self, role: &str) -> ClientConfig {
        let k = &self.settings;
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &k.bootstrap_servers)
            .set("client.id", format!("{}-{role}", k.client_id))
            .set("security.protocol", k.security_protocol.as_librdkafka());
        let optional = [
            ("sasl.mechanism", k.sasl_mechanism.clone()),
            ("sasl.username", k.sasl_username.clone()),
            ("sasl.password", k.sasl_password.clone()),
            (
                "ssl.ca.location",
                k.ssl_ca_location.as_ref().map(|p| p.display().to_string()),
            ),
            (
                "ssl.certificate.location",
                k.ssl_certificate_location
                    .as_ref()
                    .map(|p| p.display().to_string()),
            ),
            (
                "ssl.key.location",
                k.ssl_key_location.as_ref().map(|p| p.display().to_string()),
            ),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                c.set(key, v);
            }
        }
        c
    }

    /// Applies the raw librdkafka map last, so operators can override anything.
    fn finish(&self, mut c: ClientConfig) -> ClientConfig {
        for (k, v) in &self.settings.librdkafka {
            c.set(k, v);
        }
        c
    }

    /// A client with only the connection settings (and the raw overrides),
    /// for metadata and group queries.
    pub fn plain_config(&self, role: &str) -> ClientConfig {
        self.finish(self.base(role))
    }

    /// An admin client.
    pub fn admin(&self) -> KafkaResult<AdminClient<DefaultClientContext>> {
        self.finish(self.base("admin")).create()
    }

    /// An idempotent producer (acks=all): what the gateway and tools use.
    /// Keys are partitioned with murmur2 like the Java client's default, so a
    /// coupon lands on the same partition whichever client produced it.
    pub fn idempotent_producer(&self, role: &str) -> KafkaResult<FutureProducer> {
        self.idempotent_producer_config(role).create()
    }

    /// The config of [`Self::idempotent_producer`], to adjust before creating
    /// (e.g. the gateway bounds message.timeout.ms by its answer deadline).
    pub fn idempotent_producer_config(&self, role: &str) -> ClientConfig {
        let mut c = self.base(role);
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("partitioner", "murmur2_random");
        self.finish(c)
    }

    /// The config of a transactional producer with `transactional_id`.
    pub fn transactional_producer_config(
        &self,
        role: &str,
        transactional_id: &str,
    ) -> ClientConfig {
        let mut c = self.base(role);
        c.set("transactional.id", transactional_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("transaction.timeout.ms", "60000")
            .set("linger.ms", "5");
        self.finish(c)
    }

    /// The config of a consumer that only sees committed transactions and
    /// commits nothing on its own.
    pub fn read_committed_consumer_config(&self, role: &str, group_id: &str) -> ClientConfig {
        let mut c = self.base(role);
        c.set("group.id", group_id)
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        self.finish(c)
    }

    /// Checks that the cluster answers (metadata within `timeout`); blocking.
    pub fn ping(&self, timeout: Duration) -> KafkaResult<usize> {
        let consumer: BaseConsumer = self.finish(self.base("ping")).create()?;
        let md = consumer.fetch_metadata(None, timeout)?;
        Ok(md.brokers().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use surge_core::settings::SecurityProtocol;

    #[test]
    fn security_and_raw_settings_reach_every_client() {
        let mut k = KafkaSettings::default();
        k.security_protocol = SecurityProtocol::SaslSsl;
        k.sasl_mechanism = Some("SCRAM-SHA-512".into());
        k.sasl_username = Some("u".into());
        k.sasl_password = Some("p".into());
        k.librdkafka.insert("acks".into(), "1".into());
        let f = ClientFactory::new(k);
        let c = f.transactional_producer_config("coupon", "tx-1");
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("transactional.id"), Some("tx-1"));
        assert_eq!(c.get("acks"), Some("1"), "the raw map is applied last");
        let c = f.read_committed_consumer_config("coupon", "g");
        assert_eq!(c.get("isolation.level"), Some("read_committed"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("sasl.username"), Some("u"));
    }
}
