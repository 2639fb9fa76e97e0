//! coupon-issue and coupon-result: the first-come-first-served coupon contract.

use apache_avro::types::Value;
use chrono::{DateTime, Utc};

use crate::avro::{self, ContractError, RecordReader};
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
    },
    /// Admin: change total stock by `delta`.
    AdjustStock { delta: i64, reason: Option<String> },
}

impl Contract for CouponCommand {
    const TOPIC: &'static str = "coupon-issue";
    const SCHEMA_JSON: &'static str = include_str!("../coupon-issue.avsc");
    contract_schema!();

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
            } => Value::Union(
                1,
                Box::new(Value::Record(vec![
                    ("stock".into(), Value::Long(*stock)),
                    ("activeFrom".into(), avro::opt_timestamp(*active_from)),
                    ("activeUntil".into(), avro::opt_timestamp(*active_until)),
                ])),
            ),
            CouponAction::AdjustStock { delta, reason } => Value::Union(
                2,
                Box::new(Value::Record(vec![
                    ("delta".into(), Value::Long(*delta)),
                    ("reason".into(), avro::opt_string(reason)),
                ])),
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
                }
            }
            2 => {
                let mut c = RecordReader::new("AdjustStock", inner)?;
                CouponAction::AdjustStock {
                    delta: c.long("delta")?,
                    reason: c.opt_string("reason")?,
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

/// The outcome of one coupon command (Avro enum `Outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Issued,
    Duplicate,
    SoldOut,
    UnknownCoupon,
    NotActive,
    Invalid,
    Created,
    Adjusted,
}

impl Outcome {
    pub const SYMBOLS: [&'static str; 8] = [
        "ISSUED",
        "DUPLICATE",
        "SOLD_OUT",
        "UNKNOWN_COUPON",
        "NOT_ACTIVE",
        "INVALID",
        "CREATED",
        "ADJUSTED",
    ];
    pub const ALL: [Outcome; 8] = [
        Outcome::Issued,
        Outcome::Duplicate,
        Outcome::SoldOut,
        Outcome::UnknownCoupon,
        Outcome::NotActive,
        Outcome::Invalid,
        Outcome::Created,
        Outcome::Adjusted,
    ];

    /// The Avro symbol, also used as a metric label and in the stores.
    pub fn symbol(self) -> &'static str {
        Self::SYMBOLS[self as usize]
    }

    pub fn from_symbol(s: &str) -> Option<Self> {
        Self::SYMBOLS
            .iter()
            .position(|x| *x == s)
            .map(|i| Self::ALL[i])
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
}

impl Contract for CouponDecision {
    const TOPIC: &'static str = "coupon-result";
    const SCHEMA_JSON: &'static str = include_str!("../coupon-result.avsc");
    contract_schema!();

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
        ])
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
        })
    }
}
