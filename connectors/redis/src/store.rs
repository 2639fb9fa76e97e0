//! Redis as a sink's store: each batch is one script run (see write_batch.lua).

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Mutex;
use std::time::Duration;

use redis::{Connection, Script, Value};
use surge_sink::{OffsetAdvance, SinkStore, StoreError};

use crate::keys::Keyspace;
use crate::mappings::KeyMapping;

/// Timeout of connecting and of each command (a script over a batch included).
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Redis as a sink's store for batches `B` (one topic's key writes). One per
/// topic; each holds its own connection.
pub struct RedisStore<B> {
    client: redis::Client,
    keys: Keyspace,
    script: Script,
    /// Reconnected after any error: a half-read reply must not be reused.
    connection: Mutex<Option<Connection>>,
    _batch: PhantomData<fn() -> B>,
}

impl<B> RedisStore<B> {
    pub fn new(url: &str, keys: Keyspace) -> redis::RedisResult<Self> {
        Ok(Self {
            client: redis::Client::open(url)?,
            keys,
            script: Script::new(include_str!("write_batch.lua")),
            connection: Mutex::new(None),
            _batch: PhantomData,
        })
    }

    fn with_connection<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut slot = self.connection.lock().expect("connection lock");
        if slot.is_none() {
            let c = self
                .client
                .get_connection_with_timeout(IO_TIMEOUT)
                .map_err(unavailable)?;
            c.set_read_timeout(Some(IO_TIMEOUT)).map_err(unavailable)?;
            c.set_write_timeout(Some(IO_TIMEOUT)).map_err(unavailable)?;
            *slot = Some(c);
        }
        let result = f(slot.as_mut().expect("connected"));
        if result.is_err() {
            *slot = None;
        }
        result.map_err(unavailable)
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl<B: KeyMapping> SinkStore for RedisStore<B> {
    type Batch = B;

    fn stored_offsets(&self, topic: &str) -> Result<BTreeMap<i32, i64>, StoreError> {
        let raw: BTreeMap<String, String> =
            self.with_connection(|c| redis::cmd("HGETALL").arg(self.keys.offsets(topic)).query(c))?;
        raw.iter()
            .map(|(p, o)| match (p.parse(), o.parse()) {
                (Ok(p), Ok(o)) => Ok((p, o)),
                _ => Err(StoreError::Unavailable(format!(
                    "{} holds {p:?} → {o:?}, not partition → offset",
                    self.keys.offsets(topic)
                ))),
            })
            .collect()
    }

    fn write(&self, topic: &str, batch: &B, offsets: &OffsetAdvance) -> Result<(), StoreError> {
        let writes = batch.key_writes(&self.keys);
        let mut invocation = self.script.prepare_invoke();
        invocation.key(self.keys.offsets(topic));
        invocation.arg(offsets.to.len());
        for (partition, next) in &offsets.to {
            let from = offsets.from.get(partition).copied().flatten();
            invocation
                .arg(partition)
                .arg(from.map(|o| o.to_string()).unwrap_or_default())
                .arg(next);
        }
        invocation.arg(writes.deletes.len());
        for key in &writes.deletes {
            invocation.arg(key);
        }
        invocation.arg(writes.hashes.len());
        for h in &writes.hashes {
            invocation
                .arg(&h.key)
                .arg(h.offset)
                .arg(if h.only_existing { "1" } else { "0" })
                .arg(h.fields.len());
            for (f, v) in &h.fields {
                invocation.arg(*f).arg(v);
            }
        }
        invocation.arg(writes.statuses.len());
        for u in &writes.statuses {
            invocation
                .arg(&u.key)
                .arg(&u.field)
                .arg(u.offset)
                .arg(&u.status)
                .arg(u.sticky.unwrap_or(""));
        }
        invocation.arg(writes.once.len());
        for (key, field, value) in &writes.once {
            invocation.arg(key).arg(field).arg(value);
        }
        let reply: Vec<Value> = self.with_connection(|c| invocation.invoke(c))?;
        match reply.first() {
            Some(Value::Int(1)) => Ok(()),
            Some(Value::Int(0)) => Err(StoreError::Diverged(format!(
                "partition {} is stored at {:?}, the sink expected another offset",
                text(reply.get(1)),
                text(reply.get(2))
            ))),
            _ => Err(StoreError::Unavailable(format!(
                "unexpected script reply {reply:?}"
            ))),
        }
    }
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::Int(i)) => i.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
