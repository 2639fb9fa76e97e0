//! The stock of the products of one inventory-commands partition, the
//! reservations the saga holds on them, and how both change.
//!
//! Conservation is structural: units move between available, reserved and
//! sold only through a [`Reservation`] changing status, so for every product
//! `available + reserved + sold = created` after every change; the rules in
//! `decide` keep each term non-negative. An order or request id is held as a
//! 128-bit hash (xxh3-128, as the coupon ledger does), never as its string.
//!
//! Changelog layout (compacted topic, one key per live fact, value = the
//! entry's current value at commit):
//! - `p` + productId → created, available, reserved, sold (4 × i64 BE);
//! - `o` + order hash (16 bytes BE) + productId → status byte + quantity
//!   (i32 BE): the reservation of that order on that product;
//! - `r` + request hash (16 bytes BE) → empty: an admin request decided.
//!
//! Nothing is ever deleted: a released or sold reservation must still answer
//! a repeated command the way it answered the first one.

use std::collections::{HashMap, HashSet};

use surge_engine::{ChangelogRecord, PartitionState};

/// 128-bit identity hash of an order or request id.
pub fn id_hash(id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

/// The units of one product, by where they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stock {
    /// Initial stock plus every adjustment.
    pub created: i64,
    /// Free for sale.
    pub available: i64,
    /// Held for orders not yet paid or released.
    pub reserved: i64,
    /// Committed to paid orders.
    pub sold: i64,
}

impl Stock {
    /// available + reserved + sold = created, and no term below zero.
    pub fn is_sound(&self) -> bool {
        self.available >= 0
            && self.reserved >= 0
            && self.sold >= 0
            && self
                .available
                .checked_add(self.reserved)
                .and_then(|v| v.checked_add(self.sold))
                == Some(self.created)
    }
}

/// Where an order's reservation of one product stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationStatus {
    /// The units are held (counted in `reserved`).
    Reserved,
    /// The units are sold (counted in `sold`).
    Sold,
    /// The units were given back to available stock.
    Released,
    /// Refused: fewer units were available than asked.
    Insufficient,
    /// Refused: the product did not exist when asked.
    UnknownProduct,
}

impl ReservationStatus {
    const ALL: [ReservationStatus; 5] = [
        Self::Reserved,
        Self::Sold,
        Self::Released,
        Self::Insufficient,
        Self::UnknownProduct,
    ];

    fn byte(self) -> u8 {
        match self {
            Self::Reserved => 1,
            Self::Sold => 2,
            Self::Released => 3,
            Self::Insufficient => 4,
            Self::UnknownProduct => 5,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.byte() == b)
    }
}

/// An order's reservation of one product: its status and the units asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub status: ReservationStatus,
    pub quantity: i32,
}

impl Reservation {
    pub fn new(status: ReservationStatus, quantity: i32) -> Self {
        Self { status, quantity }
    }
    /// Units this reservation keeps in `reserved`.
    fn reserved_units(&self) -> i64 {
        match self.status {
            ReservationStatus::Reserved => i64::from(self.quantity),
            _ => 0,
        }
    }
    /// Units this reservation keeps in `sold`.
    fn sold_units(&self) -> i64 {
        match self.status {
            ReservationStatus::Sold => i64::from(self.quantity),
            _ => 0,
        }
    }
}

/// One product: its stock once created, and the orders' reservations (a
/// refused one may exist for a product never created).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Product {
    stock: Option<Stock>,
    reservations: HashMap<u128, Reservation>,
}

impl Product {
    fn is_empty(&self) -> bool {
        self.stock.is_none() && self.reservations.is_empty()
    }
}

/// All products of one partition and the admin request ids decided there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InventoryBook {
    products: HashMap<String, Product>,
    decided: HashSet<u128>,
}

impl InventoryBook {
    /// The stock of a created product.
    pub fn stock(&self, product: &str) -> Option<&Stock> {
        self.products.get(product).and_then(|p| p.stock.as_ref())
    }
    /// The reservation `order` (hashed) holds on `product`, if it ever asked.
    pub fn reservation(&self, order: u128, product: &str) -> Option<Reservation> {
        self.products
            .get(product)
            .and_then(|p| p.reservations.get(&order))
            .copied()
    }
    pub fn already_decided(&self, request: u128) -> bool {
        self.decided.contains(&request)
    }
    /// Every created product and its stock.
    pub fn products(&self) -> impl Iterator<Item = (&str, &Stock)> + '_ {
        self.products
            .iter()
            .filter_map(|(id, p)| p.stock.as_ref().map(|s| (id.as_str(), s)))
    }
    /// Every reservation remembered on `product` (any status), by order hash.
    pub fn reservations_of<'a>(
        &'a self,
        product: &str,
    ) -> impl Iterator<Item = (u128, Reservation)> + 'a {
        self.products
            .get(product)
            .into_iter()
            .flat_map(|p| p.reservations.iter().map(|(o, r)| (*o, *r)))
    }
    /// Number of reservations remembered (any status).
    pub fn reservations(&self) -> usize {
        self.products.values().map(|p| p.reservations.len()).sum()
    }

    fn drop_if_empty(&mut self, product: &str) {
        if self.products.get(product).is_some_and(Product::is_empty) {
            self.products.remove(product);
        }
    }

    /// Moves the units of a reservation changing from `from` to `to`
    /// (`sign` -1 undoes the move).
    fn move_units(
        &mut self,
        product: &str,
        from: Option<&Reservation>,
        to: &Reservation,
        sign: i64,
    ) {
        let reserved = to.reserved_units() - from.map_or(0, Reservation::reserved_units);
        let sold = to.sold_units() - from.map_or(0, Reservation::sold_units);
        if reserved == 0 && sold == 0 {
            return;
        }
        if let Some(stock) = self
            .products
            .get_mut(product)
            .and_then(|p| p.stock.as_mut())
        {
            stock.reserved += sign * reserved;
            stock.sold += sign * sold;
            stock.available -= sign * (reserved + sold);
        }
    }
}

/// A change to an [`InventoryBook`]; each carries what its revert needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryChange {
    /// An admin request was decided without changing stock.
    Decided { request: u128 },
    /// A product was created with `stock` units (the request is decided too).
    Created {
        request: u128,
        product: String,
        stock: i64,
    },
    /// `delta` units were added to created and available stock (the request
    /// is decided too).
    Adjusted {
        request: u128,
        product: String,
        delta: i64,
    },
    /// An order's reservation of a product became `now`; its units move
    /// between available, reserved and sold accordingly.
    Reservation {
        order: u128,
        product: String,
        now: Reservation,
        previous: Option<Reservation>,
    },
}

const KEY_PRODUCT: u8 = b'p';
const KEY_ORDER: u8 = b'o';
const KEY_REQUEST: u8 = b'r';

fn request_key(request: u128) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(KEY_REQUEST);
    k.extend_from_slice(&request.to_be_bytes());
    k
}

fn product_record(product: &str, stock: &Stock) -> ChangelogRecord {
    let mut k = Vec::with_capacity(1 + product.len());
    k.push(KEY_PRODUCT);
    k.extend_from_slice(product.as_bytes());
    let mut v = Vec::with_capacity(32);
    for n in [stock.created, stock.available, stock.reserved, stock.sold] {
        v.extend_from_slice(&n.to_be_bytes());
    }
    (k, Some(v))
}

fn reservation_record(order: u128, product: &str, r: &Reservation) -> ChangelogRecord {
    let mut k = Vec::with_capacity(17 + product.len());
    k.push(KEY_ORDER);
    k.extend_from_slice(&order.to_be_bytes());
    k.extend_from_slice(product.as_bytes());
    let mut v = Vec::with_capacity(5);
    v.push(r.status.byte());
    v.extend_from_slice(&r.quantity.to_be_bytes());
    (k, Some(v))
}

impl PartitionState for InventoryBook {
    type Change = InventoryChange;

    fn apply(&mut self, change: &InventoryChange) {
        match change {
            InventoryChange::Decided { request } => {
                self.decided.insert(*request);
            }
            InventoryChange::Created {
                request,
                product,
                stock,
            } => {
                self.decided.insert(*request);
                self.products.entry(product.clone()).or_default().stock = Some(Stock {
                    created: *stock,
                    available: *stock,
                    reserved: 0,
                    sold: 0,
                });
            }
            InventoryChange::Adjusted {
                request,
                product,
                delta,
            } => {
                self.decided.insert(*request);
                if let Some(s) = self
                    .products
                    .get_mut(product)
                    .and_then(|p| p.stock.as_mut())
                {
                    s.created += delta;
                    s.available += delta;
                }
            }
            InventoryChange::Reservation {
                order,
                product,
                now,
                previous,
            } => {
                self.products
                    .entry(product.clone())
                    .or_default()
                    .reservations
                    .insert(*order, *now);
                self.move_units(product, previous.as_ref(), now, 1);
            }
        }
    }

    fn revert(&mut self, change: &InventoryChange) {
        match change {
            InventoryChange::Decided { request } => {
                self.decided.remove(request);
            }
            InventoryChange::Created {
                request, product, ..
            } => {
                self.decided.remove(request);
                if let Some(p) = self.products.get_mut(product) {
                    p.stock = None;
                }
                self.drop_if_empty(product);
            }
            InventoryChange::Adjusted {
                request,
                product,
                delta,
            } => {
                self.decided.remove(request);
                if let Some(s) = self
                    .products
                    .get_mut(product)
                    .and_then(|p| p.stock.as_mut())
                {
                    s.created -= delta;
                    s.available -= delta;
                }
            }
            InventoryChange::Reservation {
                order,
                product,
                now,
                previous,
            } => {
                self.move_units(product, previous.as_ref(), now, -1);
                if let Some(p) = self.products.get_mut(product) {
                    match previous {
                        Some(r) => {
                            p.reservations.insert(*order, *r);
                        }
                        None => {
                            p.reservations.remove(order);
                        }
                    }
                }
                self.drop_if_empty(product);
            }
        }
    }

    fn changelog_records(&self, change: &InventoryChange, out: &mut Vec<ChangelogRecord>) {
        match change {
            InventoryChange::Decided { request } => {
                out.push((request_key(*request), Some(Vec::new())));
            }
            InventoryChange::Created {
                request, product, ..
            }
            | InventoryChange::Adjusted {
                request, product, ..
            } => {
                out.push((request_key(*request), Some(Vec::new())));
                if let Some(stock) = self.stock(product) {
                    out.push(product_record(product, stock));
                }
            }
            InventoryChange::Reservation {
                order,
                product,
                now,
                previous,
            } => {
                if let Some(r) = self.reservation(*order, product) {
                    out.push(reservation_record(*order, product, &r));
                }
                let moved = now.reserved_units() != previous.map_or(0, |p| p.reserved_units())
                    || now.sold_units() != previous.map_or(0, |p| p.sold_units());
                if moved {
                    if let Some(stock) = self.stock(product) {
                        out.push(product_record(product, stock));
                    }
                }
            }
        }
    }

    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let Some(value) = value else { return Ok(()) }; // never written: nothing kept
        let utf8 = |b: &[u8]| {
            std::str::from_utf8(b)
                .map(str::to_string)
                .map_err(|e| format!("product id: {e}"))
        };
        match key.split_first() {
            Some((&KEY_PRODUCT, product)) => {
                if value.len() != 32 {
                    return Err(format!("stock value of {} bytes, expected 32", value.len()));
                }
                let at =
                    |i: usize| i64::from_be_bytes(value[i..i + 8].try_into().expect("8 bytes"));
                let stock = Stock {
                    created: at(0),
                    available: at(8),
                    reserved: at(16),
                    sold: at(24),
                };
                self.products.entry(utf8(product)?).or_default().stock = Some(stock);
            }
            Some((&KEY_ORDER, rest)) => {
                if rest.len() < 16 {
                    return Err(format!("reservation key of {} bytes", key.len()));
                }
                let order = u128::from_be_bytes(rest[..16].try_into().expect("16 bytes"));
                let product = utf8(&rest[16..])?;
                let (&status, quantity) = value
                    .split_first()
                    .filter(|(_, q)| q.len() == 4)
                    .ok_or_else(|| {
                        format!("reservation value of {} bytes, expected 5", value.len())
                    })?;
                let status = ReservationStatus::from_byte(status)
                    .ok_or_else(|| format!("unknown reservation status {status}"))?;
                let quantity = i32::from_be_bytes(quantity.try_into().expect("4 bytes"));
                self.products
                    .entry(product)
                    .or_default()
                    .reservations
                    .insert(order, Reservation::new(status, quantity));
            }
            Some((&KEY_REQUEST, hash)) => {
                let request = u128::from_be_bytes(
                    hash.try_into()
                        .map_err(|_| "request key is not 16 bytes".to_string())?,
                );
                self.decided.insert(request);
            }
            _ => return Err(format!("unknown changelog key {key:?}")),
        }
        Ok(())
    }

    fn approx_bytes(&self) -> usize {
        // hashbrown: one control byte per bucket plus the entry, buckets >= len.
        let reservation = 16 + std::mem::size_of::<Reservation>() + 1;
        self.decided.capacity() * 17
            + self
                .products
                .iter()
                .map(|(k, p)| {
                    k.capacity()
                        + std::mem::size_of::<(String, Product)>()
                        + 1
                        + p.reservations.capacity() * reservation
                })
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use surge_engine::laws::{assert_apply_revert_identity, assert_restore_rebuilds, changelog_of};
    use ReservationStatus::*;

    fn hold(order: u128, now: Reservation, previous: Option<Reservation>) -> InventoryChange {
        InventoryChange::Reservation {
            order,
            product: "p".into(),
            now,
            previous,
        }
    }

    /// Every kind of change and every status transition the rules make.
    fn every_transition() -> Vec<InventoryChange> {
        let r = |s, q| Reservation::new(s, q);
        vec![
            // A refusal for a product not created yet, then the product.
            hold(9, r(UnknownProduct, 2), None),
            InventoryChange::Created {
                request: 1,
                product: "p".into(),
                stock: 10,
            },
            InventoryChange::Adjusted {
                request: 2,
                product: "p".into(),
                delta: 5,
            },
            InventoryChange::Decided { request: 3 },
            hold(10, r(Reserved, 4), None),
            hold(11, r(Reserved, 3), None),
            hold(12, r(Insufficient, 50), None),
            hold(10, r(Sold, 4), Some(r(Reserved, 4))),
            hold(11, r(Released, 3), Some(r(Reserved, 3))),
            hold(10, r(Released, 4), Some(r(Sold, 4))),
            hold(13, r(Reserved, 6), None),
            hold(13, r(Sold, 6), Some(r(Reserved, 6))),
            InventoryChange::Adjusted {
                request: 4,
                product: "p".into(),
                delta: -2,
            },
            InventoryChange::Created {
                request: 5,
                product: "q".into(),
                stock: 0,
            },
        ]
    }

    #[test]
    fn units_move_with_the_reservation_status() {
        let changes = every_transition();
        let mut book = InventoryBook::default();
        let mut seen = Vec::new();
        for c in &changes {
            book.apply(c);
            if let Some(s) = book.stock("p") {
                assert!(s.is_sound(), "after {c:?}: {s:?}");
                seen.push(*s);
            }
        }
        let stock = |created, available, reserved, sold| Stock {
            created,
            available,
            reserved,
            sold,
        };
        assert_eq!(
            seen,
            vec![
                stock(10, 10, 0, 0),
                stock(15, 15, 0, 0),
                stock(15, 15, 0, 0),
                stock(15, 11, 4, 0),
                stock(15, 8, 7, 0),
                stock(15, 8, 7, 0),
                stock(15, 8, 3, 4),
                stock(15, 11, 0, 4),
                stock(15, 15, 0, 0),
                stock(15, 9, 6, 0),
                stock(15, 9, 0, 6),
                stock(13, 7, 0, 6),
                stock(13, 7, 0, 6),
            ]
        );
        assert_eq!(
            book.reservation(9, "p"),
            Some(Reservation::new(UnknownProduct, 2))
        );
        assert_eq!(
            book.reservation(10, "p"),
            Some(Reservation::new(Released, 4))
        );
        assert_eq!(book.reservation(10, "q"), None);
        assert_eq!(book.reservations(), 5);
        assert_eq!(book.stock("q"), Some(&stock(0, 0, 0, 0)));
        assert!((1..=5).all(|r| book.already_decided(r)) && !book.already_decided(6));
    }

    #[test]
    fn apply_then_revert_is_the_identity() {
        let changes = every_transition();
        // From empty, and from every intermediate state.
        for split in 0..=changes.len() {
            let mut base = InventoryBook::default();
            changes[..split].iter().for_each(|c| base.apply(c));
            assert_apply_revert_identity(&base, &changes[split..]);
        }
        // Reverting everything leaves no empty product behind.
        let mut book = InventoryBook::default();
        changes.iter().for_each(|c| book.apply(c));
        changes.iter().rev().for_each(|c| book.revert(c));
        assert_eq!(book, InventoryBook::default());
    }

    #[test]
    fn changelog_restores_what_apply_built() {
        let changes = every_transition();
        for n in 0..=changes.len() {
            let (live, log) = changelog_of::<InventoryBook>(&changes[..n]);
            assert_restore_rebuilds(&live, &log);
        }
        let (_, log) = changelog_of::<InventoryBook>(&changes);
        // One key per live fact: 2 products, 5 reservations, 5 requests.
        assert_eq!(log.len(), 12);
        let mut stock_key = vec![b'p'];
        stock_key.extend_from_slice(b"p");
        let value = log
            .iter()
            .find(|(k, _)| *k == stock_key)
            .and_then(|(_, v)| v.clone())
            .unwrap();
        let expected: Vec<u8> = [13i64, 7, 0, 6]
            .iter()
            .flat_map(|n| n.to_be_bytes())
            .collect();
        assert_eq!(value, expected);
        let mut order_key = vec![b'o'];
        order_key.extend_from_slice(&10u128.to_be_bytes());
        order_key.extend_from_slice(b"p");
        let value = log.iter().find(|(k, _)| *k == order_key).unwrap();
        assert_eq!(value.1.as_deref(), Some(&[3u8, 0, 0, 0, 4][..]));
    }

    #[test]
    fn restore_rejects_malformed_records() {
        let mut book = InventoryBook::default();
        assert!(book.restore(b"pp", Some(&[0; 31])).is_err());
        assert!(book.restore(b"o short", Some(&[1, 0, 0, 0, 1])).is_err());
        let mut key = vec![b'o'];
        key.extend_from_slice(&1u128.to_be_bytes());
        key.push(b'p');
        assert!(book.restore(&key, Some(&[9, 0, 0, 0, 1])).is_err());
        assert!(book.restore(&key, Some(&[1, 0, 0, 1])).is_err());
        assert!(book.restore(b"r123", Some(&[])).is_err());
        assert!(book.restore(b"x", Some(&[])).is_err());
        assert_eq!(book, InventoryBook::default());
    }
}
