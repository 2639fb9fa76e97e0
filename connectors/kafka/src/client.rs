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
            .set("linger.ms", "5")
            // The coordinator answers CONCURRENT_TRANSACTIONS while the
            // previous transaction's markers are still being written, and
            // librdkafka retries AddOffsetsToTxn after retry.backoff.ms:
            // its 100 ms default is a whole commit interval of waiting for
            // a condition that clears in milliseconds (measured: a commit's
            // send_offsets step 86-119 ms, 21 ms after). librdkafka retries
            // AddPartitionsToTxn after a fixed 20 ms for the same reason,
            // as Java's producer does (KAFKA-5477); repeated retries still
            // back off exponentially to retry.backoff.max.ms.
            .set("retry.backoff.ms", "20");
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
    /// transport failure librdkafka's metadata call reports for it; so is a
    /// client librdkafka cannot create with TLS or SASL configured (e.g. an
    /// ssl.ca.location file that is missing or unreadable).
    pub fn ping(&self, timeout: Duration) -> Result<usize, PingError> {
        let producer = match self.door_client("ping") {
            Ok(p) => p,
            Err(KafkaError::ClientCreation(reason)) if self.secured() => {
                return Err(PingError::Refused(self.not_created(reason)));
            }
            Err(e) => return Err(PingError::Kafka(e)),
        };
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = producer
                .client()
                .fetch_metadata(None, left.min(Duration::from_millis(500)));
            // Serve every queued callback, not just one: rdkafka's poll
            // handles a single event per call when its timeout has passed
            // (poll(ZERO)), and the refusal may be queued behind many log
            // events (under load it then surfaced only after the deadline).
            producer.poll(Duration::from_millis(100));
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
    /// configured, connects once and returns `Err` only if the settings
    /// cannot work, which retrying cannot mend: the cluster turned the
    /// client away (SASL authentication or the TLS handshake failed: a
    /// wrong password, user or mechanism, a CA that did not sign the
    /// broker's certificate), or librdkafka could not even create the
    /// client (e.g. a missing or unreadable ssl.ca.location file). An
    /// unreachable cluster is not judged here: after `timeout` it returns
    /// `Ok` and the process's own outage handling takes over. Plaintext:
    /// `Ok` at once. Blocking.
    pub fn check_access(&self, timeout: Duration) -> Result<(), AccessRefused> {
        if !self.secured() {
            return Ok(());
        }
        match self.ping(timeout) {
            Err(PingError::Refused(r)) => Err(r),
            Ok(_) | Err(PingError::Kafka(_)) => Ok(()),
        }
    }

    /// TLS or SASL is configured.
    fn secured(&self) -> bool {
        self.settings.security_protocol != SecurityProtocol::Plaintext
    }

    fn door_client(&self, role: &str) -> KafkaResult<BaseProducer<DoorContext>> {
        self.finish(self.base(role))
            .create_with_context(DoorContext::default())
    }

    fn refusal(&self, door: &DoorContext) -> Option<AccessRefused> {
        let (code, reason) = door.refused.lock().unwrap().clone()?;
        let check = if code == RDKafkaErrorCode::Authentication {
            SASL_SETTINGS.to_string()
        } else {
            "kafka.ssl_ca_location (the CA that signed the brokers' certificates) and the bootstrap host names".to_string()
        };
        Some(AccessRefused {
            servers: self.settings.bootstrap_servers.clone(),
            how: self.how(),
            what: "refused the client",
            reason,
            check,
        })
    }

    /// librdkafka could not create a client with these settings (it checks
    /// the TLS files and the SASL mechanism then): `reason` is its words,
    /// e.g. "ssl.ca.location failed: ...". Names the settings (and the
    /// file, as librdkafka was given it) to check.
    fn not_created(&self, reason: String) -> AccessRefused {
        // The effective values: the raw librdkafka map may override them.
        let config = self.plain_config("ping");
        let file = |property: &str, setting: &str, what: &str| {
            let env = setting.to_uppercase();
            match config.get(property) {
                None => format!("kafka.{setting} (SURGE_KAFKA__{env}), not set: {what}"),
                Some(path) => {
                    // librdkafka's reason may say no more than "system lib".
                    let opened = match std::fs::File::open(path) {
                        Ok(_) => String::new(),
                        Err(e) => format!(", which cannot be opened ({e})"),
                    };
                    format!("kafka.{setting} (SURGE_KAFKA__{env}) = {path}{opened}: {what}")
                }
            }
        };
        let check = if reason.contains("ssl.ca.location") {
            file(
                "ssl.ca.location",
                "ssl_ca_location",
                "a readable PEM file with the CA that signed the brokers' certificates",
            )
        } else if reason.contains("ssl.certificate.location") {
            file(
                "ssl.certificate.location",
                "ssl_certificate_location",
                "a readable PEM file with the client's certificate",
            )
        } else if reason.contains("ssl.key.location") {
            file(
                "ssl.key.location",
                "ssl_key_location",
                "a readable PEM file with the client certificate's private key",
            )
        } else if reason.to_ascii_lowercase().contains("sasl") {
            SASL_SETTINGS.to_string()
        } else {
            "kafka.security_protocol, kafka.ssl_ca_location, kafka.ssl_certificate_location, \
             kafka.ssl_key_location, the kafka.sasl_* settings and [kafka.librdkafka]"
                .to_string()
        };
        AccessRefused {
            servers: self.settings.bootstrap_servers.clone(),
            how: self.how(),
            what: "cannot be used: librdkafka could not create a client",
            reason,
            check,
        }
    }

    /// The security protocol, and the SASL mechanism and user when SASL is used.
    fn how(&self) -> String {
        let k = &self.settings;
        let mut how = k.security_protocol.as_librdkafka().to_string();
        if matches!(
            k.security_protocol,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        ) {
            how += &format!(
                ", {} as user {}",
                k.sasl_mechanism.as_deref().unwrap_or("GSSAPI"),
                k.sasl_username.as_deref().unwrap_or("(none)")
            );
        }
        how
    }
}

const SASL_SETTINGS: &str =
    "kafka.sasl_mechanism, kafka.sasl_username and kafka.sasl_password (SURGE_KAFKA__SASL_PASSWORD)";

/// The cluster turned a client away at the door (SASL authentication or
/// the TLS handshake failed), or librdkafka could not create a client with
/// the TLS/SASL settings (e.g. a missing CA file). A configuration error,
/// not an outage.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Kafka at {servers} {what} ({how}): {reason}; check {check}")]
pub struct AccessRefused {
    pub servers: String,
    /// Security protocol, and the SASL mechanism and user when SASL is used.
    pub how: String,
    /// librdkafka's words, e.g. "SASL authentication error: Authentication
    /// failed during authentication due to invalid credentials with SASL
    /// mechanism SCRAM-SHA-512", or "ssl.ca.location failed: ...".
    pub reason: String,
    /// "refused the client", or that no client could be created.
    what: &'static str,
    /// The settings to check (and the file, when one is at fault).
    check: String,
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

    /// SCRAM-SHA-512 as user `u` with password `password`.
    fn scram(protocol: SecurityProtocol, password: &str) -> KafkaSettings {
        KafkaSettings {
            security_protocol: protocol,
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            sasl_username: Some("u".into()),
            sasl_password: Some(password.into()),
            ..KafkaSettings::default()
        }
    }

    #[test]
    fn security_and_raw_settings_reach_every_client() {
        let mut k = scram(SecurityProtocol::SaslSsl, "p");
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
        let nowhere = "127.0.0.1:1".to_string(); // nothing listens there
        let k = KafkaSettings {
            bootstrap_servers: nowhere.clone(),
            ..KafkaSettings::default()
        };
        let started = Instant::now();
        assert!(ClientFactory::new(k)
            .check_access(Duration::from_secs(30))
            .is_ok());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no connection tried"
        );
        let f = ClientFactory::new(KafkaSettings {
            bootstrap_servers: nowhere,
            ..scram(SecurityProtocol::SaslPlaintext, "p")
        });
        assert!(
            f.check_access(Duration::from_secs(1)).is_ok(),
            "down is not refused"
        );
        assert!(matches!(
            f.ping(Duration::from_secs(1)),
            Err(PingError::Kafka(_))
        ));
    }

    #[test]
    fn a_client_librdkafka_cannot_create_is_refused_naming_the_file() {
        let missing =
            std::env::temp_dir().join(format!("surge-no-such-dir-{}/ca.pem", std::process::id()));
        for protocol in [SecurityProtocol::Ssl, SecurityProtocol::SaslSsl] {
            let f = ClientFactory::new(KafkaSettings {
                bootstrap_servers: "127.0.0.1:1".into(), // never reached
                ssl_ca_location: Some(missing.clone()),
                ..scram(protocol, "s3cret-pw")
            });
            let started = Instant::now();
            let refused = f
                .check_access(Duration::from_secs(30))
                .expect_err("a missing CA file is not an outage");
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "judged at client creation, without waiting for the cluster"
            );
            let said = refused.to_string();
            // librdkafka's own words name the property; ours the setting and file.
            assert!(said.contains("ssl.ca.location failed"), "{said}");
            assert!(said.contains("could not create a client"), "{said}");
            assert!(
                said.contains("kafka.ssl_ca_location (SURGE_KAFKA__SSL_CA_LOCATION)"),
                "{said}"
            );
            assert!(said.contains(&missing.display().to_string()), "{said}");
            assert!(said.contains("No such file or directory"), "{said}");
            assert!(!said.contains("s3cret-pw"), "no password in it: {said}");
            // doctor's ping reports it the same way.
            assert!(matches!(
                f.ping(Duration::from_secs(1)),
                Err(PingError::Refused(_))
            ));
        }
        // A file named in the raw librdkafka map (applied last) is the one named.
        let mut k = KafkaSettings {
            bootstrap_servers: "127.0.0.1:1".into(),
            security_protocol: SecurityProtocol::Ssl,
            ..KafkaSettings::default()
        };
        k.librdkafka
            .insert("ssl.ca.location".into(), missing.display().to_string());
        let said = ClientFactory::new(k)
            .check_access(Duration::from_secs(30))
            .expect_err("a missing CA file")
            .to_string();
        assert!(said.contains(&missing.display().to_string()), "{said}");
    }
}
