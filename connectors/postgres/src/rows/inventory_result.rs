//! inventory-result → table product_stock.
//!
//! Every decision carries the product's stock after it. A product row
//! exists from its CREATED decision on; answers about products that do not
//! exist (UNKNOWN_PRODUCT, an INVALID create) carry no stock and only
//! update a row that exists.

use sqlx::PgConnection;
use surge_schemas::inventory::InventoryEvent;
use surge_sink::views::LatestStock;
use surge_sink::{Mapping, Position};

use super::Rows;

#[derive(Debug, Default)]
pub struct ProductStockRows {
    pub latest: LatestStock,
}

impl Mapping for ProductStockRows {
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

impl Rows for ProductStockRows {
    async fn write(&self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        for created in [true, false] {
            let p: Vec<_> = self
                .latest
                .products
                .values()
                .filter(|(_, _, c)| *c == created)
                .collect();
            if p.is_empty() {
                continue;
            }
            // Created in this batch: upsert. Otherwise: update what exists.
            let sql = if created {
                "insert into product_stock (product_id, available, reserved, sold, created, source_partition, source_offset, updated_at)
                 select * from unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::int[], $7::bigint[], $8::timestamptz[])
                 on conflict (product_id) do update set available = excluded.available, reserved = excluded.reserved,
                   sold = excluded.sold, created = excluded.created, source_partition = excluded.source_partition,
                   source_offset = excluded.source_offset, updated_at = excluded.updated_at
                 where product_stock.source_offset < excluded.source_offset or product_stock.source_partition <> excluded.source_partition"
            } else {
                "update product_stock s set available = n.available, reserved = n.reserved, sold = n.sold, created = n.created,
                   source_partition = n.source_partition, source_offset = n.source_offset, updated_at = n.updated_at
                 from unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::int[], $7::bigint[], $8::timestamptz[])
                   as n(product_id, available, reserved, sold, created, source_partition, source_offset, updated_at)
                 where s.product_id = n.product_id
                   and (s.source_offset < n.source_offset or s.source_partition <> n.source_partition)"
            };
            sqlx::query(sql)
                .bind(
                    p.iter()
                        .map(|(_, e, _)| e.product_id.clone())
                        .collect::<Vec<_>>(),
                )
                .bind(p.iter().map(|(_, e, _)| e.available).collect::<Vec<_>>())
                .bind(p.iter().map(|(_, e, _)| e.reserved).collect::<Vec<_>>())
                .bind(p.iter().map(|(_, e, _)| e.sold).collect::<Vec<_>>())
                .bind(p.iter().map(|(_, e, _)| e.created).collect::<Vec<_>>())
                .bind(p.iter().map(|(at, _, _)| at.partition).collect::<Vec<_>>())
                .bind(p.iter().map(|(at, _, _)| at.offset).collect::<Vec<_>>())
                .bind(p.iter().map(|(_, e, _)| e.decided_at).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }
}
