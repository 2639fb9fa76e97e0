//! coupon-result → tables coupons, issued_coupons, coupon_decisions.

use std::collections::HashMap;

use sqlx::PgConnection;
use surge_schemas::coupon::{CouponDecision, Outcome};
use surge_sink::{Mapping, Position};

use super::Rows;

/// coupon-result: the coupon row, the issued unit, the request's decision.
#[derive(Debug, Default)]
pub struct CouponResultRows {
    /// Latest decision per coupon (the coupon row is last-write-wins in log
    /// order), and whether a decision of the batch proved the coupon exists
    /// (`Outcome::proves_coupon`): only then may the row be created.
    pub coupons: HashMap<String, (CouponDecision, bool)>,
    pub issued: Vec<CouponDecision>,
    /// Latest per (coupon id, request id): a request id names a request of
    /// one coupon (there is one decision per pair on a healthy topic).
    pub decisions: HashMap<(String, String), CouponDecision>,
    /// Coupons whose key got a tombstone: the coupon row and its issued units
    /// are deleted. Decisions stay: they are the answers requests got.
    pub deleted: Vec<String>,
}

impl Mapping for CouponResultRows {
    type Value = CouponDecision;

    fn add(&mut self, _at: Position, key: Option<&[u8]>, decision: Option<CouponDecision>) {
        match decision {
            None => {
                if let Some(k) = key.and_then(|k| std::str::from_utf8(k).ok()) {
                    self.coupons.remove(k);
                    self.issued.retain(|d| d.coupon_id != k);
                    self.deleted.push(k.to_string());
                }
            }
            Some(d) => {
                if d.outcome == Outcome::Issued {
                    self.issued.push(d.clone());
                }
                let proved = d.outcome.proves_coupon()
                    || self.coupons.get(&d.coupon_id).is_some_and(|(_, p)| *p);
                self.coupons
                    .insert(d.coupon_id.clone(), (d.clone(), proved));
                self.decisions
                    .insert((d.coupon_id.clone(), d.request_id.clone()), d);
            }
        }
    }

    fn writes(&self) -> usize {
        self.coupons.len() + self.issued.len() + self.decisions.len() + self.deleted.len()
    }
}

impl Rows for CouponResultRows {
    async fn write(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        if !self.deleted.is_empty() {
            for table in ["issued_coupons", "coupons"] {
                sqlx::query(&format!("delete from {table} where coupon_id = any($1)"))
                    .bind(&self.deleted)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        // A proved coupon is upserted; a decision that does not prove its
        // coupon exists (UNKNOWN_COUPON, ...) only updates a row that does.
        let (proved, unproved): (Vec<_>, Vec<_>) = self.coupons.values().partition(|(_, p)| *p);
        write_coupons(
            tx,
            "insert into coupons (coupon_id, stock, issued, remaining, source_partition, source_offset, updated_at)
             select * from unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::int[], $6::bigint[], $7::timestamptz[])
             on conflict (coupon_id) do update set stock = excluded.stock, issued = excluded.issued, remaining = excluded.remaining,
               source_partition = excluded.source_partition, source_offset = excluded.source_offset, updated_at = excluded.updated_at
             where coupons.source_offset <= excluded.source_offset or coupons.source_partition <> excluded.source_partition",
            &proved,
        )
        .await?;
        write_coupons(
            tx,
            "update coupons set stock = u.stock, issued = u.issued, remaining = u.remaining,
               source_partition = u.source_partition, source_offset = u.source_offset, updated_at = u.updated_at
             from unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::int[], $6::bigint[], $7::timestamptz[])
               as u(coupon_id, stock, issued, remaining, source_partition, source_offset, updated_at)
             where coupons.coupon_id = u.coupon_id
               and (coupons.source_offset <= u.source_offset or coupons.source_partition <> u.source_partition)",
            &unproved,
        )
        .await?;
        if !self.issued.is_empty() {
            let i = &self.issued;
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
        if !self.decisions.is_empty() {
            let d: Vec<_> = self.decisions.values().collect();
            sqlx::query(
            "insert into coupon_decisions (request_id, coupon_id, user_id, outcome, sequence, stock, issued, remaining, reason,
                                           source_partition, source_offset, requested_at, decided_at)
             select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[],
                                  $8::bigint[], $9::text[], $10::int[], $11::bigint[], $12::timestamptz[], $13::timestamptz[])
             on conflict (coupon_id, request_id) do update set user_id = excluded.user_id,
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
        Ok(())
    }
}

/// Runs `sql` (columns $1..$7: coupon id, stock, issued, remaining, source
/// partition and offset, decided at) over `coupons`; nothing when empty.
async fn write_coupons(
    tx: &mut PgConnection,
    sql: &str,
    coupons: &[&(CouponDecision, bool)],
) -> Result<(), sqlx::Error> {
    if coupons.is_empty() {
        return Ok(());
    }
    let c: Vec<&CouponDecision> = coupons.iter().map(|(d, _)| d).collect();
    sqlx::query(sql)
        .bind(c.iter().map(|d| d.coupon_id.clone()).collect::<Vec<_>>())
        .bind(c.iter().map(|d| d.stock).collect::<Vec<_>>())
        .bind(c.iter().map(|d| d.issued).collect::<Vec<_>>())
        .bind(c.iter().map(|d| d.remaining).collect::<Vec<_>>())
        .bind(c.iter().map(|d| d.source_partition).collect::<Vec<_>>())
        .bind(c.iter().map(|d| d.source_offset).collect::<Vec<_>>())
        .bind(c.iter().map(|d| d.decided_at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    Ok(())
}
