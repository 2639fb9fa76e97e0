//! The schema registry, spoken through its Confluent-compatible REST API
//! (Apicurio Registry serves it under `/apis/ccompat/v7`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::Schema;
use schema_registry_converter::async_impl::schema_registry::{
    get_schema_by_id, get_schema_by_subject, is_compatible_schema, post_schema, SrSettings,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};

/// A registry call that failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry does not know this schema id (a poison record, not an outage).
    #[error("schema id {0} is not in the registry")]
    UnknownSchemaId(u32),
    /// The subject has no version yet.
    #[error("subject {0} has no registered version")]
    UnknownSubject(String),
    /// The registry refused a schema as incompatible with the subject's versions.
    #[error("registry rejected the schema for {subject}: {message}")]
    Incompatible { subject: String, message: String },
    /// A schema text the registry returned that does not parse.
    #[error("registry returned an unparsable schema for {what}: {error}")]
    BadSchema { what: String, error: String },
    /// Transport or server trouble: worth retrying.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
}

impl RegistryError {
    /// Whether calling again later may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// A transport error with its causes ("error sending request" alone hides
/// whether the connection was refused or the call timed out).
fn transport(e: reqwest::Error) -> RegistryError {
    // reqwest's message names the URL, a password in it included; the
    // caller says which registry call it was.
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    RegistryError::Unavailable(text)
}

fn classify(e: SRCError, not_found: impl FnOnce() -> RegistryError) -> RegistryError {
    // The converter's messages embed reqwest's, URL and password included.
    let text = without_passwords(&e.to_string());
    if text.contains("404")
        || text.contains("40403")
        || text.contains("40401")
        || text.contains("not found")
    {
        not_found()
    } else if text.contains("409") {
        RegistryError::Incompatible {
            subject: String::new(),
            message: text,
        }
    } else {
        // Whatever else went wrong (transport, 5xx, an unreadable answer)
        // is an outage to its callers: they retry or report it.
        RegistryError::Unavailable(text)
    }
}

/// `text` with the password of every `scheme://user:password@` in it
/// replaced by `<redacted>`.
fn without_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == ')')
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority
            .rsplit_once('@')
            .and_then(|(info, host)| info.split_once(':').map(|(user, _)| (user, host)))
        {
            Some((user, host)) => {
                out.push_str(user);
                out.push_str(":<redacted>@");
                out.push_str(host);
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

/// Where [`Registry::offline`] points (`.invalid` never resolves, RFC 2606).
const OFFLINE_URL: &str = "http://offline.invalid/apis/ccompat/v7";

/// A registered version of a subject.
#[derive(Debug, Clone)]
pub struct RegisteredVersion {
    pub id: u32,
    pub version: Option<u32>,
    pub schema: String,
}

/// Client for one registry, with a cache of schemas by id.
#[derive(Clone)]
pub struct Registry {
    url: String,
    settings: SrSettings,
    http: reqwest::Client,
    by_id: Arc<Mutex<HashMap<u32, &'static WriterSchema>>>,
    /// Never calls out: only remembered schemas are known (see [`Registry::offline`]).
    offline: bool,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password (basic auth); Debug ends up in logs.
        let mut url = self.url.clone();
        if let Ok(mut parsed) = reqwest::Url::parse(&self.url) {
            if parsed.password().is_some() && parsed.set_password(Some("<redacted>")).is_ok() {
                url = parsed.to_string();
            }
        }
        f.debug_struct("Registry").field("url", &url).finish()
    }
}

impl Registry {
    /// `url` is the Confluent API root, e.g. `http://127.0.0.1:8081/apis/ccompat/v7`.
    pub fn new(url: &str) -> Self {
        let url = url.trim_end_matches('/').to_string();
        Self {
            settings: SrSettings::new(url.clone()),
            url,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .expect("a TLS backend is compiled in"),
            by_id: Arc::default(),
            offline: false,
        }
    }

    /// A registry that makes no network call (in-process tests): it knows
    /// only the schemas given to [`Registry::remember`], answers
    /// [`RegistryError::UnknownSchemaId`] for any other id (a poison record,
    /// as a real registry would say) and [`RegistryError::Unavailable`] to
    /// every subject call. Its URL is unroutable besides.
    pub fn offline() -> Self {
        Self {
            offline: true,
            ..Self::new(OFFLINE_URL)
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn online(&self, what: &str) -> Result<(), RegistryError> {
        if self.offline {
            return Err(RegistryError::Unavailable(format!(
                "{what}: offline registry (no network calls)"
            )));
        }
        Ok(())
    }

    /// Registers `schema` under `subject` (or finds it if already there) and returns its id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        self.online(subject)?;
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_string());
        post_schema(&self.settings, subject.to_string(), supplied)
            .await
            .map(|r| r.id)
            .map_err(
                |e| match classify(e, || RegistryError::UnknownSubject(subject.to_string())) {
                    RegistryError::Incompatible { message, .. } => RegistryError::Incompatible {
                        subject: subject.to_string(),
                        message,
                    },
                    other => other,
                },
            )
    }

    /// The latest version of `subject`, or `None` if it has none.
    pub async fn latest(&self, subject: &str) -> Result<Option<RegisteredVersion>, RegistryError> {
        self.online(subject)?;
        let strategy = SubjectNameStrategy::TopicNameStrategy(
            subject
                .strip_suffix("-value")
                .unwrap_or(subject)
                .to_string(),
            false,
        );
        match get_schema_by_subject(&self.settings, &strategy).await {
            Ok(r) => Ok(Some(RegisteredVersion {
                id: r.id,
                version: r.version,
                schema: r.schema,
            })),
            Err(e) => match classify(e, || RegistryError::UnknownSubject(subject.to_string())) {
                RegistryError::UnknownSubject(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Whether the registry accepts `schema` as the next version of `subject`
    /// under the subject's compatibility level.
    pub async fn is_compatible(&self, subject: &str, schema: &str) -> Result<bool, RegistryError> {
        self.online(subject)?;
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_string());
        is_compatible_schema(&self.settings, subject.to_string(), supplied)
            .await
            .map_err(|e| classify(e, || RegistryError::UnknownSubject(subject.to_string())))
    }

    /// Sets the compatibility level of `subject` (e.g. `BACKWARD`).
    pub async fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), RegistryError> {
        self.online(subject)?;
        let resp = self
            .http
            .put(format!("{}/config/{subject}", self.url))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .json(&serde_json::json!({ "compatibility": level }))
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(RegistryError::Unavailable(format!(
                "PUT /config/{subject}: {status} {body}"
            )));
        }
        Ok(())
    }

    /// The compatibility level set on `subject`, if any.
    pub async fn compatibility(&self, subject: &str) -> Result<Option<String>, RegistryError> {
        self.online(subject)?;
        let resp = self
            .http
            .get(format!("{}/config/{subject}", self.url))
            .send()
            .await
            .map_err(transport)?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body: serde_json::Value = resp.json().await.map_err(transport)?;
        Ok(body
            .get("compatibilityLevel")
            .and_then(|v| v.as_str())
            .map(str::to_string))
    }

    /// The writer schema for `id`, fetched once and cached for the process.
    pub async fn schema_by_id(&self, id: u32) -> Result<&'static WriterSchema, RegistryError> {
        if let Some(s) = self.by_id.lock().expect("cache lock").get(&id) {
            return Ok(s);
        }
        if self.offline {
            return Err(RegistryError::UnknownSchemaId(id));
        }
        let registered = get_schema_by_id(id, &self.settings)
            .await
            .map_err(|e| classify(e, || RegistryError::UnknownSchemaId(id)))?;
        let schema =
            Schema::parse_str(&registered.schema).map_err(|e| RegistryError::BadSchema {
                what: format!("id {id}"),
                error: e.to_string(),
            })?;
        let writer = WriterSchema::kept(schema).map_err(|e| RegistryError::BadSchema {
            what: format!("id {id}"),
            error: e.to_string(),
        })?;
        self.by_id.lock().expect("cache lock").insert(id, writer);
        Ok(writer)
    }

    /// Seeds the cache with a schema whose id is known (our own writer schema).
    pub fn remember(&self, id: u32, schema: &Schema) {
        let writer = WriterSchema::kept(schema.clone()).expect("a contract's own schema resolves");
        self.by_id.lock().expect("cache lock").insert(id, writer);
    }
}

/// A writer schema parsed and resolved once, for as long as the process
/// runs: apache-avro's datum reader resolves a schema's names when it is
/// built, which cost more than decoding the record itself when it was built
/// per record. Kept (leaked) once per distinct schema text, whatever
/// registry client asks: only schemas registered for our subjects get here,
/// a handful per topic.
pub struct WriterSchema {
    pub schema: &'static Schema,
    reader: GenericDatumReader<'static>,
}

impl WriterSchema {
    fn kept(schema: Schema) -> apache_avro::AvroResult<&'static Self> {
        static KEPT: std::sync::OnceLock<Mutex<HashMap<String, &'static WriterSchema>>> =
            std::sync::OnceLock::new();
        // The whole schema, not its Parsing Canonical Form: that drops
        // logical types, and a decimal must not be read as plain bytes.
        let key = serde_json::to_string(&schema).unwrap_or_else(|_| schema.canonical_form());
        let mut kept = KEPT
            .get_or_init(Default::default)
            .lock()
            .expect("schema lock");
        if let Some(w) = kept.get(&key) {
            return Ok(w);
        }
        let schema: &'static Schema = Box::leak(Box::new(schema));
        let reader = GenericDatumReader::builder(schema).build()?;
        let writer: &'static Self = Box::leak(Box::new(Self { schema, reader }));
        kept.insert(key, writer);
        Ok(writer)
    }

    /// The datum in `body` as this schema wrote it (no resolution yet).
    pub fn read(&self, body: &mut &[u8]) -> apache_avro::AvroResult<apache_avro::types::Value> {
        self.reader.read_value(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn neither_debug_nor_a_failed_call_shows_the_urls_password() {
        // Port 9 (discard) on loopback: nothing listens, the call fails fast.
        let registry = Registry::new("http://surge:s3cret@127.0.0.1:9/apis/ccompat/v7");
        let shown = format!("{registry:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("surge:"),
            "{shown}"
        );
        let e = registry
            .http
            .get(format!("{}/subjects", registry.url))
            .send()
            .await
            .map(|_| ())
            .map_err(transport)
            .expect_err("nothing listens");
        assert!(e.is_retriable(), "{e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        // Through the converter's client too (registering).
        let e = registry
            .register("s-value", "\"string\"")
            .await
            .expect_err("nothing listens");
        assert!(e.is_retriable(), "{e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    #[test]
    fn passwords_in_urls_are_cut_out_of_messages() {
        assert_eq!(
            without_passwords(
                "error sending request for url (http://u:p@ss@h:1/x): refused; https://h/y"
            ),
            "error sending request for url (http://u:<redacted>@h:1/x): refused; https://h/y"
        );
        assert_eq!(without_passwords("no url here"), "no url here");
    }
}
