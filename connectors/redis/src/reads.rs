//! Reading coupons, decisions, orders and products back from their keys as
//! the read model. The keys are this crate's (`keys`), and so are the
//! field names (`mappings`), so are the reads.

use std::collections::{BTreeMap, HashMap};

use redis::aio::ConnectionLike;
use surge_schemas::coupon::Outcome;
use surge_sink::views::{CouponView, DecisionView, HistoryView, LineView, OrderView, StockView};

use crate::keys::{Keyspace, UserStatus};
use crate::mappings::coupon_result::fields;

/// The order with its lines and history; `None` when its hash is absent.
pub async fn order<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keyspace,
    order_id: &str,
) -> redis::RedisResult<Option<OrderView>> {
    let (h, lines, history): (
        HashMap<String, String>,
        Option<String>,
        HashMap<String, String>,
    ) = redis::pipe()
        .cmd("HGETALL")
        .arg(keys.order(order_id))
        .cmd("HGET")
        .arg(keys.order_lines(order_id))
        .arg("lines")
        .cmd("HGETALL")
        .arg(keys.order_history(order_id))
        .query_async(conn)
        .await?;
    if h.is_empty() {
        return Ok(None);
    }
    let text = |f: &str| h.get(f).cloned();
    let num = |f: &str| h.get(f).and_then(|v| v.parse::<i64>().ok());
    let lines: Vec<LineView> = match lines {
        Some(json) => serde_json::from_str(&json).map_err(corrupt)?,
        None => Vec::new(),
    };
    let mut history = history
        .into_iter()
        .map(|(at, json)| {
            let position = at
                .split_once(':')
                .and_then(|(p, o)| Some((p.parse::<i32>().ok()?, o.parse::<i64>().ok()?)));
            let entry: HistoryView = serde_json::from_str(&json).map_err(corrupt)?;
            Ok((position, entry))
        })
        .collect::<redis::RedisResult<Vec<_>>>()?;
    history.sort_by_key(|(position, _)| *position);
    Ok(Some(OrderView {
        order_id: order_id.to_string(),
        user_id: text("user_id").unwrap_or_default(),
        state: text("state").unwrap_or_default(),
        terminal: h.get("terminal").is_some_and(|t| t == "true"),
        reason: text("reason"),
        total_minor: num("total_minor").unwrap_or(0),
        currency: text("currency").unwrap_or_default(),
        coupon_id: text("coupon_id"),
        payment_id: text("payment_id"),
        refund_id: text("refund_id"),
        version: num("version").unwrap_or(0) as i32,
        updated_at_ms: num("updated_at").unwrap_or(0),
        lines,
        history: history.into_iter().map(|(_, e)| e).collect(),
    }))
}

/// A product's stock; `None` when its hash is absent.
pub async fn product_stock<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keyspace,
    product_id: &str,
) -> redis::RedisResult<Option<StockView>> {
    let h: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(keys.product(product_id))
        .query_async(conn)
        .await?;
    if h.is_empty() {
        return Ok(None);
    }
    let num = |f: &str| h.get(f).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    Ok(Some(StockView {
        available: num("available"),
        reserved: num("reserved"),
        sold: num("sold"),
        created: num("created"),
        updated_at_ms: num("updated_at"),
    }))
}

/// Every order under `keys`, for `surge verify`.
pub async fn all_orders<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keyspace,
) -> redis::RedisResult<std::collections::BTreeMap<String, OrderView>> {
    let mut out = std::collections::BTreeMap::new();
    for key in scan(conn, &keys.order_pattern()).await? {
        if let Some(id) = keys.id_of(&key, "order") {
            if let Some(o) = order(conn, keys, id).await? {
                out.insert(id.to_string(), o);
            }
        }
    }
    Ok(out)
}

/// Every product's stock under `keys`, for `surge verify`.
pub async fn all_product_stock<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keyspace,
) -> redis::RedisResult<std::collections::BTreeMap<String, StockView>> {
    let mut out = std::collections::BTreeMap::new();
    for key in scan(conn, &keys.product_pattern()).await? {
        if let Some(id) = keys.id_of(&key, "product") {
            if let Some(s) = product_stock(conn, keys, id).await? {
                out.insert(id.to_string(), s);
            }
        }
    }
    Ok(out)
}

/// Every key matching `pattern` (SCAN, never KEYS: the server stays responsive).
pub async fn scan<C: ConnectionLike + Send>(
    conn: &mut C,
    pattern: &str,
) -> redis::RedisResult<Vec<String>> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

fn corrupt(e: serde_json::Error) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::TypeError,
        "a stored order key is not the JSON the sink writes",
        e.to_string(),
    ))
}

/// What reading a coupon, a request or a users hash back can fail with:
/// Redis itself, or a hash that is not what the sink writes.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("field {0} missing")]
    Missing(&'static str),
    #[error("field {field} is not a number")]
    NotANumber {
        field: &'static str,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("{key} {user}: unreadable status {raw:?}")]
    Status {
        key: String,
        user: String,
        raw: String,
    },
}

/// A coupon from its hash (as HGETALL returns it); `None` when it is empty
/// (the key is absent).
pub fn coupon_from_hash(
    coupon_id: &str,
    h: &HashMap<String, String>,
) -> Result<Option<CouponView>, ReadError> {
    if h.is_empty() {
        return Ok(None);
    }
    Ok(Some(CouponView {
        coupon_id: coupon_id.to_string(),
        stock: number(h, fields::STOCK)?,
        issued: number(h, fields::ISSUED)?,
        remaining: number(h, fields::REMAINING)?,
    }))
}

/// A request's decision from its hash (as HGETALL returns it); `None` when
/// it is empty (not decided yet, or never sent).
pub fn decision_from_hash(
    request_id: &str,
    h: &HashMap<String, String>,
) -> Result<Option<DecisionView>, ReadError> {
    if h.is_empty() {
        return Ok(None);
    }
    let text = |f: &'static str| h.get(f).cloned();
    Ok(Some(DecisionView {
        request_id: request_id.to_string(),
        coupon_id: text(fields::COUPON_ID).ok_or(ReadError::Missing(fields::COUPON_ID))?,
        user_id: text(fields::USER_ID),
        outcome: text(fields::OUTCOME).ok_or(ReadError::Missing(fields::OUTCOME))?,
        sequence: h
            .contains_key(fields::SEQUENCE)
            .then(|| number(h, fields::SEQUENCE))
            .transpose()?,
        stock: number(h, fields::STOCK)?,
        issued: number(h, fields::ISSUED)?,
        remaining: number(h, fields::REMAINING)?,
        reason: text(fields::REASON),
        decided_at_ms: number(h, fields::DECIDED_AT)?,
    }))
}

/// The users of one users hash (`key`, as HGETALL returns it) who hold a
/// unit, with its sequence (`None` if the status lacks one, which the sink
/// never writes for an issued unit).
pub fn holders_from_hash(
    key: &str,
    users: &BTreeMap<String, String>,
) -> Result<Vec<(String, Option<i64>)>, ReadError> {
    let mut out = Vec::new();
    for (user, raw) in users {
        let status = UserStatus::parse(raw).ok_or_else(|| ReadError::Status {
            key: key.to_string(),
            user: user.clone(),
            raw: raw.clone(),
        })?;
        if status.outcome == Outcome::Issued.symbol() {
            out.push((user.clone(), status.sequence));
        }
    }
    Ok(out)
}

fn number(h: &HashMap<String, String>, field: &'static str) -> Result<i64, ReadError> {
    h.get(field)
        .ok_or(ReadError::Missing(field))?
        .parse()
        .map_err(|source| ReadError::NotANumber { field, source })
}

/// The decision of request `request_id` of coupon `coupon_id`; `None` when
/// its hash is absent.
pub async fn coupon_decision<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keyspace,
    coupon_id: &str,
    request_id: &str,
) -> Result<Option<DecisionView>, ReadError> {
    let h: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(keys.request(coupon_id, request_id))
        .query_async(conn)
        .await?;
    decision_from_hash(request_id, &h)
}

/// The coupons with a decision under request id `request_id`, sorted
/// (one on a healthy deployment; producers straight to Kafka can use one
/// id on several coupons, each its own request).
pub async fn coupons_of_request<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keyspace,
    request_id: &str,
) -> Result<Vec<String>, ReadError> {
    let mut coupons: Vec<String> = redis::cmd("HKEYS")
        .arg(keys.request_coupons(request_id))
        .query_async(conn)
        .await?;
    coupons.sort();
    Ok(coupons)
}

/// A coupon's stock, issued and remaining; `None` when its hash is absent.
pub async fn coupon<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keyspace,
    coupon_id: &str,
) -> Result<Option<CouponView>, ReadError> {
    let h: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(keys.coupon(coupon_id))
        .query_async(conn)
        .await?;
    coupon_from_hash(coupon_id, &h)
}

/// Keys read per pipeline by the bulk reads.
const CHUNK: usize = 1000;

/// Every coupon under `keys` whose id starts with `prefix`, by id, for
/// `surge verify`.
pub async fn all_coupons<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keyspace,
    prefix: &str,
) -> Result<BTreeMap<String, CouponView>, ReadError> {
    let ids: Vec<String> = scan(conn, &keys.coupon_pattern())
        .await?
        .iter()
        .filter_map(|key| keys.id_of(key, "coupon"))
        .filter(|id| id.starts_with(prefix))
        .map(str::to_string)
        .collect();
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(CHUNK) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("HGETALL").arg(keys.coupon(id));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(conn).await?;
        for (id, h) in chunk.iter().zip(hashes) {
            if let Some(c) = coupon_from_hash(id, &h)? {
                out.insert(id.clone(), c);
            }
        }
    }
    Ok(out)
}

/// Every decision under `keys` of a coupon whose id starts with `prefix`,
/// by (coupon id, request id), for `surge verify`.
pub async fn all_coupon_decisions<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keyspace,
    prefix: &str,
) -> Result<BTreeMap<(String, String), DecisionView>, ReadError> {
    let requests = scan(conn, &keys.request_pattern()).await?;
    let mut out = BTreeMap::new();
    for chunk in requests.chunks(CHUNK) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("HGETALL").arg(key);
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(conn).await?;
        for (key, h) in chunk.iter().zip(hashes) {
            // A key of the layout before coupon-scoped request ids is
            // skipped: the sink no longer writes or reads it.
            let Some((coupon, id)) = keys.request_of(key) else {
                continue;
            };
            if !coupon.starts_with(prefix) {
                continue;
            }
            if let Some(d) = decision_from_hash(id, &h)? {
                out.insert((coupon.to_string(), id.to_string()), d);
            }
        }
    }
    Ok(out)
}

/// Who holds a unit of a coupon under `keys` whose id starts with
/// `prefix`: (coupon id, user id) → the unit's sequence (see
/// [`holders_from_hash`]), for `surge verify`.
pub async fn all_coupon_holders<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keyspace,
    prefix: &str,
) -> Result<BTreeMap<(String, String), Option<i64>>, ReadError> {
    let mut out = BTreeMap::new();
    for key in scan(conn, &keys.users_pattern()).await? {
        let Some(coupon) = keys.id_of(&key, "users") else {
            continue;
        };
        if !coupon.starts_with(prefix) {
            continue;
        }
        let users: BTreeMap<String, String> =
            redis::cmd("HGETALL").arg(&key).query_async(conn).await?;
        for (user, sequence) in holders_from_hash(&key, &users)? {
            out.insert((coupon.to_string(), user), sequence);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use surge_schemas::coupon::CouponDecision;
    use surge_sink::Position;

    use super::*;
    use crate::mappings::coupon_result::{coupon_fields, request_fields, user_status};

    fn decision(outcome: Outcome, user: Option<&str>, sequence: Option<i64>) -> CouponDecision {
        CouponDecision {
            request_id: "r-1".into(),
            coupon_id: "c-1".into(),
            user_id: user.map(Into::into),
            outcome,
            sequence,
            stock: 10,
            issued: 3,
            remaining: 7,
            reason: (outcome != Outcome::Issued).then(|| "why".into()),
            source_partition: 0,
            source_offset: 4,
            requested_at: chrono::DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
            decided_at: chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
            order_id: None,
            discount: None,
        }
    }

    /// A hash as the script leaves it: the writer's fields and `offset`.
    fn stored(fields: Vec<(&'static str, String)>) -> HashMap<String, String> {
        let mut h: HashMap<String, String> = fields
            .into_iter()
            .map(|(f, v)| (f.to_string(), v))
            .collect();
        h.insert("offset".into(), "4".into());
        h
    }

    const AT: Position = Position {
        partition: 2,
        offset: 4,
    };

    #[test]
    fn the_reader_reads_back_what_the_writer_writes() {
        let d = decision(Outcome::Issued, Some("u-1"), Some(3));
        assert_eq!(
            decision_from_hash("r-1", &stored(request_fields(AT, &d))).unwrap(),
            Some(DecisionView {
                request_id: "r-1".into(),
                coupon_id: "c-1".into(),
                user_id: Some("u-1".into()),
                outcome: "ISSUED".into(),
                sequence: Some(3),
                stock: 10,
                issued: 3,
                remaining: 7,
                reason: None,
                decided_at_ms: 1_700_000_000_123,
            })
        );
        // Absent values stay absent.
        let d = decision(Outcome::SoldOut, None, None);
        let v = decision_from_hash("r-1", &stored(request_fields(AT, &d)))
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                v.outcome.as_str(),
                v.user_id,
                v.sequence,
                v.reason.as_deref()
            ),
            ("SOLD_OUT", None, None, Some("why"))
        );
        assert_eq!(
            coupon_from_hash("c-1", &stored(coupon_fields(AT, &d))).unwrap(),
            Some(CouponView {
                coupon_id: "c-1".into(),
                stock: 10,
                issued: 3,
                remaining: 7,
            })
        );
    }

    #[test]
    fn an_absent_hash_is_none_and_a_hash_the_sink_did_not_write_is_an_error() {
        let empty = HashMap::new();
        assert_eq!(decision_from_hash("r", &empty).unwrap(), None);
        assert_eq!(coupon_from_hash("c", &empty).unwrap(), None);

        let d = decision(Outcome::Issued, Some("u-1"), Some(3));
        let mut h = stored(coupon_fields(AT, &d));
        h.remove(fields::ISSUED);
        assert_eq!(
            coupon_from_hash("c", &h).unwrap_err().to_string(),
            "field issued missing"
        );
        h.insert(fields::ISSUED.into(), "x".into());
        let e = coupon_from_hash("c", &h).unwrap_err();
        assert_eq!(e.to_string(), "field issued is not a number");
        assert!(std::error::Error::source(&e).is_some());

        let mut h = stored(request_fields(AT, &d));
        h.remove(fields::OUTCOME);
        assert_eq!(
            decision_from_hash("r", &h).unwrap_err().to_string(),
            "field outcome missing"
        );
        let mut h = stored(request_fields(AT, &d));
        h.insert(fields::SEQUENCE.into(), "three".into());
        assert_eq!(
            decision_from_hash("r", &h).unwrap_err().to_string(),
            "field sequence is not a number"
        );
    }

    #[test]
    fn holders_are_the_users_whose_status_is_issued() {
        // As the script stores it: the record's offset, then the status.
        let status = |d: &CouponDecision| {
            let (outcome, sequence) = user_status(d);
            UserStatus {
                offset: 9,
                outcome: outcome.into(),
                sequence,
            }
            .encode()
        };
        let users: BTreeMap<String, String> = [
            (
                "u-1",
                status(&decision(Outcome::Issued, Some("u-1"), Some(3))),
            ),
            (
                "u-2",
                status(&decision(Outcome::SoldOut, Some("u-2"), None)),
            ),
            ("u-3", "5 ISSUED".to_string()),
        ]
        .into_iter()
        .map(|(u, s)| (u.to_string(), s))
        .collect();
        assert_eq!(
            holders_from_hash("k:users:c-1", &users).unwrap(),
            [("u-1".to_string(), Some(3)), ("u-3".to_string(), None)]
        );
        let bad: BTreeMap<String, String> = [("u-9".to_string(), "ISSUED 3".to_string())].into();
        assert_eq!(
            holders_from_hash("k:users:c-1", &bad)
                .unwrap_err()
                .to_string(),
            "k:users:c-1 u-9: unreadable status \"ISSUED 3\""
        );
    }
}
