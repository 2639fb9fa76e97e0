//! The coupon state of one coupon-issue partition and how it changes.
//!
//! Kept compact because a flash sale can issue a million units on one
//! partition: a user or a request id is held as a 128-bit hash (xxh3-128,
//! stable across versions and machines; a collision among 10^9 ids has a
//! probability around 10^-21), never as its string.
//!
//! Changelog layout (compacted topic, one key per live fact):
//! - `c` + couponId → terms: stock, active window (last value wins);
//! - `r` + request hash → empty for a decided request, or user hash +
//!   sequence + couponId for one that was ISSUED (rebuilds the holders);
//! - `u` + order hash + couponId → the user hash whose unit that order
//!   uses (a redemption); a tombstone when the order released it.

use std::collections::{HashMap, HashSet};

use surge_schemas::coupon::{Discount, DiscountKind};
use surge_schemas::Money;

use surge_engine::{ChangelogRecord, PartitionState};

/// 128-bit identity hash of a user or request id.
pub fn id_hash(id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

/// What an admin set for a coupon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    pub stock: i64,
    /// Unix millis; requests before are NOT_ACTIVE.
    pub active_from: Option<i64>,
    /// Unix millis; requests at or after are NOT_ACTIVE.
    pub active_until: Option<i64>,
    /// What a unit takes off the order it is redeemed with.
    pub discount: Option<Discount>,
}

/// One coupon: its terms, who holds a unit, and which order uses whose unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CouponLedger {
    pub terms: Option<Terms>,
    holders: HashSet<u128>,
    /// order hash → the user whose unit the order uses.
    redemptions: HashMap<u128, u128>,
    /// user hash → the order using that user's unit (the inverse).
    used_by: HashMap<u128, u128>,
}

impl CouponLedger {
    pub fn terms(&self) -> Option<&Terms> {
        self.terms.as_ref()
    }
    pub fn issued(&self) -> i64 {
        self.holders.len() as i64
    }
    pub fn holds(&self, user: u128) -> bool {
        self.holders.contains(&user)
    }
    /// The order using `user`'s unit, if any.
    pub fn used_by(&self, user: u128) -> Option<u128> {
        self.used_by.get(&user).copied()
    }
    /// The user whose unit `order` uses, if any.
    pub fn redemption(&self, order: u128) -> Option<u128> {
        self.redemptions.get(&order).copied()
    }
    /// Units used by an order right now.
    pub fn redeemed(&self) -> usize {
        self.redemptions.len()
    }
}

/// All coupons of one partition and the request ids already decided there.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CouponBook {
    coupons: HashMap<String, CouponLedger>,
    decided: HashSet<u128>,
}

impl CouponBook {
    pub fn coupon(&self, id: &str) -> Option<&CouponLedger> {
        self.coupons.get(id).filter(|c| c.terms.is_some())
    }
    pub fn already_decided(&self, request: u128) -> bool {
        self.decided.contains(&request)
    }
    pub fn issued_users(&self) -> usize {
        self.coupons.values().map(|c| c.holders.len()).sum()
    }
}

/// A change to a [`CouponBook`]; each carries what its revert needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CouponChange {
    /// A request was decided without issuing.
    Decided { request: u128 },
    /// A unit was issued to `user` (the request is decided too).
    Issued {
        request: u128,
        coupon: String,
        user: u128,
        sequence: i64,
    },
    /// Admin terms set (`previous` for the revert). The request is decided too.
    Terms {
        request: u128,
        coupon: String,
        terms: Terms,
        previous: Option<Terms>,
    },
    /// `order` now uses `user`'s unit (the request is decided too).
    Redeemed {
        request: u128,
        coupon: String,
        order: u128,
        user: u128,
    },
    /// `order` gave `user`'s unit back (the request is decided too).
    Released {
        request: u128,
        coupon: String,
        order: u128,
        user: u128,
    },
}

const KEY_TERMS: u8 = b'c';
const KEY_REQUEST: u8 = b'r';
const KEY_REDEMPTION: u8 = b'u';
const NONE: i64 = i64::MIN;

fn redemption_key(order: u128, coupon: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(17 + coupon.len());
    k.push(KEY_REDEMPTION);
    k.extend_from_slice(&order.to_be_bytes());
    k.extend_from_slice(coupon.as_bytes());
    k
}

fn request_key(request: u128) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(KEY_REQUEST);
    k.extend_from_slice(&request.to_be_bytes());
    k
}

impl PartitionState for CouponBook {
    type Change = CouponChange;

    fn apply(&mut self, change: &CouponChange) {
        match change {
            CouponChange::Decided { request } => {
                self.decided.insert(*request);
            }
            CouponChange::Issued {
                request,
                coupon,
                user,
                ..
            } => {
                self.decided.insert(*request);
                self.coupons
                    .entry(coupon.clone())
                    .or_default()
                    .holders
                    .insert(*user);
            }
            CouponChange::Terms {
                request,
                coupon,
                terms,
                ..
            } => {
                self.decided.insert(*request);
                self.coupons.entry(coupon.clone()).or_default().terms = Some(*terms);
            }
            CouponChange::Redeemed {
                request,
                coupon,
                order,
                user,
            } => {
                self.decided.insert(*request);
                let c = self.coupons.entry(coupon.clone()).or_default();
                c.redemptions.insert(*order, *user);
                c.used_by.insert(*user, *order);
            }
            CouponChange::Released {
                request,
                coupon,
                order,
                user,
            } => {
                self.decided.insert(*request);
                let c = self.coupons.entry(coupon.clone()).or_default();
                c.redemptions.remove(order);
                c.used_by.remove(user);
            }
        }
    }

    fn revert(&mut self, change: &CouponChange) {
        match change {
            CouponChange::Decided { request } => {
                self.decided.remove(request);
            }
            CouponChange::Issued {
                request,
                coupon,
                user,
                ..
            } => {
                self.decided.remove(request);
                if let Some(c) = self.coupons.get_mut(coupon) {
                    c.holders.remove(user);
                }
            }
            CouponChange::Terms {
                request,
                coupon,
                previous,
                ..
            } => {
                self.decided.remove(request);
                match previous {
                    Some(p) => self.coupons.entry(coupon.clone()).or_default().terms = Some(*p),
                    None => {
                        self.coupons.remove(coupon);
                    }
                }
            }
            CouponChange::Redeemed {
                request,
                coupon,
                order,
                user,
            } => {
                self.decided.remove(request);
                if let Some(c) = self.coupons.get_mut(coupon) {
                    c.redemptions.remove(order);
                    c.used_by.remove(user);
                }
            }
            CouponChange::Released {
                request,
                coupon,
                order,
                user,
            } => {
                self.decided.remove(request);
                let c = self.coupons.entry(coupon.clone()).or_default();
                c.redemptions.insert(*order, *user);
                c.used_by.insert(*user, *order);
            }
        }
    }

    fn changelog_records(&self, change: &CouponChange, out: &mut Vec<ChangelogRecord>) {
        match change {
            CouponChange::Decided { request } => {
                out.push((request_key(*request), Some(Vec::new())))
            }
            CouponChange::Issued {
                request,
                coupon,
                user,
                sequence,
            } => {
                let mut v = Vec::with_capacity(24 + coupon.len());
                v.extend_from_slice(&user.to_be_bytes());
                v.extend_from_slice(&sequence.to_be_bytes());
                v.extend_from_slice(coupon.as_bytes());
                out.push((request_key(*request), Some(v)));
            }
            CouponChange::Terms {
                request,
                coupon,
                terms,
                ..
            } => {
                out.push((request_key(*request), Some(Vec::new())));
                let mut k = Vec::with_capacity(1 + coupon.len());
                k.push(KEY_TERMS);
                k.extend_from_slice(coupon.as_bytes());
                out.push((k, Some(encode_terms(terms))));
            }
            CouponChange::Redeemed {
                request,
                coupon,
                order,
                user,
            } => {
                out.push((request_key(*request), Some(Vec::new())));
                out.push((
                    redemption_key(*order, coupon),
                    Some(user.to_be_bytes().to_vec()),
                ));
            }
            CouponChange::Released {
                request,
                coupon,
                order,
                ..
            } => {
                out.push((request_key(*request), Some(Vec::new())));
                out.push((redemption_key(*order, coupon), None));
            }
        }
    }

    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        if let (Some((&KEY_REDEMPTION, rest)), None) = (key.split_first(), value) {
            // A released redemption: forget it (it may have been restored earlier in the log).
            let (order, coupon) = split_redemption_key(rest)?;
            if let Some(c) = self.coupons.get_mut(coupon) {
                if let Some(user) = c.redemptions.remove(&order) {
                    c.used_by.remove(&user);
                }
            }
            return Ok(());
        }
        let Some(value) = value else { return Ok(()) }; // other tombstones: nothing kept
        match key.split_first() {
            Some((&KEY_TERMS, coupon)) => {
                let coupon = std::str::from_utf8(coupon).map_err(|e| format!("coupon id: {e}"))?;
                let terms = decode_terms(value)?;
                self.coupons.entry(coupon.to_string()).or_default().terms = Some(terms);
            }
            Some((&KEY_REDEMPTION, rest)) => {
                let (order, coupon) = split_redemption_key(rest)?;
                let user = u128::from_be_bytes(
                    value
                        .try_into()
                        .map_err(|_| "redemption value is not 16 bytes".to_string())?,
                );
                let c = self.coupons.entry(coupon.to_string()).or_default();
                c.redemptions.insert(order, user);
                c.used_by.insert(user, order);
            }
            Some((&KEY_REQUEST, hash)) => {
                let request = u128::from_be_bytes(
                    hash.try_into()
                        .map_err(|_| "request key is not 16 bytes".to_string())?,
                );
                self.decided.insert(request);
                if !value.is_empty() {
                    if value.len() < 24 {
                        return Err(format!("issued value of {} bytes", value.len()));
                    }
                    let user = u128::from_be_bytes(value[..16].try_into().expect("16 bytes"));
                    let coupon =
                        std::str::from_utf8(&value[24..]).map_err(|e| format!("coupon id: {e}"))?;
                    self.coupons
                        .entry(coupon.to_string())
                        .or_default()
                        .holders
                        .insert(user);
                }
            }
            _ => return Err(format!("unknown changelog key {key:?}")),
        }
        Ok(())
    }

    fn approx_bytes(&self) -> usize {
        // hashbrown: one control byte per bucket plus the value, buckets >= len.
        let set = |cap: usize, item: usize| cap * (item + 1);
        self.decided.capacity() * 17
            + self
                .coupons
                .iter()
                .map(|(k, c)| {
                    k.capacity()
                        + std::mem::size_of::<CouponLedger>()
                        + set(c.holders.capacity(), 16)
                        + set(c.redemptions.capacity(), 32)
                        + set(c.used_by.capacity(), 32)
                })
                .sum::<usize>()
    }
}

fn split_redemption_key(rest: &[u8]) -> Result<(u128, &str), String> {
    if rest.len() < 16 {
        return Err("redemption key shorter than an order hash".into());
    }
    let order = u128::from_be_bytes(rest[..16].try_into().expect("16 bytes"));
    let coupon = std::str::from_utf8(&rest[16..]).map_err(|e| format!("coupon id: {e}"))?;
    Ok((order, coupon))
}

/// Terms as 24 bytes (stock, from, until) plus, when the coupon has a
/// discount, 17 more (kind, value, cap). Terms written before discounts
/// existed are 24 bytes and restore with no discount.
fn encode_terms(terms: &Terms) -> Vec<u8> {
    let mut v = Vec::with_capacity(41);
    v.extend_from_slice(&terms.stock.to_be_bytes());
    v.extend_from_slice(&terms.active_from.unwrap_or(NONE).to_be_bytes());
    v.extend_from_slice(&terms.active_until.unwrap_or(NONE).to_be_bytes());
    if let Some(d) = &terms.discount {
        v.push(match d.kind {
            DiscountKind::Fixed => b'F',
            DiscountKind::Percent => b'P',
        });
        v.extend_from_slice(&d.value.0.to_be_bytes());
        v.extend_from_slice(&d.cap.map_or(NONE, |c| c.0).to_be_bytes());
    }
    v
}

fn decode_terms(value: &[u8]) -> Result<Terms, String> {
    if value.len() != 24 && value.len() != 41 {
        return Err(format!(
            "terms value of {} bytes, expected 24 or 41",
            value.len()
        ));
    }
    let at = |i: usize| i64::from_be_bytes(value[i..i + 8].try_into().expect("8 bytes"));
    let opt = |v: i64| (v != NONE).then_some(v);
    let discount = if value.len() == 41 {
        let kind = match value[24] {
            b'F' => DiscountKind::Fixed,
            b'P' => DiscountKind::Percent,
            k => return Err(format!("unknown discount kind {k}")),
        };
        Some(Discount {
            kind,
            value: Money(at(25)),
            cap: opt(at(33)).map(Money),
        })
    } else {
        None
    };
    Ok(Terms {
        stock: at(0),
        active_from: opt(at(8)),
        active_until: opt(at(16)),
        discount,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(changes: &[CouponChange]) -> CouponBook {
        let mut book = CouponBook::default();
        let (_, records) = surge_engine::laws::changelog_of::<CouponBook>(changes);
        for (k, v) in records {
            book.restore(&k, v.as_deref()).unwrap();
        }
        book
    }

    #[test]
    fn changelog_restores_what_apply_built() {
        let terms = Terms {
            stock: 2,
            active_from: Some(5),
            active_until: None,
            discount: Some(Discount::percent(Money(1000), Some(Money(500)))),
        };
        let changes = vec![
            CouponChange::Terms {
                request: 1,
                coupon: "c".into(),
                terms,
                previous: None,
            },
            CouponChange::Issued {
                request: 2,
                coupon: "c".into(),
                user: id_hash("u1"),
                sequence: 1,
            },
            CouponChange::Decided { request: 3 },
        ];
        let mut live = CouponBook::default();
        changes.iter().for_each(|c| live.apply(c));
        let restored = replay(&changes);
        assert!(
            restored.already_decided(1),
            "an admin command's request id survives a restore"
        );
        for book in [&live, &restored] {
            assert_eq!(book.coupon("c").unwrap().terms(), Some(&terms));
            assert!(book.coupon("c").unwrap().holds(id_hash("u1")));
            assert_eq!(book.coupon("c").unwrap().issued(), 1);
            assert!(book.already_decided(2) && book.already_decided(3));
        }
    }

    #[test]
    fn revert_undoes_in_reverse() {
        let mut book = CouponBook::default();
        let t1 = Terms {
            stock: 1,
            active_from: None,
            active_until: None,
            discount: None,
        };
        let t2 = Terms { stock: 5, ..t1 };
        let changes = vec![
            CouponChange::Terms {
                request: 1,
                coupon: "c".into(),
                terms: t1,
                previous: None,
            },
            CouponChange::Issued {
                request: 2,
                coupon: "c".into(),
                user: 9,
                sequence: 1,
            },
            CouponChange::Terms {
                request: 3,
                coupon: "c".into(),
                terms: t2,
                previous: Some(t1),
            },
        ];
        changes.iter().for_each(|c| book.apply(c));
        changes[1..].iter().rev().for_each(|c| book.revert(c));
        assert_eq!(book.coupon("c").unwrap().terms(), Some(&t1));
        assert_eq!(book.coupon("c").unwrap().issued(), 0);
        assert!(book.already_decided(1) && !book.already_decided(2) && !book.already_decided(3));
        book.revert(&changes[0]);
        assert!(book.coupon("c").is_none());
    }
}
