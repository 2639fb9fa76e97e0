//! inventory-result → one hash per product with its stock after the latest
//! decision. As in PostgreSQL, the hash exists from the product's CREATED
//! decision on; answers about products that do not exist only update one
//! that does.

use surge_schemas::inventory::InventoryEvent;
use surge_sink::views::LatestStock;
use surge_sink::{Mapping, Position};

use super::{HashWrite, KeyMapping, KeyWrites};
use crate::keys::Keyspace;

#[derive(Debug, Default)]
pub struct ProductStockKeys {
    pub latest: LatestStock,
}

impl Mapping for ProductStockKeys {
    type Value = InventoryEvent;

    /// inventory-result has no tombstones: a null value is skipped.
    fn add(&mut self, at: Position, _key: Option<&[u8]>, value: Option<InventoryEvent>) {
        if let Some(e) = value {
            self.latest.add(at, e);
        }
    }

    fn writes(&self) -> usize {
        self.latest.products.len()
    }
}

impl KeyMapping for ProductStockKeys {
    fn key_writes(&self, keys: &Keyspace) -> KeyWrites {
        let mut w = KeyWrites::default();
        for (at, e, created) in self.latest.products.values() {
            w.hashes.push(HashWrite {
                key: keys.product(&e.product_id),
                offset: at.offset,
                only_existing: !created,
                fields: vec![
                    ("available", e.available.to_string()),
                    ("reserved", e.reserved.to_string()),
                    ("sold", e.sold.to_string()),
                    ("created", e.created.to_string()),
                    ("updated_at", e.decided_at.timestamp_millis().to_string()),
                    ("partition", at.partition.to_string()),
                ],
            });
        }
        w
    }
}
