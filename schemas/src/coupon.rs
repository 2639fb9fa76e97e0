//! coupon-issue and coupon-result: the first-come-first-served coupon contract.

use apache_avro::types::Value;
use chrono::{DateTime, Utc};

use crate::avro::{self, ContractError, Money, RecordReader};
use crate::{contract_schema, Contract};

/// One command on coupon-issue, keyed by `coupon_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponCommand {
    pub request_id: String,
    pub coupon_id: String,
    pub requested_at: DateTime<Utc>,
    pub command: CouponAction,
}

/// What a [`CouponCommand`] asks for (the Avro union `command`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CouponAction {
    /// A user asks for one unit.
    Issue { user_id: String },
    /// Admin: create the coupon.
    Create {
        stock: i64,
        active_from: Option<DateTime<Utc>>,
        active_until: Option<DateTime<Utc>>,
        /// What a unit takes off the order it is redeemed with; `None` for
        /// none (and for every coupon created before discounts existed).
        discount: Option<Discount>,
    },
    /// Admin: change total stock by `delta`.
    AdjustStock { delta: i64, reason: Option<String> },
    /// The order saga asks to use `user_id`'s ISSUED unit of this coupon for
    /// `order_id`. Idempotent per order id. (Avro `RedeemCoupon`; the user is
    /// the field `holderId` there, see the .avsc for why.)
    Redeem { order_id: String, user_id: String },
    /// The order saga gives the unit used by `order_id` back, usable again.
    /// Idempotent per order id. (Avro `ReleaseRedemption`.)
    Release { order_id: String },
}

impl CouponAction {
    /// The order a saga command is for; `None` for issue and admin commands.
    pub fn order_id(&self) -> Option<&str> {
        match self {
            Self::Redeem { order_id, .. } | Self::Release { order_id } => Some(order_id),
            _ => None,
        }
    }
}

crate::avro::avro_enum! {
    /// FIXED or PERCENT (Avro enum `DiscountKind`).
    pub enum DiscountKind {
        /// `value` is an amount off, in the order's currency.
        Fixed = "FIXED",
        /// `value` is a percentage of the order's total (e.g. `Money(1000)` is 10.00 %).
        Percent = "PERCENT",
    }
}

/// What a coupon takes off an order (Avro record `dev.surge.coupon.Discount`,
/// the same in coupon-issue, coupon-result and order-replies).
///
/// Every `Discount` decoded from Avro is valid: FIXED `value` > 0 with no
/// cap; PERCENT `value` in (0, 100.00]; `cap` > 0 when present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Discount {
    pub kind: DiscountKind,
    /// FIXED: the amount off. PERCENT: the percentage, two decimals
    /// (`Money(1250)` is 12.50 %).
    pub value: Money,
    /// PERCENT only: the most taken off.
    pub cap: Option<Money>,
}

impl Discount {
    /// `amount` off.
    pub fn fixed(amount: Money) -> Self {
        Self {
            kind: DiscountKind::Fixed,
            value: amount,
            cap: None,
        }
    }

    /// `percent` (two decimals: `Money(1000)` is 10.00 %) off, at most `cap`.
    pub fn percent(percent: Money, cap: Option<Money>) -> Self {
        Self {
            kind: DiscountKind::Percent,
            value: percent,
            cap,
        }
    }

    /// The amount this discount takes off an order of `total`: never more
    /// than the total (nothing off a total of zero or less). PERCENT rounds
    /// half up to the cent, then applies the cap.
    pub fn apply(&self, total: Money) -> Money {
        if total.0 <= 0 {
            return Money(0);
        }
        let off = match self.kind {
            DiscountKind::Fixed => self.value.0,
            DiscountKind::Percent => {
                // cents x hundredths of a percent = 1/10_000 of a cent.
                let raw = i128::from(total.0) * i128::from(self.value.0.max(0));
                let off = i64::try_from((raw + 5_000) / 10_000).unwrap_or(i64::MAX);
                self.cap.map_or(off, |cap| off.min(cap.0))
            }
        };
        Money(off.clamp(0, total.0))
    }

    /// The contract's rules (checked on every decode), for producers that
    /// want to refuse a bad discount before it is sent.
    pub fn validate(&self) -> Result<(), ContractError> {
        let invalid = |field, reason: String| ContractError::Invalid {
            record: "Discount",
            field,
            reason,
        };
        match self.kind {
            DiscountKind::Fixed => {
                if self.value.0 <= 0 {
                    return Err(invalid(
                        "value",
                        format!("a FIXED discount of {} is not positive", self.value),
                    ));
                }
                if let Some(cap) = self.cap {
                    return Err(invalid(
                        "cap",
                        format!("a FIXED discount has no cap, found {cap}"),
                    ));
                }
            }
            DiscountKind::Percent => {
                if self.value.0 <= 0 || self.value.0 > 100_00 {
                    return Err(invalid(
                        "value",
                        format!("a PERCENT discount of {} is not in (0, 100]", self.value),
                    ));
                }
                if let Some(cap) = self.cap.filter(|c| c.0 <= 0) {
                    return Err(invalid("cap", format!("cap {cap} is not positive")));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn to_avro(self) -> Value {
        Value::Record(vec![
            (
                "kind".into(),
                avro::enum_value(&DiscountKind::SYMBOLS, self.kind.symbol()),
            ),
            ("value".into(), self.value.to_avro()),
            ("cap".into(), avro::opt_money(self.cap)),
        ])
    }

    pub(crate) fn from_avro(value: Value) -> Result<Self, ContractError> {
        let mut r = RecordReader::new("Discount", value)?;
        let symbol = r.symbol("kind")?;
        let kind = DiscountKind::from_symbol(&symbol)
            .ok_or_else(|| r.invalid("kind", format!("unknown symbol {symbol}")))?;
        let discount = Self {
            kind,
            value: r.money("value")?,
            cap: r.opt_money("cap")?,
        };
        discount.validate()?;
        Ok(discount)
    }

    /// `["null", Discount]`.
    pub(crate) fn opt_to_avro(d: Option<Discount>) -> Value {
        avro::opt_record(d.map(Discount::to_avro))
    }

    /// Reads a `["null", Discount]` field.
    pub(crate) fn read_opt(
        r: &mut RecordReader,
        field: &'static str,
    ) -> Result<Option<Self>, ContractError> {
        r.opt_record(field)?.map(Self::from_avro).transpose()
    }
}

impl Contract for CouponCommand {
    const TOPIC: &'static str = "coupon-issue";
    const SCHEMA_JSON: &'static str = include_str!("../coupon-issue.avsc");
    contract_schema!();

    fn key(&self) -> &str {
        &self.coupon_id
    }

    fn to_avro(&self) -> Value {
        let command = match &self.command {
            CouponAction::Issue { user_id } => Value::Union(
                0,
                Box::new(Value::Record(vec![(
                    "userId".into(),
                    Value::String(user_id.clone()),
                )])),
            ),
            CouponAction::Create {
                stock,
                active_from,
                active_until,
                discount,
            } => Value::Union(
                1,
                Box::new(Value::Record(vec![
                    ("stock".into(), Value::Long(*stock)),
                    ("activeFrom".into(), avro::opt_timestamp(*active_from)),
                    ("activeUntil".into(), avro::opt_timestamp(*active_until)),
                    ("discount".into(), Discount::opt_to_avro(*discount)),
                ])),
            ),
            CouponAction::AdjustStock { delta, reason } => Value::Union(
                2,
                Box::new(Value::Record(vec![
                    ("delta".into(), Value::Long(*delta)),
                    ("reason".into(), avro::opt_string(reason)),
                ])),
            ),
            CouponAction::Redeem { order_id, user_id } => Value::Union(
                3,
                Box::new(Value::Record(vec![
                    ("orderId".into(), Value::String(order_id.clone())),
                    ("holderId".into(), Value::String(user_id.clone())),
                ])),
            ),
            CouponAction::Release { order_id } => Value::Union(
                4,
                Box::new(Value::Record(vec![(
                    "orderId".into(),
                    Value::String(order_id.clone()),
                )])),
            ),
        };
        Value::Record(vec![
            ("requestId".into(), Value::String(self.request_id.clone())),
            ("couponId".into(), Value::String(self.coupon_id.clone())),
            ("requestedAt".into(), avro::timestamp(self.requested_at)),
            ("command".into(), command),
        ])
    }

    fn from_avro(value: Value) -> Result<Self, ContractError> {
        let mut r = RecordReader::new("CouponCommand", value)?;
        let request_id = r.id("requestId")?;
        let coupon_id = r.id("couponId")?;
        let requested_at = r.timestamp("requestedAt")?;
        let (branch, inner) = r.union("command")?;
        let command = match branch {
            0 => {
                let mut c = RecordReader::new("IssueRequest", inner)?;
                CouponAction::Issue {
                    user_id: c.id("userId")?,
                }
            }
            1 => {
                let mut c = RecordReader::new("CreateCoupon", inner)?;
                CouponAction::Create {
                    stock: c.long("stock")?,
                    active_from: c.opt_timestamp("activeFrom")?,
                    active_until: c.opt_timestamp("activeUntil")?,
                    discount: Discount::read_opt(&mut c, "discount")?,
                }
            }
            2 => {
                let mut c = RecordReader::new("AdjustStock", inner)?;
                CouponAction::AdjustStock {
                    delta: c.long("delta")?,
                    reason: c.opt_string("reason")?,
                }
            }
            3 => {
                let mut c = RecordReader::new("RedeemCoupon", inner)?;
                CouponAction::Redeem {
                    order_id: c.id("orderId")?,
                    user_id: c.id("holderId")?,
                }
            }
            4 => {
                let mut c = RecordReader::new("ReleaseRedemption", inner)?;
                CouponAction::Release {
                    order_id: c.id("orderId")?,
                }
            }
            other => return Err(r.invalid("command", format!("unknown union branch {other}"))),
        };
        Ok(Self {
            request_id,
            coupon_id,
            requested_at,
            command,
        })
    }
}

crate::avro::avro_enum! {
    /// The outcome of one coupon command (Avro enum `Outcome`).
    #[derive(PartialOrd, Ord)]
    pub enum Outcome {
        Issued = "ISSUED",
        Duplicate = "DUPLICATE",
        SoldOut = "SOLD_OUT",
        UnknownCoupon = "UNKNOWN_COUPON",
        NotActive = "NOT_ACTIVE",
        Invalid = "INVALID",
        Created = "CREATED",
        Adjusted = "ADJUSTED",
        /// The holder's ISSUED unit is now used by the decision's order.
        Redeemed = "REDEEMED",
        /// No unit can be used for the decision's order (see reason).
        RedeemRejected = "REDEEM_REJECTED",
        /// The unit used by the decision's order is usable again.
        Released = "RELEASED",
    }
}

impl Outcome {
    /// Whether a decision with this outcome shows that its coupon exists.
    /// UNKNOWN_COUPON says it does not; INVALID (a refused create) and
    /// REDEEM_REJECTED can be decisions of a coupon id nobody created, and
    /// then carry stock, issued and remaining 0. A store keeps a coupon once
    /// a decision proves it, and lets the others only update it: otherwise
    /// any caller could make a coupon appear by asking for an id that does
    /// not exist.
    pub fn proves_coupon(self) -> bool {
        !matches!(
            self,
            Outcome::UnknownCoupon | Outcome::Invalid | Outcome::RedeemRejected
        )
    }
}

/// The decision for one command, on coupon-result (key `coupon_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponDecision {
    pub request_id: String,
    pub coupon_id: String,
    pub user_id: Option<String>,
    pub outcome: Outcome,
    /// 1..=stock for ISSUED.
    pub sequence: Option<i64>,
    pub stock: i64,
    pub issued: i64,
    pub remaining: i64,
    pub reason: Option<String>,
    pub source_partition: i32,
    pub source_offset: i64,
    pub requested_at: DateTime<Utc>,
    pub decided_at: DateTime<Utc>,
    /// The order of a redeem or release; `None` otherwise.
    pub order_id: Option<String>,
    /// The coupon's discount, on CREATED and REDEEMED; `None` otherwise.
    pub discount: Option<Discount>,
}

impl Contract for CouponDecision {
    const TOPIC: &'static str = "coupon-result";
    const SCHEMA_JSON: &'static str = include_str!("../coupon-result.avsc");
    contract_schema!();

    fn key(&self) -> &str {
        &self.coupon_id
    }

    fn to_avro(&self) -> Value {
        Value::Record(vec![
            ("requestId".into(), Value::String(self.request_id.clone())),
            ("couponId".into(), Value::String(self.coupon_id.clone())),
            ("userId".into(), avro::opt_string(&self.user_id)),
            (
                "outcome".into(),
                avro::enum_value(&Outcome::SYMBOLS, self.outcome.symbol()),
            ),
            ("sequence".into(), avro::opt_long(self.sequence)),
            ("stock".into(), Value::Long(self.stock)),
            ("issued".into(), Value::Long(self.issued)),
            ("remaining".into(), Value::Long(self.remaining)),
            ("reason".into(), avro::opt_string(&self.reason)),
            ("sourcePartition".into(), Value::Int(self.source_partition)),
            ("sourceOffset".into(), Value::Long(self.source_offset)),
            ("requestedAt".into(), avro::timestamp(self.requested_at)),
            ("decidedAt".into(), avro::timestamp(self.decided_at)),
            ("orderId".into(), avro::opt_string(&self.order_id)),
            ("discount".into(), Discount::opt_to_avro(self.discount)),
        ])
    }

    fn write_avro(&self, out: &mut crate::binary::Out<'_>) -> bool {
        out.string(&self.request_id)
            .string(&self.coupon_id)
            .opt_string(self.user_id.as_deref())
            .symbol(symbol_index(&Outcome::SYMBOLS, self.outcome.symbol()))
            .opt_long(self.sequence)
            .long(self.stock)
            .long(self.issued)
            .long(self.remaining)
            .opt_string(self.reason.as_deref())
            .int(self.source_partition)
            .long(self.source_offset)
            .timestamp(self.requested_at)
            .timestamp(self.decided_at)
            .opt_string(self.order_id.as_deref());
        match self.discount {
            None => out.branch(0),
            Some(d) => out
                .branch(1)
                .symbol(symbol_index(&DiscountKind::SYMBOLS, d.kind.symbol()))
                .money(d.value)
                .opt_money(d.cap),
        };
        true
    }

    fn from_avro(value: Value) -> Result<Self, ContractError> {
        let mut r = RecordReader::new("CouponDecision", value)?;
        let request_id = r.id("requestId")?;
        let coupon_id = r.id("couponId")?;
        let user_id = r.opt_string("userId")?;
        let symbol = r.symbol("outcome")?;
        let outcome = Outcome::from_symbol(&symbol)
            .ok_or_else(|| r.invalid("outcome", format!("unknown symbol {symbol}")))?;
        Ok(Self {
            request_id,
            coupon_id,
            user_id,
            outcome,
            sequence: r.opt_long("sequence")?,
            stock: r.long("stock")?,
            issued: r.long("issued")?,
            remaining: r.long("remaining")?,
            reason: r.opt_string("reason")?,
            source_partition: r.int("sourcePartition")?,
            source_offset: r.long("sourceOffset")?,
            requested_at: r.timestamp("requestedAt")?,
            decided_at: r.timestamp("decidedAt")?,
            order_id: r.opt_string("orderId")?,
            discount: Discount::read_opt(&mut r, "discount")?,
        })
    }
}

fn symbol_index(symbols: &[&str], symbol: &str) -> usize {
    symbols
        .iter()
        .position(|s| *s == symbol)
        .expect("symbol is one of the schema's symbols")
}
