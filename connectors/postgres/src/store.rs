//! Writing one batch: rows and the consumed offsets in one transaction.

use std::collections::BTreeMap;

use sqlx::PgPool;
use surge_sink::{OffsetAdvance, SinkStore, StoreError};

use crate::mapping::CouponResultRows;

/// PostgreSQL as a sink's store; offsets in `sink_offsets` under `sink`.
pub struct PostgresStore {
    pool: PgPool,
    sink: String,
    runtime: tokio::runtime::Handle,
}

impl PostgresStore {
    pub fn new(pool: PgPool, sink: &str, runtime: tokio::runtime::Handle) -> Self {
        Self {
            pool,
            sink: sink.to_string(),
            runtime,
        }
    }
}

impl SinkStore for PostgresStore {
    type Batch = CouponResultRows;

    fn stored_offsets(&self, topic: &str) -> Result<BTreeMap<i32, i64>, StoreError> {
        self.runtime
            .block_on(stored_offsets(&self.pool, &self.sink, topic))
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Upserts are idempotent and offsets only move forward, so a write
    /// from an older position is harmless here: `offsets.from` is not checked.
    fn write(
        &self,
        topic: &str,
        batch: &CouponResultRows,
        offsets: &OffsetAdvance,
    ) -> Result<(), StoreError> {
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
pub async fn write_batch(
    pool: &PgPool,
    sink: &str,
    topic: &str,
    rows: &CouponResultRows,
    next_offsets: &BTreeMap<i32, i64>,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !rows.deleted.is_empty() {
        for table in ["issued_coupons", "coupons"] {
            sqlx::query(&format!("delete from {table} where coupon_id = any($1)"))
                .bind(&rows.deleted)
                .execute(&mut *tx)
                .await?;
        }
    }
    if !rows.coupons.is_empty() {
        let c: Vec<_> = rows.coupons.values().collect();
        sqlx::query(
            "insert into coupons (coupon_id, stock, issued, remaining, source_partition, source_offset, updated_at)
             select * from unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::int[], $6::bigint[], $7::timestamptz[])
             on conflict (coupon_id) do update set stock = excluded.stock, issued = excluded.issued, remaining = excluded.remaining,
               source_partition = excluded.source_partition, source_offset = excluded.source_offset, updated_at = excluded.updated_at
             where coupons.source_offset <= excluded.source_offset or coupons.source_partition <> excluded.source_partition",
        )
        .bind(c.iter().map(|d| d.coupon_id.clone()).collect::<Vec<_>>())
        .bind(c.iter().map(|d| d.stock).collect::<Vec<_>>())
        .bind(c.iter().map(|d| d.issued).collect::<Vec<_>>())
        .bind(c.iter().map(|d| d.remaining).collect::<Vec<_>>())
        .bind(c.iter().map(|d| d.source_partition).collect::<Vec<_>>())
        .bind(c.iter().map(|d| d.source_offset).collect::<Vec<_>>())
        .bind(c.iter().map(|d| d.decided_at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !rows.issued.is_empty() {
        let i = &rows.issued;
        sqlx::query(
            "insert into issued_coupons (coupon_id, user_id, sequence, request_id, issued_at)
             select * from unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::timestamptz[])
             on conflict do nothing",
        )
        .bind(i.iter().map(|d| d.coupon_id.clone()).collect::<Vec<_>>())
        .bind(i.iter().map(|d| d.user_id.clone().unwrap_or_default()).collect::<Vec<_>>())
        .bind(i.iter().map(|d| d.sequence.unwrap_or(0)).collect::<Vec<_>>())
        .bind(i.iter().map(|d| d.request_id.clone()).collect::<Vec<_>>())
        .bind(i.iter().map(|d| d.decided_at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !rows.decisions.is_empty() {
        let d: Vec<_> = rows.decisions.values().collect();
        sqlx::query(
            "insert into coupon_decisions (request_id, coupon_id, user_id, outcome, sequence, stock, issued, remaining, reason,
                                           source_partition, source_offset, requested_at, decided_at)
             select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[],
                                  $8::bigint[], $9::text[], $10::int[], $11::bigint[], $12::timestamptz[], $13::timestamptz[])
             on conflict (request_id) do update set coupon_id = excluded.coupon_id, user_id = excluded.user_id,
               outcome = excluded.outcome, sequence = excluded.sequence, stock = excluded.stock, issued = excluded.issued,
               remaining = excluded.remaining, reason = excluded.reason, source_partition = excluded.source_partition,
               source_offset = excluded.source_offset, requested_at = excluded.requested_at, decided_at = excluded.decided_at",
        )
        .bind(d.iter().map(|x| x.request_id.clone()).collect::<Vec<_>>())
        .bind(d.iter().map(|x| x.coupon_id.clone()).collect::<Vec<_>>())
        .bind(d.iter().map(|x| x.user_id.clone()).collect::<Vec<_>>())
        .bind(d.iter().map(|x| x.outcome.symbol().to_string()).collect::<Vec<_>>())
        .bind(d.iter().map(|x| x.sequence).collect::<Vec<_>>())
        .bind(d.iter().map(|x| x.stock).collect::<Vec<_>>())
        .bind(d.iter().map(|x| x.issued).collect::<Vec<_>>())
        .bind(d.iter().map(|x| x.remaining).collect::<Vec<_>>())
        .bind(d.iter().map(|x| x.reason.clone()).collect::<Vec<_>>())
        .bind(d.iter().map(|x| x.source_partition).collect::<Vec<_>>())
        .bind(d.iter().map(|x| x.source_offset).collect::<Vec<_>>())
        .bind(d.iter().map(|x| x.requested_at).collect::<Vec<_>>())
        .bind(d.iter().map(|x| x.decided_at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
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
