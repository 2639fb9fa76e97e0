//! Redis as a sink's store: each batch is one script run (see write_batch.lua).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use redis::{Connection, Script, Value};
use surge_sink::{OffsetAdvance, SinkStore, StoreError};

use crate::keys::Keyspace;
use crate::mapping::{coupon_fields, request_fields, user_status, CouponResultKeys};

/// Timeout of connecting and of each command (a script over a batch included).
const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct RedisStore {
    client: redis::Client,
    keys: Keyspace,
    script: Script,
    /// Reconnected after any error: a half-read reply must not be reused.
    connection: Mutex<Option<Connection>>,
}

impl RedisStore {
    pub fn new(url: &str, keys: Keyspace) -> redis::RedisResult<Self> {
        Ok(Self {
            client: redis::Client::open(url)?,
            keys,
            script: Script::new(include_str!("write_batch.lua")),
            connection: Mutex::new(None),
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

impl SinkStore for RedisStore {
    type Batch = CouponResultKeys;

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

    fn write(
        &self,
        topic: &str,
        batch: &CouponResultKeys,
        offsets: &OffsetAdvance,
    ) -> Result<(), StoreError> {
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
        invocation.arg(batch.deleted.len() * 2);
        for coupon in &batch.deleted {
            invocation
                .arg(self.keys.coupon(coupon))
                .arg(self.keys.users(coupon));
        }
        invocation.arg(batch.coupons.len() + batch.decisions.len());
        for (at, d) in batch.coupons.values() {
            let fields = coupon_fields(*at, d);
            invocation
                .arg(self.keys.coupon(&d.coupon_id))
                .arg(at.offset)
                .arg(fields.len());
            for (f, v) in fields {
                invocation.arg(f).arg(v);
            }
        }
        for (at, d) in &batch.decisions {
            let fields = request_fields(*at, d);
            invocation
                .arg(self.keys.request(&d.request_id))
                .arg(at.offset)
                .arg(fields.len());
            for (f, v) in fields {
                invocation.arg(f).arg(v);
            }
        }
        let users: Vec<_> = batch
            .decisions
            .iter()
            .filter_map(|(at, d)| d.user_id.as_ref().map(|u| (at, d, u)))
            .collect();
        invocation.arg(users.len());
        for (at, d, user) in users {
            let (outcome, sequence) = user_status(d);
            let status = match sequence {
                Some(s) => format!("{outcome} {s}"),
                None => outcome.to_string(),
            };
            invocation
                .arg(self.keys.users(&d.coupon_id))
                .arg(user)
                .arg(at.offset)
                .arg(status);
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
