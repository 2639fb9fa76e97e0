//! The ledger: every query pg-sim makes, in PostgreSQL schema
//! `[pg_sim] schema` (default `pgsim`), created at start and idempotent.
//!
//! `<schema>.payments` — one row per definite answer, never updated or
//! deleted. This is the provider's truth that `surge verify` audits
//! (approved charges minus approved refunds per order).
//!
//! | column        | type        |                                                  |
//! |---------------|-------------|--------------------------------------------------|
//! | `id`          | text PK     | `ch_<uuid>` / `rf_<uuid>`, the provider id         |
//! | `key`         | text        | the Idempotency-Key it was made under (indexed, not unique) |
//! | `kind`        | text        | `CHARGE` or `REFUND`                               |
//! | `status`      | text        | `APPROVED` or `DECLINED`                           |
//! | `code`        | text null   | the decline code                                   |
//! | `order_id`    | text        |                                                    |
//! | `user_id`     | text null   | charges only                                       |
//! | `charge_key`  | text null   | refunds only: the key of the charge refunded       |
//! | `amount_minor`| bigint      | > 0, minor units (two decimals)                    |
//! | `currency`    | text        |                                                    |
//! | `body`        | jsonb       | the response body, replayed as stored              |
//! | `http_status` | int         | 200 or 402                                         |
//! | `created_at`  | timestamptz | equals the body's `createdAt`                      |
//!
//! `key` is not unique because keys expire: after `key_retention` a request
//! with an old key is a new request and may be charged again, and both
//! payments stay in the ledger. Lookup by key answers the latest.
//!
//! `<schema>.idempotency` — what the key rules need, one row per key still
//! remembered: `key` PK, `endpoint`, `request_hash`, `state` (`in_flight` |
//! `done`), `claim_id` (the claiming request's token), `claimed_at` (first
//! use; retention and takeover count from it), `payment_id` (→ payments.id,
//! set when done), `completed_at`. Expired rows are overwritten by the next
//! request with the key and purged in the background.
//!
//! A key is claimed by one statement (insert, or take over an expired or
//! abandoned row) before anything happens; the payment row and the key's
//! completion are one transaction that only the claim's holder can commit.
//! So a crash never leaves a payment without its stored answer, nor a
//! stored answer without its payment.

use std::time::Duration;

use sqlx::postgres::PgPool;
use sqlx::Row;

use crate::idempotency::{KeyState, KnownKey};
use crate::payment::{ChargeTotals, Kind, Payment};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("[pg_sim] schema {0:?} must be 1 to 63 characters of a-z, 0-9 and _, not starting with a digit")]
    BadSchemaName(String),
}

/// One row of `payments`, as an audit sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The idempotency key it was made under.
    pub key: String,
    pub kind: Kind,
    pub approved: bool,
    pub order_id: String,
    pub amount_minor: i64,
}

/// The ledger in one PostgreSQL schema.
#[derive(Clone)]
pub struct Ledger {
    pool: PgPool,
    /// The quoted schema name, ready to prefix table names.
    schema: String,
}

/// A request's hold on its key, released or completed with the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimToken {
    pub key: String,
    pub claim_id: uuid::Uuid,
}

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is this request's; `renewed` when an expired or abandoned
    /// claim was taken over.
    Claimed { token: ClaimToken, renewed: bool },
    /// The key is held (in flight or done, within retention).
    Known(KnownKey),
}

/// An answer as stored: the status and the exact body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub http_status: u16,
    pub body: String,
}

/// A plain lowercase identifier: it is spliced into every query.
pub fn check_schema_name(schema: &str) -> Result<(), LedgerError> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(LedgerError::BadSchemaName(schema.to_string()))
    }
}

impl Ledger {
    pub fn new(pool: PgPool, schema: &str) -> Result<Self, LedgerError> {
        check_schema_name(schema)?;
        Ok(Self {
            pool,
            schema: format!("\"{schema}\""),
        })
    }

    /// Creates the schema and tables if missing. Starts of several pg-sims
    /// at once take turns on an advisory lock (concurrent `create ... if not
    /// exists` can otherwise fail on the catalog's unique index).
    pub async fn create_schema(&self) -> Result<(), sqlx::Error> {
        let s = &self.schema;
        let mut tx = self.pool.begin().await?;
        sqlx::query("select pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("surge-pgsim-schema:{s}"))
            .execute(&mut *tx)
            .await?;
        let ddl = format!(
            "create schema if not exists {s};
             create table if not exists {s}.payments (
                 id text primary key,
                 key text not null,
                 kind text not null check (kind in ('CHARGE', 'REFUND')),
                 status text not null check (status in ('APPROVED', 'DECLINED')),
                 code text,
                 order_id text not null,
                 user_id text,
                 charge_key text,
                 amount_minor bigint not null check (amount_minor > 0),
                 currency text not null,
                 body jsonb not null,
                 http_status int not null,
                 created_at timestamptz not null
             );
             create index if not exists payments_key on {s}.payments (key, created_at desc);
             create index if not exists payments_charge_key on {s}.payments (charge_key) where kind = 'REFUND';
             create index if not exists payments_order on {s}.payments (order_id);
             create table if not exists {s}.idempotency (
                 key text primary key,
                 endpoint text not null,
                 request_hash text not null,
                 state text not null check (state in ('in_flight', 'done')),
                 claim_id uuid not null,
                 claimed_at timestamptz not null,
                 payment_id text references {s}.payments (id),
                 completed_at timestamptz
             );"
        );
        // One statement per query: raw_sql's futures are not Send.
        for statement in ddl.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// Claims `key` for a request, or reports who holds it. A done key older
    /// than `retention` is forgotten, an in-flight claim older than
    /// `takeover` is abandoned: either is taken over.
    pub async fn claim(
        &self,
        key: &str,
        endpoint: &str,
        request_hash: &str,
        retention: Duration,
        takeover: Duration,
    ) -> Result<Claim, sqlx::Error> {
        let s = &self.schema;
        let claim_id = uuid::Uuid::new_v4();
        // A row released between the two statements is claimed on the next turn.
        for _ in 0..5 {
            let claimed = sqlx::query(&format!(
                "insert into {s}.idempotency as i (key, endpoint, request_hash, state, claim_id, claimed_at)
                 values ($1, $2, $3, 'in_flight', $4, now())
                 on conflict (key) do update set endpoint = excluded.endpoint,
                     request_hash = excluded.request_hash, state = 'in_flight',
                     claim_id = excluded.claim_id, claimed_at = excluded.claimed_at,
                     payment_id = null, completed_at = null
                 where (i.state = 'done' and i.claimed_at <= now() - make_interval(secs => $5))
                    or (i.state = 'in_flight' and i.claimed_at <= now() - make_interval(secs => $6))
                 returning (xmax <> 0) as renewed"
            ))
            .bind(key)
            .bind(endpoint)
            .bind(request_hash)
            .bind(claim_id)
            .bind(retention.as_secs_f64())
            .bind(takeover.as_secs_f64())
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = claimed {
                return Ok(Claim::Claimed {
                    token: ClaimToken {
                        key: key.to_string(),
                        claim_id,
                    },
                    renewed: row.try_get("renewed")?,
                });
            }
            let known = sqlx::query(&format!(
                "select endpoint, request_hash, state, payment_id from {s}.idempotency where key = $1"
            ))
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = known {
                let payment_id: Option<String> = row.try_get("payment_id")?;
                let state: String = row.try_get("state")?;
                return Ok(Claim::Known(KnownKey {
                    endpoint: row.try_get("endpoint")?,
                    request_hash: row.try_get("request_hash")?,
                    state: match (state.as_str(), payment_id) {
                        ("done", Some(payment_id)) => KeyState::Done { payment_id },
                        _ => KeyState::InFlight,
                    },
                }));
            }
        }
        // The key keeps changing hands: as good as in flight.
        Ok(Claim::Known(KnownKey {
            endpoint: endpoint.to_string(),
            request_hash: request_hash.to_string(),
            state: KeyState::InFlight,
        }))
    }

    /// Gives the key up (nothing was done under it).
    pub async fn release(&self, token: &ClaimToken) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "delete from {}.idempotency where key = $1 and claim_id = $2 and state = 'in_flight'",
            self.schema
        ))
        .bind(&token.key)
        .bind(token.claim_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a charge and completes its key. `None` when the claim was
    /// lost (taken over): nothing is recorded.
    pub async fn record_charge(
        &self,
        token: &ClaimToken,
        payment: &Payment,
    ) -> Result<Option<StoredAnswer>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if !self.hold(&mut tx, token).await? {
            return Ok(None);
        }
        let answer = self.insert(&mut tx, token, payment).await?;
        tx.commit().await?;
        Ok(Some(answer))
    }

    /// Decides a refund of the charge under `charge_key` from the ledger's
    /// totals, records it and completes its key, in one transaction. The
    /// charge's rows stay locked until commit, so concurrent refunds of one
    /// charge are decided one after the other and never exceed it together.
    pub async fn record_refund(
        &self,
        token: &ClaimToken,
        charge_key: &str,
        decide: impl FnOnce(Option<&ChargeTotals>) -> Payment,
    ) -> Result<Option<(Payment, StoredAnswer)>, sqlx::Error> {
        let s = &self.schema;
        let mut tx = self.pool.begin().await?;
        if !self.hold(&mut tx, token).await? {
            return Ok(None);
        }
        let charges: Vec<(i64, String)> = sqlx::query_as(&format!(
            "select amount_minor, currency from {s}.payments
             where key = $1 and kind = 'CHARGE' and status = 'APPROVED'
             order by created_at for update"
        ))
        .bind(charge_key)
        .fetch_all(&mut *tx)
        .await?;
        let totals = match charges.last() {
            None => None,
            Some((_, currency)) => {
                let refunded: i64 = sqlx::query_scalar(&format!(
                    "select coalesce(sum(amount_minor), 0)::bigint from {s}.payments
                     where charge_key = $1 and kind = 'REFUND' and status = 'APPROVED'"
                ))
                .bind(charge_key)
                .fetch_one(&mut *tx)
                .await?;
                Some(ChargeTotals {
                    charged_minor: charges.iter().map(|(amount, _)| amount).sum(),
                    currency: currency.clone(),
                    refunded_minor: refunded,
                })
            }
        };
        let payment = decide(totals.as_ref());
        let answer = self.insert(&mut tx, token, &payment).await?;
        tx.commit().await?;
        Ok(Some((payment, answer)))
    }

    /// The stored answer of payment `id`.
    pub async fn answer_of(&self, id: &str) -> Result<Option<StoredAnswer>, sqlx::Error> {
        self.stored(
            &format!(
                "select http_status, body::text as body from {}.payments where id = $1",
                self.schema
            ),
            id,
        )
        .await
    }

    /// The latest payment made under `key`, however long ago.
    pub async fn lookup(&self, key: &str) -> Result<Option<StoredAnswer>, sqlx::Error> {
        self.stored(
            &format!(
                "select http_status, body::text as body from {}.payments where key = $1
                 order by created_at desc, id desc limit 1",
                self.schema
            ),
            key,
        )
        .await
    }

    /// Every definite payment, oldest first: what an audit of the
    /// provider's truth reads (`surge verify --orders`, the tests).
    pub async fn definite_payments(&self) -> Result<Vec<LedgerEntry>, sqlx::Error> {
        let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(&format!(
            "select key, kind, status, order_id, amount_minor from {}.payments
             order by created_at, id",
            self.schema
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(key, kind, status, order_id, amount_minor)| LedgerEntry {
                key,
                kind: if kind == Kind::Refund.as_str() {
                    Kind::Refund
                } else {
                    Kind::Charge
                },
                approved: status == "APPROVED",
                order_id,
                amount_minor,
            })
            .collect())
    }

    /// Forgets done keys older than `retention`; how many.
    pub async fn purge_expired(&self, retention: Duration) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(&format!(
            "delete from {}.idempotency
             where state = 'done' and claimed_at <= now() - make_interval(secs => $1)",
            self.schema
        ))
        .bind(retention.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Locks the key's row if `token` still holds it.
    async fn hold(
        &self,
        tx: &mut sqlx::PgConnection,
        token: &ClaimToken,
    ) -> Result<bool, sqlx::Error> {
        let held = sqlx::query(&format!(
            "select 1 from {}.idempotency where key = $1 and claim_id = $2 and state = 'in_flight' for update",
            self.schema
        ))
        .bind(&token.key)
        .bind(token.claim_id)
        .fetch_optional(&mut *tx)
        .await?;
        Ok(held.is_some())
    }

    /// The payment row and the key's completion (inside the caller's transaction).
    async fn insert(
        &self,
        tx: &mut sqlx::PgConnection,
        token: &ClaimToken,
        p: &Payment,
    ) -> Result<StoredAnswer, sqlx::Error> {
        let s = &self.schema;
        let r = &p.request;
        // The answer is the jsonb's text: a replay sends the very same bytes.
        let body: String = sqlx::query_scalar(&format!(
            "insert into {s}.payments (id, key, kind, status, code, order_id, user_id, charge_key,
                                       amount_minor, currency, body, http_status, created_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13)
             returning body::text"
        ))
        .bind(&p.id)
        .bind(&p.key)
        .bind(r.kind.as_str())
        .bind(p.status())
        .bind(p.code())
        .bind(&r.order_id)
        .bind(&r.user_id)
        .bind(&r.charge_key)
        .bind(r.amount_minor)
        .bind(&r.currency)
        .bind(p.body().to_string())
        .bind(i32::from(p.http_status()))
        .bind(p.created_at)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "update {s}.idempotency set state = 'done', payment_id = $3, completed_at = now()
             where key = $1 and claim_id = $2"
        ))
        .bind(&token.key)
        .bind(token.claim_id)
        .bind(&p.id)
        .execute(&mut *tx)
        .await?;
        Ok(StoredAnswer {
            http_status: p.http_status(),
            body,
        })
    }

    async fn stored(&self, sql: &str, arg: &str) -> Result<Option<StoredAnswer>, sqlx::Error> {
        let row: Option<(i32, String)> = sqlx::query_as(sql)
            .bind(arg)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(status, body)| StoredAnswer {
            http_status: u16::try_from(status).unwrap_or(500),
            body,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema_name("pgsim").is_ok());
        assert!(check_schema_name("pgsim_test_0a1b").is_ok());
        for bad in ["", "1abc", "PgSim", "a;drop", "a\"b", &"x".repeat(64)] {
            assert!(check_schema_name(bad).is_err(), "{bad:?}");
        }
    }
}
