//! Kafka client configurations from [`KafkaSettings`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{BaseProducer, DeliveryResult, FutureProducer, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use surge_core::settings::{KafkaSettings, SecurityProtocol};

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
    /// A refused login or TLS handshake is named as such, not as the
    /// transport failure librdkafka's metadata call reports for it.
    pub fn ping(&self, timeout: Duration) -> Result<usize, PingError> {
        let producer = self.door_client("ping")?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = producer
                .client()
                .fetch_metadata(None, left.min(Duration::from_millis(500)));
            producer.poll(Duration::ZERO);
            if let Some(refused) = self.refusal(producer.context()) {
                return Err(PingError::Refused(refused));
            }
            match answer {
                Ok(md) => return Ok(md.brokers().len()),
                Err(e) if Instant::now() >= deadline => return Err(PingError::Kafka(e)),
                Err(_) => {}
            }
        }
    }

    /// For a process about to start its clients: with TLS or SASL
    /// configured, connects once and returns `Err` only if the cluster
    /// turned the client away (SASL authentication or the TLS handshake
    /// failed: a wrong password, user or mechanism, a CA that did not sign
    /// the broker's certificate), which retrying cannot mend. An unreachable
    /// cluster is not judged here: after `timeout` it returns `Ok` and the
    /// process's own outage handling takes over. Plaintext: `Ok` at once.
    /// Blocking.
    pub fn check_access(&self, timeout: Duration) -> Result<(), AccessRefused> {
        if self.settings.security_protocol == SecurityProtocol::Plaintext {
            return Ok(());
        }
        match self.ping(timeout) {
            Err(PingError::Refused(r)) => Err(r),
            _ => Ok(()),
        }
    }

    fn door_client(&self, role: &str) -> KafkaResult<BaseProducer<DoorContext>> {
        self.finish(self.base(role))
            .create_with_context(DoorContext::default())
    }

    fn refusal(&self, door: &DoorContext) -> Option<AccessRefused> {
        let (code, reason) = door.refused.lock().unwrap().clone()?;
        let k = &self.settings;
        let sasl = matches!(
            k.security_protocol,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        );
        let mut how = k.security_protocol.as_librdkafka().to_string();
        if sasl {
            how += &format!(
                ", {} as user {}",
                k.sasl_mechanism.as_deref().unwrap_or("GSSAPI"),
                k.sasl_username.as_deref().unwrap_or("(none)")
            );
        }
        let check = if code == RDKafkaErrorCode::Authentication {
            "kafka.sasl_mechanism, kafka.sasl_username and kafka.sasl_password (SURGE_KAFKA__SASL_PASSWORD)"
        } else {
            "kafka.ssl_ca_location (the CA that signed the brokers' certificates) and the bootstrap host names"
        };
        Some(AccessRefused {
            servers: k.bootstrap_servers.clone(),
            how,
            reason,
            check,
        })
    }
}

/// The cluster turned a client away at the door: SASL authentication or
/// the TLS handshake failed. A configuration error, not an outage.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Kafka at {servers} refused the client ({how}): {reason}; check {check}")]
pub struct AccessRefused {
    pub servers: String,
    /// Security protocol, and the SASL mechanism and user when SASL is used.
    pub how: String,
    /// librdkafka's words, e.g. "SASL authentication error: Authentication
    /// failed during authentication due to invalid credentials with SASL
    /// mechanism SCRAM-SHA-512".
    pub reason: String,
    check: &'static str,
}

/// Why [`ClientFactory::ping`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error(transparent)]
    Refused(AccessRefused),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// The callbacks of [`ClientFactory::ping`]'s client: keeps the first
/// authentication or TLS error librdkafka reports; the rest is debug (the
/// caller reports the outcome once).
#[derive(Default)]
struct DoorContext {
    refused: Mutex<Option<(RDKafkaErrorCode, String)>>,
}

impl ClientContext for DoorContext {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!(target: "librdkafka", message, fac);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(code @ (RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)) => {
                let mut refused = self.refused.lock().unwrap();
                if refused.is_none() {
                    *refused = Some((code, reason.to_string()));
                }
            }
            _ => tracing::debug!(message = "kafka access check", %error, reason),
        }
    }
}

impl ProducerContext for DoorContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
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

    #[test]
    fn plaintext_skips_the_access_check_and_an_unreachable_cluster_is_not_a_refusal() {
        let mut k = KafkaSettings::default();
        k.bootstrap_servers = "127.0.0.1:1".into(); // nothing listens there
        let started = Instant::now();
        assert!(ClientFactory::new(k.clone())
            .check_access(Duration::from_secs(30))
            .is_ok());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no connection tried"
        );
        k.security_protocol = SecurityProtocol::SaslPlaintext;
        k.sasl_mechanism = Some("SCRAM-SHA-512".into());
        k.sasl_username = Some("u".into());
        k.sasl_password = Some("p".into());
        let f = ClientFactory::new(k);
        assert!(
            f.check_access(Duration::from_secs(1)).is_ok(),
            "down is not refused"
        );
        assert!(matches!(
            f.ping(Duration::from_secs(1)),
            Err(PingError::Kafka(_))
        ));
    }
}
