//! Writing one batch: its rows and the consumed offsets in one transaction.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use sqlx::PgPool;
use surge_sink::{OffsetAdvance, SinkStore, StoreError};

use crate::rows::Rows;

/// PostgreSQL as a sink's store for batches `R` (one topic's rows); offsets
/// in `sink_offsets` under `sink`. One per topic, sharing the pool.
pub struct PostgresStore<R> {
    pool: PgPool,
    sink: String,
    runtime: tokio::runtime::Handle,
    _rows: PhantomData<fn() -> R>,
}

impl<R> PostgresStore<R> {
    pub fn new(pool: PgPool, sink: &str, runtime: tokio::runtime::Handle) -> Self {
        Self {
            pool,
            sink: sink.to_string(),
            runtime,
            _rows: PhantomData,
        }
    }
}

impl<R: Rows> SinkStore for PostgresStore<R> {
    type Batch = R;

    fn stored_offsets(&self, topic: &str) -> Result<BTreeMap<i32, i64>, StoreError> {
        self.runtime
            .block_on(stored_offsets(&self.pool, &self.sink, topic))
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Upserts are idempotent and offsets only move forward, so a write
    /// from an older position is harmless here: `offsets.from` is not checked.
    fn write(&self, topic: &str, batch: &R, offsets: &OffsetAdvance) -> Result<(), StoreError> {
        self.runtime
            .block_on(write_batch(
                &self.pool,
                &self.sink,
                topic,
                batch,
                &offsets.to,
            ))
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }
}

/// Offsets stored for `sink` on `topic`: partition → next offset to consume.
pub async fn stored_offsets(
    pool: &PgPool,
    sink: &str,
    topic: &str,
) -> Result<BTreeMap<i32, i64>, sqlx::Error> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "select partition, next_offset from sink_offsets where sink = $1 and topic = $2",
    )
    .bind(sink)
    .bind(topic)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Writes `rows` and moves the stored offsets to `next_offsets`, atomically.
/// Stored offsets only move forward: a stale instance cannot move them back.
pub async fn write_batch<R: Rows>(
    pool: &PgPool,
    sink: &str,
    topic: &str,
    rows: &R,
    next_offsets: &BTreeMap<i32, i64>,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    rows.write(&mut tx).await?;
    let partitions: Vec<i32> = next_offsets.keys().copied().collect();
    let offsets: Vec<i64> = next_offsets.values().copied().collect();
    sqlx::query(
        "insert into sink_offsets (sink, topic, partition, next_offset)
         select $1, $2, p, o from unnest($3::int[], $4::bigint[]) as t(p, o)
         on conflict (sink, topic, partition) do update set next_offset = excluded.next_offset
         where sink_offsets.next_offset < excluded.next_offset",
    )
    .bind(sink)
    .bind(topic)
    .bind(&partitions)
    .bind(&offsets)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}
