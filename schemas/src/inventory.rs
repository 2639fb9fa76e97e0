//! inventory-commands and inventory-result: the internal contract of the
//! inventory pipeline, which owns product stock (keyed by product id).

use apache_avro::types::Value;
use chrono::{DateTime, Utc};

use crate::avro::{self, ContractError, RecordReader};
use crate::{contract_schema, Contract};

/// One command on inventory-commands, keyed by `product_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryCommand {
    pub request_id: String,
    pub product_id: String,
    pub requested_at: DateTime<Utc>,
    pub command: InventoryAction,
}

/// What an [`InventoryCommand`] asks for (the Avro union `command`).
/// Reserve, Release and Commit are idempotent per order id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryAction {
    /// Admin: create the product with its initial stock.
    CreateProduct { stock: i64 },
    /// Admin: change available (and created) stock by `delta`.
    AdjustStock { delta: i64, reason: Option<String> },
    /// The saga holds `quantity` (at least 1) units for `order_id`.
    Reserve { order_id: String, quantity: i32 },
    /// The saga gives the units held for `order_id` back. `reason` is
    /// required (e.g. the order's state): it is what tells a Release from a
    /// Commit to Avro readers that resolve union branches by their fields,
    /// as apache-avro does.
    Release { order_id: String, reason: String },
    /// The saga turns the units held for a paid `order_id` into sold units.
    Commit { order_id: String },
}

impl InventoryAction {
    /// The order a saga command is for; `None` for admin commands.
    pub fn order_id(&self) -> Option<&str> {
        match self {
            Self::Reserve { order_id, .. }
            | Self::Release { order_id, .. }
            | Self::Commit { order_id } => Some(order_id),
            Self::CreateProduct { .. } | Self::AdjustStock { .. } => None,
        }
    }
}

impl Contract for InventoryCommand {
    const TOPIC: &'static str = "inventory-commands";
    const SCHEMA_JSON: &'static str = include_str!("../inventory-commands.avsc");
    contract_schema!();

    fn key(&self) -> &str {
        &self.product_id
    }

    fn to_avro(&self) -> Value {
        let record = |fields: Vec<(&str, Value)>| {
            Value::Record(fields.into_iter().map(|(n, v)| (n.into(), v)).collect())
        };
        let (branch, body) = match &self.command {
            InventoryAction::CreateProduct { stock } => {
                (0, record(vec![("stock", Value::Long(*stock))]))
            }
            InventoryAction::AdjustStock { delta, reason } => (
                1,
                record(vec![
                    ("delta", Value::Long(*delta)),
                    ("reason", avro::opt_string(reason)),
                ]),
            ),
            InventoryAction::Reserve { order_id, quantity } => (
                2,
                record(vec![
                    ("orderId", Value::String(order_id.clone())),
                    ("quantity", Value::Int(*quantity)),
                ]),
            ),
            InventoryAction::Release { order_id, reason } => (
                3,
                record(vec![
                    ("orderId", Value::String(order_id.clone())),
                    ("reason", Value::String(reason.clone())),
                ]),
            ),
            InventoryAction::Commit { order_id } => (
                4,
                record(vec![("orderId", Value::String(order_id.clone()))]),
            ),
        };
        Value::Record(vec![
            ("requestId".into(), Value::String(self.request_id.clone())),
            ("productId".into(), Value::String(self.product_id.clone())),
            ("requestedAt".into(), avro::timestamp(self.requested_at)),
            ("command".into(), Value::Union(branch, Box::new(body))),
        ])
    }

    fn from_avro(value: Value) -> Result<Self, ContractError> {
        let mut r = RecordReader::new("InventoryCommand", value)?;
        let request_id = r.id("requestId")?;
        let product_id = r.id("productId")?;
        let requested_at = r.timestamp("requestedAt")?;
        let (branch, inner) = r.union("command")?;
        let command = match branch {
            0 => {
                let mut c = RecordReader::new("CreateProduct", inner)?;
                InventoryAction::CreateProduct {
                    stock: c.long("stock")?,
                }
            }
            1 => {
                let mut c = RecordReader::new("AdjustStock", inner)?;
                InventoryAction::AdjustStock {
                    delta: c.long("delta")?,
                    reason: c.opt_string("reason")?,
                }
            }
            2 => {
                let mut c = RecordReader::new("Reserve", inner)?;
                let order_id = c.id("orderId")?;
                let quantity = c.int("quantity")?;
                if quantity < 1 {
                    return Err(c.invalid("quantity", format!("{quantity} is below 1")));
                }
                InventoryAction::Reserve { order_id, quantity }
            }
            3 => {
                let mut c = RecordReader::new("Release", inner)?;
                InventoryAction::Release {
                    order_id: c.id("orderId")?,
                    reason: c.string("reason")?,
                }
            }
            4 => {
                let mut c = RecordReader::new("Commit", inner)?;
                InventoryAction::Commit {
                    order_id: c.id("orderId")?,
                }
            }
            other => return Err(r.invalid("command", format!("unknown union branch {other}"))),
        };
        Ok(Self {
            request_id,
            product_id,
            requested_at,
            command,
        })
    }
}

crate::avro::avro_enum! {
    /// The outcome of one inventory command (Avro enum `InventoryOutcome`).
    #[derive(PartialOrd, Ord)]
    pub enum InventoryOutcome {
        Created = "CREATED",
        Adjusted = "ADJUSTED",
        Reserved = "RESERVED",
        InsufficientStock = "INSUFFICIENT_STOCK",
        Released = "RELEASED",
        Committed = "COMMITTED",
        UnknownProduct = "UNKNOWN_PRODUCT",
        Invalid = "INVALID",
        /// A release or commit for an order that holds no reservation here;
        /// answered, changes nothing.
        NotReserved = "NOT_RESERVED",
    }
}

/// The outcome for one command with the product's stock after it, on
/// inventory-result (key `product_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryEvent {
    pub request_id: String,
    pub product_id: String,
    /// The order of a Reserve, Release or Commit; `None` for admin commands.
    pub order_id: Option<String>,
    pub outcome: InventoryOutcome,
    /// Units of this command; 0 for admin commands.
    pub quantity: i32,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
    /// Initial stock plus all adjustments: available + reserved + sold.
    pub created: i64,
    pub reason: Option<String>,
    pub source_partition: i32,
    pub source_offset: i64,
    pub decided_at: DateTime<Utc>,
}

impl InventoryEvent {
    /// available + reserved + sold = created (the conservation invariant).
    pub fn is_conserved(&self) -> bool {
        self.available
            .checked_add(self.reserved)
            .and_then(|v| v.checked_add(self.sold))
            == Some(self.created)
    }
}

impl Contract for InventoryEvent {
    const TOPIC: &'static str = "inventory-result";
    const SCHEMA_JSON: &'static str = include_str!("../inventory-result.avsc");
    contract_schema!();

    fn key(&self) -> &str {
        &self.product_id
    }

    fn to_avro(&self) -> Value {
        Value::Record(vec![
            ("requestId".into(), Value::String(self.request_id.clone())),
            ("productId".into(), Value::String(self.product_id.clone())),
            ("orderId".into(), avro::opt_string(&self.order_id)),
            (
                "outcome".into(),
                avro::enum_value(&InventoryOutcome::SYMBOLS, self.outcome.symbol()),
            ),
            ("quantity".into(), Value::Int(self.quantity)),
            ("available".into(), Value::Long(self.available)),
            ("reserved".into(), Value::Long(self.reserved)),
            ("sold".into(), Value::Long(self.sold)),
            ("created".into(), Value::Long(self.created)),
            ("reason".into(), avro::opt_string(&self.reason)),
            ("sourcePartition".into(), Value::Int(self.source_partition)),
            ("sourceOffset".into(), Value::Long(self.source_offset)),
            ("decidedAt".into(), avro::timestamp(self.decided_at)),
        ])
    }

    fn from_avro(value: Value) -> Result<Self, ContractError> {
        let mut r = RecordReader::new("InventoryEvent", value)?;
        let request_id = r.id("requestId")?;
        let product_id = r.id("productId")?;
        let order_id = r.opt_string("orderId")?;
        let symbol = r.symbol("outcome")?;
        let outcome = InventoryOutcome::from_symbol(&symbol)
            .ok_or_else(|| r.invalid("outcome", format!("unknown symbol {symbol}")))?;
        Ok(Self {
            request_id,
            product_id,
            order_id,
            outcome,
            quantity: r.int("quantity")?,
            available: r.long("available")?,
            reserved: r.long("reserved")?,
            sold: r.long("sold")?,
            created: r.long("created")?,
            reason: r.opt_string("reason")?,
            source_partition: r.int("sourcePartition")?,
            source_offset: r.long("sourceOffset")?,
            decided_at: r.timestamp("decidedAt")?,
        })
    }
}
