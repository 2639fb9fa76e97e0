//! An order id names one order. The saga keeps, with each order, a
//! fingerprint of the order-create that made it: a repeat with the same
//! fingerprint is an upstream retry (no second saga, nothing sent), a
//! repeat with another one is a different order under a reused id, and is
//! dead-lettered as [`ORDER_ID_REUSED`] — dropping it as a retry would lose
//! an order its sender believes placed.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use surge_engine::canonical::Canonical;
use surge_schemas::order::{OrderCreate, OrderItem};
use surge_schemas::Money;

use crate::book::Order;

/// The dead-letter reason of an order-create whose order id is already the
/// id of a different order (pre-registered at 0 in surge-engine's
/// `poison_reasons`).
pub const ORDER_ID_REUSED: &str = "order_id_reused";

/// What an order-create asks for: xxh3-128 over a canonical encoding of
/// its content ([`fingerprint`]). In the changelog as 32 lowercase hex
/// digits (a JSON number would not survive readers that parse numbers as
/// doubles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub u128);

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:032x}", self.0))
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(serde::de::Error::custom(format!(
                "fingerprint {text:?} is not 32 hex digits"
            )));
        }
        u128::from_str_radix(&text, 16)
            .map(Fingerprint)
            .map_err(serde::de::Error::custom)
    }
}

/// The lines of an order as a canonical list: sorted by product, quantity
/// and unit price, so that the order of the lines does not count (the
/// same products, quantities and prices are the same order).
fn canonical_lines<'a>(
    lines: impl Iterator<Item = (&'a str, i32, i64)>,
) -> Vec<(&'a str, i32, i64)> {
    let mut lines: Vec<_> = lines.collect();
    lines.sort_unstable();
    lines
}

fn lines_of(c: &OrderCreate) -> Vec<(&str, i32, i64)> {
    canonical_lines(
        c.items
            .iter()
            .map(|i: &OrderItem| (i.product_id.as_str(), i.quantity, i.unit_price.0)),
    )
}

fn lines_of_order(o: &Order) -> Vec<(&str, i32, i64)> {
    canonical_lines(
        o.lines
            .iter()
            .map(|l| (l.product_id.as_str(), l.quantity, l.unit_price)),
    )
}

/// The fingerprint of an order-create: everything that defines the order —
/// the buyer (`userId`), the `currency`, the `couponId` and the lines
/// (product, quantity, unit price; in any order) — and nothing a retry of
/// the same order may carry differently: not `requestedAt` (a retry is
/// sent later), not the order id (the key it is kept under).
///
/// Fingerprints are persisted in the changelog: this encoding is frozen. A
/// change to it would make every retry of an order created before the
/// upgrade look like a reused id. A field added to order-create later must
/// be left out when it has its default value, so that old fingerprints hold.
///
/// Encoding: a version byte 1; a string is its length (u64 BE) then its
/// bytes, a number i64 BE, an optional value a byte 0 (none) or 1 followed
/// by the value; then user id, currency, coupon id, the number of lines
/// and each canonical line (product id, quantity, unit price in minor units).
pub fn fingerprint(c: &OrderCreate) -> Fingerprint {
    let mut h = Canonical::new();
    h.tag(1);
    h.str(&c.user_id);
    h.str(&c.currency);
    h.opt(c.coupon_id.as_deref(), Canonical::str);
    let lines = lines_of(c);
    h.int(lines.len() as i64);
    for (product, quantity, price) in lines {
        h.str(product);
        h.int(i64::from(quantity));
        h.int(price);
    }
    Fingerprint(h.digest128())
}

/// What a repeat of an order id finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// The same order again: an upstream retry.
    Retry,
    /// The order was restored from a changelog written before fingerprints:
    /// a repeat cannot be told from a retry and is taken as one.
    RetryUnchecked,
    /// Another order under the same id.
    Reused,
}

/// Compares an order-create for an order id the saga already has with the
/// order it has.
pub fn repeat_of(order: &Order, c: &OrderCreate) -> Repeat {
    match order.fingerprint {
        None => Repeat::RetryUnchecked,
        Some(f) if f == fingerprint(c) => Repeat::Retry,
        Some(_) => Repeat::Reused,
    }
}

fn describe_lines(lines: &[(&str, i32, i64)]) -> String {
    let each: Vec<String> = lines
        .iter()
        .map(|(p, q, price)| format!("{p} x{q} at {}", Money(*price)))
        .collect();
    format!("[{}]", each.join(", "))
}

fn describe_coupon(c: Option<&str>) -> String {
    c.map_or_else(|| "none".to_string(), str::to_string)
}

/// The dead letter's message for `c`, a different order under the id of
/// `order`: what differs, each as what this one asks and what the order has.
pub fn reuse_message(order: &Order, c: &OrderCreate) -> String {
    let mut differs = Vec::new();
    if c.user_id != order.user_id {
        differs.push(format!(
            "user {} (the order's: {})",
            c.user_id, order.user_id
        ));
    }
    if c.currency != order.currency {
        differs.push(format!(
            "currency {} (the order's: {})",
            c.currency, order.currency
        ));
    }
    if c.coupon_id != order.coupon_id {
        differs.push(format!(
            "coupon {} (the order's: {})",
            describe_coupon(c.coupon_id.as_deref()),
            describe_coupon(order.coupon_id.as_deref())
        ));
    }
    let (asked, held) = (lines_of(c), lines_of_order(order));
    if asked != held {
        differs.push(format!(
            "items {} (the order's: {})",
            describe_lines(&asked),
            describe_lines(&held)
        ));
    }
    if differs.is_empty() {
        // Every field the order keeps is equal, the fingerprint is not (a
        // field the order does not keep): say what this one asks.
        differs.push(format!(
            "content: user {}, currency {}, coupon {}, items {}",
            c.user_id,
            c.currency,
            describe_coupon(c.coupon_id.as_deref()),
            describe_lines(&asked)
        ));
    }
    format!(
        "order id {} already names another order ({}, version {}); \
         this order-create asks for a different one: {}",
        c.order_id,
        order.stage.label(),
        order.version,
        differs.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn create(user: &str, lines: &[(&str, i32, i64)], coupon: Option<&str>) -> OrderCreate {
        OrderCreate {
            order_id: "o1".into(),
            user_id: user.into(),
            items: lines
                .iter()
                .map(|(p, q, price)| OrderItem {
                    product_id: p.to_string(),
                    quantity: *q,
                    unit_price: Money(*price),
                })
                .collect(),
            currency: "KRW".into(),
            coupon_id: coupon.map(String::from),
            requested_at: DateTime::from_timestamp_millis(1_000).unwrap(),
        }
    }

    #[test]
    fn fingerprints_cover_the_order_but_not_its_time_or_line_order() {
        let base = create("u1", &[("p1", 2, 1_000), ("p2", 1, 500)], Some("c"));
        let f = fingerprint(&base);
        let mut later = base.clone();
        later.requested_at = DateTime::from_timestamp_millis(9_000).unwrap();
        assert_eq!(fingerprint(&later), f, "a retry is sent later");
        let mut reordered = base.clone();
        reordered.items.reverse();
        assert_eq!(
            fingerprint(&reordered),
            f,
            "the same lines in another order"
        );

        let mut currency = base.clone();
        currency.currency = "USD".into();
        let others = [
            create("u2", &[("p1", 2, 1_000), ("p2", 1, 500)], Some("c")),
            create("u1", &[("p1", 3, 1_000), ("p2", 1, 500)], Some("c")),
            create("u1", &[("p1", 2, 1_001), ("p2", 1, 500)], Some("c")),
            create("u1", &[("p1", 2, 1_000), ("p3", 1, 500)], Some("c")),
            create("u1", &[("p1", 2, 1_000)], Some("c")),
            create("u1", &[("p1", 2, 1_000), ("p2", 1, 500)], None),
            create("u1", &[("p1", 2, 1_000), ("p2", 1, 500)], Some("d")),
            // Lengths are encoded: moving bytes between fields is another order.
            create("u1", &[("p1", 2, 1_000), ("p2", 1, 500)], Some("")),
            currency,
        ];
        for (i, other) in others.iter().enumerate() {
            assert_ne!(fingerprint(other), f, "variant {i}: {other:?}");
            for later in &others[i + 1..] {
                assert_ne!(
                    fingerprint(other),
                    fingerprint(later),
                    "{other:?} / {later:?}"
                );
            }
        }
    }

    #[test]
    fn the_fingerprint_encoding_is_frozen() {
        // Persisted in changelogs: a change here makes retries of orders
        // created before it look like reused ids.
        let f = fingerprint(&create(
            "u1",
            &[("p1", 2, 1_000), ("p2", 1, 500)],
            Some("c"),
        ));
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(json, "\"ea8698e5d46f85f65157eda7ea55a569\"");
        assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), f);
    }

    #[test]
    fn a_fingerprint_that_is_not_32_hex_digits_does_not_decode() {
        for bad in [
            "\"\"",
            "\"abc\"",
            "\"zz5ae8f8e6cbe3ca78c4f0e4aa7e7d1x\"",
            "17",
        ] {
            assert!(serde_json::from_str::<Fingerprint>(bad).is_err(), "{bad}");
        }
    }
}
