//! order-create, order-cancel, payment-request and order-status: the order
//! saga's contracts.

use apache_avro::types::Value;
use chrono::{DateTime, Utc};

use crate::avro::{self, ContractError, Money, RecordReader};
use crate::{contract_schema, Contract};

/// One order line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderItem {
    pub product_id: String,
    pub quantity: i32,
    pub unit_price: Money,
}

/// A request to place an order (order-create, key `order_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCreate {
    pub order_id: String,
    pub user_id: String,
    pub items: Vec<OrderItem>,
    pub currency: String,
    pub coupon_id: Option<String>,
    pub requested_at: DateTime<Utc>,
}

impl Contract for OrderCreate {
    const TOPIC: &'static str = "order-create";
    const SCHEMA_JSON: &'static str = include_str!("../order-create.avsc");
    contract_schema!();

    fn to_avro(&self) -> Value {
        let items = self
            .items
            .iter()
            .map(|i| {
                Value::Record(vec![
                    ("productId".into(), Value::String(i.product_id.clone())),
                    ("quantity".into(), Value::Int(i.quantity)),
                    ("unitPrice".into(), i.unit_price.to_avro()),
                ])
            })
            .collect();
        Value::Record(vec![
            ("orderId".into(), Value::String(self.order_id.clone())),
            ("userId".into(), Value::String(self.user_id.clone())),
            ("items".into(), Value::Array(items)),
            ("currency".into(), Value::String(self.currency.clone())),
            ("couponId".into(), avro::opt_string(&self.coupon_id)),
            ("requestedAt".into(), avro::timestamp(self.requested_at)),
        ])
    }

    fn from_avro(value: Value) -> Result<Self, ContractError> {
        let mut r = RecordReader::new("OrderCreate", value)?;
        let order_id = r.id("orderId")?;
        let user_id = r.id("userId")?;
        let mut items = Vec::new();
        for item in r.array("items")? {
            let mut i = RecordReader::new("OrderItem", item)?;
            let quantity = i.int("quantity")?;
            if quantity < 1 {
                return Err(i.invalid("quantity", format!("{quantity} is below 1")));
            }
            items.push(OrderItem {
                product_id: i.id("productId")?,
                quantity,
                unit_price: i.money("unitPrice")?,
            });
        }
        if items.is_empty() {
            return Err(r.invalid("items", "an order needs at least one line"));
        }
        Ok(Self {
            order_id,
            user_id,
            items,
            currency: r.id("currency")?,
            coupon_id: r.opt_string("couponId")?,
            requested_at: r.timestamp("requestedAt")?,
        })
    }
}

/// A request to cancel an order (order-cancel, key `order_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCancel {
    pub request_id: String,
    pub order_id: String,
    pub user_id: String,
    pub reason: Option<String>,
    pub requested_at: DateTime<Utc>,
}

impl Contract for OrderCancel {
    const TOPIC: &'static str = "order-cancel";
    const SCHEMA_JSON: &'static str = include_str!("../order-cancel.avsc");
    contract_schema!();

    fn to_avro(&self) -> Value {
        Value::Record(vec![
            ("requestId".into(), Value::String(self.request_id.clone())),
            ("orderId".into(), Value::String(self.order_id.clone())),
            ("userId".into(), Value::String(self.user_id.clone())),
            ("reason".into(), avro::opt_string(&self.reason)),
            ("requestedAt".into(), avro::timestamp(self.requested_at)),
        ])
    }

    fn from_avro(value: Value) -> Result<Self, ContractError> {
        let mut r = RecordReader::new("OrderCancel", value)?;
        Ok(Self {
            request_id: r.id("requestId")?,
            order_id: r.id("orderId")?,
            user_id: r.id("userId")?,
            reason: r.opt_string("reason")?,
            requested_at: r.timestamp("requestedAt")?,
        })
    }
}

/// CHARGE or REFUND.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentKind {
    Charge,
    Refund,
}

impl PaymentKind {
    const SYMBOLS: [&'static str; 2] = ["CHARGE", "REFUND"];
    pub fn symbol(self) -> &'static str {
        Self::SYMBOLS[self as usize]
    }
}

/// A charge or refund asked by the saga (payment-request, key `order_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRequest {
    pub payment_id: String,
    pub order_id: String,
    pub user_id: String,
    pub kind: PaymentKind,
    pub amount: Money,
    pub currency: String,
    pub requested_at: DateTime<Utc>,
}

impl Contract for PaymentRequest {
    const TOPIC: &'static str = "payment-request";
    const SCHEMA_JSON: &'static str = include_str!("../payment-request.avsc");
    contract_schema!();

    fn to_avro(&self) -> Value {
        Value::Record(vec![
            ("paymentId".into(), Value::String(self.payment_id.clone())),
            ("orderId".into(), Value::String(self.order_id.clone())),
            ("userId".into(), Value::String(self.user_id.clone())),
            (
                "kind".into(),
                avro::enum_value(&PaymentKind::SYMBOLS, self.kind.symbol()),
            ),
            ("amount".into(), self.amount.to_avro()),
            ("currency".into(), Value::String(self.currency.clone())),
            ("requestedAt".into(), avro::timestamp(self.requested_at)),
        ])
    }

    fn from_avro(value: Value) -> Result<Self, ContractError> {
        let mut r = RecordReader::new("PaymentRequest", value)?;
        let payment_id = r.id("paymentId")?;
        let order_id = r.id("orderId")?;
        let user_id = r.id("userId")?;
        let kind = match r.symbol("kind")?.as_str() {
            "CHARGE" => PaymentKind::Charge,
            "REFUND" => PaymentKind::Refund,
            other => return Err(r.invalid("kind", format!("unknown symbol {other}"))),
        };
        let amount = r.money("amount")?;
        if amount.0 <= 0 {
            return Err(r.invalid("amount", format!("{amount} is not positive")));
        }
        Ok(Self {
            payment_id,
            order_id,
            user_id,
            kind,
            amount,
            currency: r.id("currency")?,
            requested_at: r.timestamp("requestedAt")?,
        })
    }
}

/// The states of an order (Avro enum `OrderState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderState {
    Created,
    PaymentPending,
    Paid,
    Rejected,
    PaymentFailed,
    Cancelled,
}

impl OrderState {
    const SYMBOLS: [&'static str; 6] = [
        "CREATED",
        "PAYMENT_PENDING",
        "PAID",
        "REJECTED",
        "PAYMENT_FAILED",
        "CANCELLED",
    ];
    const ALL: [OrderState; 6] = [
        OrderState::Created,
        OrderState::PaymentPending,
        OrderState::Paid,
        OrderState::Rejected,
        OrderState::PaymentFailed,
        OrderState::Cancelled,
    ];
    pub fn symbol(self) -> &'static str {
        Self::SYMBOLS[self as usize]
    }
    pub fn from_symbol(s: &str) -> Option<Self> {
        Self::SYMBOLS
            .iter()
            .position(|x| *x == s)
            .map(|i| Self::ALL[i])
    }
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Paid | Self::Rejected | Self::PaymentFailed | Self::Cancelled
        )
    }
}

/// One transition of an order (order-status, key `order_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderStatus {
    pub order_id: String,
    pub user_id: String,
    pub state: OrderState,
    pub reason: Option<String>,
    pub total: Money,
    pub currency: String,
    pub coupon_id: Option<String>,
    pub payment_id: Option<String>,
    pub version: i32,
    pub occurred_at: DateTime<Utc>,
}

impl Contract for OrderStatus {
    const TOPIC: &'static str = "order-status";
    const SCHEMA_JSON: &'static str = include_str!("../order-status.avsc");
    contract_schema!();

    fn to_avro(&self) -> Value {
        Value::Record(vec![
            ("orderId".into(), Value::String(self.order_id.clone())),
            ("userId".into(), Value::String(self.user_id.clone())),
            (
                "state".into(),
                avro::enum_value(&OrderState::SYMBOLS, self.state.symbol()),
            ),
            ("terminal".into(), Value::Boolean(self.state.is_terminal())),
            ("reason".into(), avro::opt_string(&self.reason)),
            ("total".into(), self.total.to_avro()),
            ("currency".into(), Value::String(self.currency.clone())),
            ("couponId".into(), avro::opt_string(&self.coupon_id)),
            ("paymentId".into(), avro::opt_string(&self.payment_id)),
            ("version".into(), Value::Int(self.version)),
            ("occurredAt".into(), avro::timestamp(self.occurred_at)),
        ])
    }

    fn from_avro(value: Value) -> Result<Self, ContractError> {
        let mut r = RecordReader::new("OrderStatus", value)?;
        let order_id = r.id("orderId")?;
        let user_id = r.id("userId")?;
        let symbol = r.symbol("state")?;
        let state = OrderState::from_symbol(&symbol)
            .ok_or_else(|| r.invalid("state", format!("unknown symbol {symbol}")))?;
        let terminal = r.boolean("terminal")?;
        if terminal != state.is_terminal() {
            return Err(r.invalid("terminal", format!("{terminal} contradicts state {symbol}")));
        }
        Ok(Self {
            order_id,
            user_id,
            state,
            reason: r.opt_string("reason")?,
            total: r.money("total")?,
            currency: r.id("currency")?,
            coupon_id: r.opt_string("couponId")?,
            payment_id: r.opt_string("paymentId")?,
            version: r.int("version")?,
            occurred_at: r.timestamp("occurredAt")?,
        })
    }
}
