//! order-create, order-cancel, payment-request and order-status: the order
//! saga's public contracts; order-replies: the internal topic on which the
//! other pipelines answer the saga.

use apache_avro::types::Value;
use chrono::{DateTime, Utc};

use crate::avro::{self, ContractError, Money, RecordReader};
use crate::coupon::Discount;
use crate::{contract_schema, Contract};

/// One order line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderItem {
    pub product_id: String,
    pub quantity: i32,
    pub unit_price: Money,
}

impl OrderItem {
    /// The record `OrderItem` of order-create, or `OrderLine` of order-status:
    /// the same three fields.
    fn to_avro(&self) -> Value {
        Value::Record(vec![
            ("productId".into(), Value::String(self.product_id.clone())),
            ("quantity".into(), Value::Int(self.quantity)),
            ("unitPrice".into(), self.unit_price.to_avro()),
        ])
    }

    fn from_avro(record: &'static str, value: Value) -> Result<Self, ContractError> {
        let mut i = RecordReader::new(record, value)?;
        let quantity = i.int("quantity")?;
        if quantity < 1 {
            return Err(i.invalid("quantity", format!("{quantity} is below 1")));
        }
        Ok(OrderItem {
            product_id: i.id("productId")?,
            quantity,
            unit_price: i.money("unitPrice")?,
        })
    }
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

    fn key(&self) -> &str {
        &self.order_id
    }

    fn to_avro(&self) -> Value {
        let items = self.items.iter().map(OrderItem::to_avro).collect();
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
            items.push(OrderItem::from_avro("OrderItem", item)?);
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

    fn key(&self) -> &str {
        &self.order_id
    }

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

crate::avro::avro_enum! {
    /// CHARGE or REFUND.
    pub enum PaymentKind {
        Charge = "CHARGE",
        Refund = "REFUND",
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
    /// REFUND: the payment id of the charge given back.
    pub refund_of: Option<String>,
}

impl Contract for PaymentRequest {
    const TOPIC: &'static str = "payment-request";
    const SCHEMA_JSON: &'static str = include_str!("../payment-request.avsc");
    contract_schema!();

    fn key(&self) -> &str {
        &self.order_id
    }

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
            ("refundOf".into(), avro::opt_string(&self.refund_of)),
        ])
    }

    fn from_avro(value: Value) -> Result<Self, ContractError> {
        let mut r = RecordReader::new("PaymentRequest", value)?;
        let payment_id = r.id("paymentId")?;
        let order_id = r.id("orderId")?;
        let user_id = r.id("userId")?;
        let symbol = r.symbol("kind")?;
        let kind = PaymentKind::from_symbol(&symbol)
            .ok_or_else(|| r.invalid("kind", format!("unknown symbol {symbol}")))?;
        let amount = r.money("amount")?;
        if amount.0 <= 0 {
            return Err(r.invalid("amount", format!("{amount} is not positive")));
        }
        let currency = r.id("currency")?;
        let requested_at = r.timestamp("requestedAt")?;
        let refund_of = r.opt_string("refundOf")?;
        match (kind, &refund_of) {
            (PaymentKind::Refund, None) => {
                return Err(r.invalid("refundOf", "a REFUND names the charge it gives back"))
            }
            (PaymentKind::Charge, Some(_)) => {
                return Err(r.invalid("refundOf", "a CHARGE refunds nothing"))
            }
            _ => {}
        }
        Ok(Self {
            payment_id,
            order_id,
            user_id,
            kind,
            amount,
            currency,
            requested_at,
            refund_of,
        })
    }
}

crate::avro::avro_enum! {
    /// The states of an order (Avro enum `OrderState`).
    pub enum OrderState {
        Created = "CREATED",
        PaymentPending = "PAYMENT_PENDING",
        Paid = "PAID",
        Rejected = "REJECTED",
        PaymentFailed = "PAYMENT_FAILED",
        Cancelled = "CANCELLED",
    }
}

impl OrderState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Paid | Self::Rejected | Self::PaymentFailed | Self::Cancelled
        )
    }
}

crate::avro::avro_enum! {
    /// What an order-status record is (Avro enum `OrderEvent`).
    pub enum OrderEvent {
        /// The order entered `state`; `version` is one higher than the last.
        Transition = "TRANSITION",
        /// A cancel request that could not apply; state and version repeat the
        /// order's current ones (REJECTED and 0 for an unknown order).
        CancelRefused = "CANCEL_REFUSED",
        /// A charge that succeeded after the order was cancelled was refunded;
        /// state and version repeat the order's current ones.
        LateChargeRefunded = "LATE_CHARGE_REFUNDED",
    }
}

/// One transition of an order, or the answer to a cancel that could not
/// apply (order-status, key `order_id`).
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
    pub event: OrderEvent,
    /// The order-cancel request this record answers, if any.
    pub cancel_request_id: Option<String>,
    /// The approved refund of the order's charge, if any.
    pub refund_id: Option<String>,
    /// The order's lines, on its first transition only.
    pub lines: Option<Vec<OrderItem>>,
}

impl Contract for OrderStatus {
    const TOPIC: &'static str = "order-status";
    const SCHEMA_JSON: &'static str = include_str!("../order-status.avsc");
    contract_schema!();

    fn key(&self) -> &str {
        &self.order_id
    }

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
            (
                "event".into(),
                avro::enum_value(&OrderEvent::SYMBOLS, self.event.symbol()),
            ),
            (
                "cancelRequestId".into(),
                avro::opt_string(&self.cancel_request_id),
            ),
            ("refundId".into(), avro::opt_string(&self.refund_id)),
            (
                "lines".into(),
                match &self.lines {
                    None => Value::Union(0, Box::new(Value::Null)),
                    Some(lines) => Value::Union(
                        1,
                        Box::new(Value::Array(lines.iter().map(OrderItem::to_avro).collect())),
                    ),
                },
            ),
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
            // An event this reader does not know is a transition (the
            // field's Avro default) rather than a record lost.
            event: OrderEvent::from_symbol(&r.symbol("event")?).unwrap_or(OrderEvent::Transition),
            cancel_request_id: r.opt_string("cancelRequestId")?,
            refund_id: r.opt_string("refundId")?,
            lines: match r.opt_array("lines")? {
                None => None,
                Some(lines) => Some(
                    lines
                        .into_iter()
                        .map(|l| OrderItem::from_avro("OrderLine", l))
                        .collect::<Result<_, _>>()?,
                ),
            },
        })
    }
}

crate::avro::avro_enum! {
    /// What the inventory pipeline answered (Avro enum `StockOutcome`).
    pub enum StockOutcome {
        /// The units are held for the order.
        Reserved = "RESERVED",
        /// Not enough available; nothing held.
        InsufficientStock = "INSUFFICIENT_STOCK",
        /// No such product; nothing held.
        UnknownProduct = "UNKNOWN_PRODUCT",
        /// The units held are available again.
        Released = "RELEASED",
        /// The units held are sold.
        Committed = "COMMITTED",
        /// A release or commit for an order holding no reservation of the product.
        NotReserved = "NOT_RESERVED",
    }
}

crate::avro::avro_enum! {
    /// What the coupon pipeline answered (Avro enum `CouponReplyOutcome`).
    pub enum CouponReplyOutcome {
        /// The buyer's unit is used by the order (see the reply's discount).
        Redeemed = "REDEEMED",
        /// It cannot be (see reason).
        RedeemRejected = "REDEEM_REJECTED",
        /// The unit used by the order is usable again.
        Released = "RELEASED",
        /// A release for an order that uses no unit of the coupon; nothing changed.
        NotRedeemed = "NOT_REDEEMED",
    }
}

/// The inventory pipeline's answer for one product of the order (Avro `StockReply`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockReply {
    pub product_id: String,
    pub outcome: StockOutcome,
    /// Units of the answered command.
    pub quantity: i32,
    /// The product's available units after the decision.
    pub available: i64,
}

/// The coupon pipeline's answer for the order's coupon (Avro `CouponReply`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponReply {
    pub coupon_id: String,
    pub outcome: CouponReplyOutcome,
    pub reason: Option<String>,
    /// For REDEEMED: what the coupon takes off the order.
    pub discount: Option<Discount>,
}

crate::avro::avro_enum! {
    /// What the payment provider decided (Avro enum `PaymentOutcome`).
    pub enum PaymentOutcome {
        /// The money moved.
        Approved = "APPROVED",
        /// Refused; nothing moved.
        Declined = "DECLINED",
    }
}

/// The payment pipeline's definite answer to a payment-request (Avro `PaymentReply`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentReply {
    pub payment_id: String,
    pub kind: PaymentKind,
    pub outcome: PaymentOutcome,
    /// DECLINED: the provider's code.
    pub code: Option<String>,
    /// The provider's id of the charge or refund.
    pub provider_ref: Option<String>,
    pub amount: Money,
    pub currency: String,
}

/// Who answers and what (the Avro union `reply`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Stock(StockReply),
    Coupon(CouponReply),
    Payment(PaymentReply),
}

/// A reply to the order saga (order-replies, key `order_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderReply {
    pub order_id: String,
    pub reply: Reply,
    pub replied_at: DateTime<Utc>,
}

impl Contract for OrderReply {
    const TOPIC: &'static str = "order-replies";
    const SCHEMA_JSON: &'static str = include_str!("../order-replies.avsc");
    contract_schema!();

    fn key(&self) -> &str {
        &self.order_id
    }

    fn to_avro(&self) -> Value {
        let reply = match &self.reply {
            Reply::Stock(r) => Value::Union(
                0,
                Box::new(Value::Record(vec![
                    ("productId".into(), Value::String(r.product_id.clone())),
                    (
                        "outcome".into(),
                        avro::enum_value(&StockOutcome::SYMBOLS, r.outcome.symbol()),
                    ),
                    ("quantity".into(), Value::Int(r.quantity)),
                    ("available".into(), Value::Long(r.available)),
                ])),
            ),
            Reply::Coupon(r) => Value::Union(
                1,
                Box::new(Value::Record(vec![
                    ("couponId".into(), Value::String(r.coupon_id.clone())),
                    (
                        "outcome".into(),
                        avro::enum_value(&CouponReplyOutcome::SYMBOLS, r.outcome.symbol()),
                    ),
                    ("reason".into(), avro::opt_string(&r.reason)),
                    ("discount".into(), Discount::opt_to_avro(r.discount)),
                ])),
            ),
            Reply::Payment(r) => Value::Union(
                2,
                Box::new(Value::Record(vec![
                    ("paymentId".into(), Value::String(r.payment_id.clone())),
                    (
                        "kind".into(),
                        avro::enum_value(&PaymentKind::SYMBOLS, r.kind.symbol()),
                    ),
                    (
                        "outcome".into(),
                        avro::enum_value(&PaymentOutcome::SYMBOLS, r.outcome.symbol()),
                    ),
                    ("code".into(), avro::opt_string(&r.code)),
                    ("providerRef".into(), avro::opt_string(&r.provider_ref)),
                    ("amount".into(), r.amount.to_avro()),
                    ("currency".into(), Value::String(r.currency.clone())),
                ])),
            ),
        };
        Value::Record(vec![
            ("orderId".into(), Value::String(self.order_id.clone())),
            ("reply".into(), reply),
            ("repliedAt".into(), avro::timestamp(self.replied_at)),
        ])
    }

    fn from_avro(value: Value) -> Result<Self, ContractError> {
        let mut r = RecordReader::new("OrderReply", value)?;
        let order_id = r.id("orderId")?;
        let (branch, inner) = r.union("reply")?;
        let reply = match branch {
            0 => {
                let mut s = RecordReader::new("StockReply", inner)?;
                let product_id = s.id("productId")?;
                let symbol = s.symbol("outcome")?;
                let outcome = StockOutcome::from_symbol(&symbol)
                    .ok_or_else(|| s.invalid("outcome", format!("unknown symbol {symbol}")))?;
                Reply::Stock(StockReply {
                    product_id,
                    outcome,
                    quantity: s.int("quantity")?,
                    available: s.long("available")?,
                })
            }
            1 => {
                let mut c = RecordReader::new("CouponReply", inner)?;
                let coupon_id = c.id("couponId")?;
                let symbol = c.symbol("outcome")?;
                let outcome = CouponReplyOutcome::from_symbol(&symbol)
                    .ok_or_else(|| c.invalid("outcome", format!("unknown symbol {symbol}")))?;
                Reply::Coupon(CouponReply {
                    coupon_id,
                    outcome,
                    reason: c.opt_string("reason")?,
                    discount: Discount::read_opt(&mut c, "discount")?,
                })
            }
            2 => {
                let mut p = RecordReader::new("PaymentReply", inner)?;
                let payment_id = p.id("paymentId")?;
                let symbol = p.symbol("kind")?;
                let kind = PaymentKind::from_symbol(&symbol)
                    .ok_or_else(|| p.invalid("kind", format!("unknown symbol {symbol}")))?;
                let symbol = p.symbol("outcome")?;
                let outcome = PaymentOutcome::from_symbol(&symbol)
                    .ok_or_else(|| p.invalid("outcome", format!("unknown symbol {symbol}")))?;
                Reply::Payment(PaymentReply {
                    payment_id,
                    kind,
                    outcome,
                    code: p.opt_string("code")?,
                    provider_ref: p.opt_string("providerRef")?,
                    amount: p.money("amount")?,
                    currency: p.id("currency")?,
                })
            }
            other => return Err(r.invalid("reply", format!("unknown union branch {other}"))),
        };
        Ok(Self {
            order_id,
            reply,
            replied_at: r.timestamp("repliedAt")?,
        })
    }
}
