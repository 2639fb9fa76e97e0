//! Building and reading Avro values field by field, with errors that name the
//! record and field: these messages end up in dead-letter headers, so they
//! must tell an operator exactly what was wrong.

use apache_avro::{types::Value, Decimal};
use chrono::{DateTime, TimeZone, Utc};

/// A decoded record that does not satisfy its contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    #[error("{record}: expected a record, found {found}")]
    NotARecord { record: &'static str, found: String },
    #[error("{record}.{field}: missing")]
    MissingField {
        record: &'static str,
        field: &'static str,
    },
    #[error("{record}.{field}: expected {expected}, found {found}")]
    WrongType {
        record: &'static str,
        field: &'static str,
        expected: &'static str,
        found: String,
    },
    #[error("{record}.{field}: {reason}")]
    Invalid {
        record: &'static str,
        field: &'static str,
        reason: String,
    },
}

/// An amount of money with two decimal places, held as minor units (cents).
/// On the wire: Avro `bytes` with logicalType decimal(18, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(pub i64);

impl Money {
    pub fn minor_units(self) -> i64 {
        self.0
    }
    pub(crate) fn to_avro(self) -> Value {
        Value::Decimal(Decimal::from(minimal_twos_complement(self.0)))
    }

    /// The Avro bytes of this amount as a decimal: minimal two's complement.
    pub(crate) fn minimal_bytes(self) -> Vec<u8> {
        minimal_twos_complement(self.0)
    }
}

impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

/// Big-endian two's complement without redundant sign bytes (what Java's
/// BigInteger.toByteArray produces, so other clients see canonical bytes).
fn minimal_twos_complement(v: i64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        let redundant = (b == 0x00 && next & 0x80 == 0) || (b == 0xFF && next & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    bytes[start..].to_vec()
}

pub(crate) fn timestamp(t: DateTime<Utc>) -> Value {
    Value::TimestampMillis(t.timestamp_millis())
}

pub(crate) fn opt_timestamp(t: Option<DateTime<Utc>>) -> Value {
    match t {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(t) => Value::Union(1, Box::new(timestamp(t))),
    }
}

pub(crate) fn opt_string(s: &Option<String>) -> Value {
    match s {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(s) => Value::Union(1, Box::new(Value::String(s.clone()))),
    }
}

pub(crate) fn opt_long(v: Option<i64>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(Value::Long(v))),
    }
}

pub(crate) fn opt_money(m: Option<Money>) -> Value {
    match m {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(m) => Value::Union(1, Box::new(m.to_avro())),
    }
}

/// `["null", <record>]`: branch 0 for `None`, branch 1 with the record.
pub(crate) fn opt_record(record: Option<Value>) -> Value {
    match record {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(r) => Value::Union(1, Box::new(r)),
    }
}

pub(crate) fn enum_value(symbols: &[&str], symbol: &str) -> Value {
    let index = symbols
        .iter()
        .position(|s| *s == symbol)
        .expect("symbol is one of the schema's symbols");
    Value::Enum(index as u32, symbol.to_string())
}

fn kind(v: &Value) -> String {
    let s = format!("{v:?}");
    s.split(['(', ' ']).next().unwrap_or("value").to_string()
}

/// Reads the fields of one decoded record by name.
pub(crate) struct RecordReader {
    record: &'static str,
    fields: Vec<(String, Value)>,
}

impl RecordReader {
    pub fn new(record: &'static str, value: Value) -> Result<Self, ContractError> {
        match value {
            Value::Record(fields) => Ok(Self { record, fields }),
            other => Err(ContractError::NotARecord {
                record,
                found: kind(&other),
            }),
        }
    }

    fn take(&mut self, field: &'static str) -> Result<Value, ContractError> {
        let pos = self
            .fields
            .iter()
            .position(|(name, _)| name == field)
            .ok_or(ContractError::MissingField {
                record: self.record,
                field,
            })?;
        Ok(std::mem::replace(&mut self.fields[pos].1, Value::Null))
    }

    fn wrong(&self, field: &'static str, expected: &'static str, found: &Value) -> ContractError {
        ContractError::WrongType {
            record: self.record,
            field,
            expected,
            found: kind(found),
        }
    }

    pub fn invalid(&self, field: &'static str, reason: impl Into<String>) -> ContractError {
        ContractError::Invalid {
            record: self.record,
            field,
            reason: reason.into(),
        }
    }

    /// The value inside a union (or the value itself when not a union).
    fn take_unwrapped(&mut self, field: &'static str) -> Result<Value, ContractError> {
        Ok(match self.take(field)? {
            Value::Union(_, inner) => *inner,
            v => v,
        })
    }

    pub fn string(&mut self, field: &'static str) -> Result<String, ContractError> {
        match self.take_unwrapped(field)? {
            Value::String(s) => Ok(s),
            v => Err(self.wrong(field, "string", &v)),
        }
    }

    /// A string that must not be empty (ids).
    pub fn id(&mut self, field: &'static str) -> Result<String, ContractError> {
        let s = self.string(field)?;
        if s.trim().is_empty() {
            return Err(self.invalid(field, "must not be empty"));
        }
        Ok(s)
    }

    pub fn opt_string(&mut self, field: &'static str) -> Result<Option<String>, ContractError> {
        match self.take_unwrapped(field)? {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            v => Err(self.wrong(field, "null or string", &v)),
        }
    }

    pub fn long(&mut self, field: &'static str) -> Result<i64, ContractError> {
        match self.take_unwrapped(field)? {
            Value::Long(v) => Ok(v),
            Value::Int(v) => Ok(v.into()),
            v => Err(self.wrong(field, "long", &v)),
        }
    }

    pub fn opt_long(&mut self, field: &'static str) -> Result<Option<i64>, ContractError> {
        match self.take_unwrapped(field)? {
            Value::Null => Ok(None),
            Value::Long(v) => Ok(Some(v)),
            Value::Int(v) => Ok(Some(v.into())),
            v => Err(self.wrong(field, "null or long", &v)),
        }
    }

    pub fn int(&mut self, field: &'static str) -> Result<i32, ContractError> {
        match self.take_unwrapped(field)? {
            Value::Int(v) => Ok(v),
            v => Err(self.wrong(field, "int", &v)),
        }
    }

    pub fn boolean(&mut self, field: &'static str) -> Result<bool, ContractError> {
        match self.take_unwrapped(field)? {
            Value::Boolean(v) => Ok(v),
            v => Err(self.wrong(field, "boolean", &v)),
        }
    }

    pub fn timestamp(&mut self, field: &'static str) -> Result<DateTime<Utc>, ContractError> {
        match self.take_unwrapped(field)? {
            Value::TimestampMillis(ms) | Value::Long(ms) => self.millis(field, ms),
            v => Err(self.wrong(field, "timestamp-millis", &v)),
        }
    }

    pub fn opt_timestamp(
        &mut self,
        field: &'static str,
    ) -> Result<Option<DateTime<Utc>>, ContractError> {
        match self.take_unwrapped(field)? {
            Value::Null => Ok(None),
            Value::TimestampMillis(ms) | Value::Long(ms) => self.millis(field, ms).map(Some),
            v => Err(self.wrong(field, "null or timestamp-millis", &v)),
        }
    }

    fn millis(&self, field: &'static str, ms: i64) -> Result<DateTime<Utc>, ContractError> {
        Utc.timestamp_millis_opt(ms)
            .single()
            .ok_or_else(|| self.invalid(field, format!("{ms} ms is not a valid instant")))
    }

    pub fn money(&mut self, field: &'static str) -> Result<Money, ContractError> {
        let v = self.take_unwrapped(field)?;
        self.money_of(field, v)
    }

    fn money_of(&self, field: &'static str, v: Value) -> Result<Money, ContractError> {
        match v {
            Value::Decimal(d) => {
                let bytes: Vec<u8> =
                    Vec::try_from(d).map_err(|e| self.invalid(field, e.to_string()))?;
                if bytes.is_empty() || bytes.len() > 8 {
                    return Err(self.invalid(
                        field,
                        format!("decimal of {} bytes does not fit 18 digits", bytes.len()),
                    ));
                }
                let fill = if bytes[0] & 0x80 != 0 { 0xFF } else { 0x00 };
                let mut be = [fill; 8];
                be[8 - bytes.len()..].copy_from_slice(&bytes);
                Ok(Money(i64::from_be_bytes(be)))
            }
            v => Err(self.wrong(field, "decimal(18,2)", &v)),
        }
    }

    pub fn opt_money(&mut self, field: &'static str) -> Result<Option<Money>, ContractError> {
        match self.take_unwrapped(field)? {
            Value::Null => Ok(None),
            v => self.money_of(field, v).map(Some),
        }
    }

    /// A `["null", <record>]` field: `None`, or the record's value to read
    /// with a [`RecordReader`] of its own.
    pub fn opt_record(&mut self, field: &'static str) -> Result<Option<Value>, ContractError> {
        match self.take_unwrapped(field)? {
            Value::Null => Ok(None),
            v @ Value::Record(_) => Ok(Some(v)),
            v => Err(self.wrong(field, "null or record", &v)),
        }
    }

    pub fn symbol(&mut self, field: &'static str) -> Result<String, ContractError> {
        match self.take_unwrapped(field)? {
            Value::Enum(_, s) => Ok(s),
            v => Err(self.wrong(field, "enum", &v)),
        }
    }

    /// A union branch: (branch index, inner value).
    pub fn union(&mut self, field: &'static str) -> Result<(u32, Value), ContractError> {
        match self.take(field)? {
            Value::Union(i, inner) => Ok((i, *inner)),
            v => Err(self.wrong(field, "union", &v)),
        }
    }

    pub fn array(&mut self, field: &'static str) -> Result<Vec<Value>, ContractError> {
        match self.take_unwrapped(field)? {
            Value::Array(items) => Ok(items),
            v => Err(self.wrong(field, "array", &v)),
        }
    }

    /// `["null", array]`: `None` for null.
    pub fn opt_array(&mut self, field: &'static str) -> Result<Option<Vec<Value>>, ContractError> {
        match self.take_unwrapped(field)? {
            Value::Null => Ok(None),
            Value::Array(items) => Ok(Some(items)),
            v => Err(self.wrong(field, "null or array", &v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_bytes_are_minimal_and_round_trip() {
        for v in [
            0i64,
            1,
            -1,
            127,
            128,
            -128,
            -129,
            255,
            1999,
            -1999,
            i64::MAX,
            i64::MIN,
        ] {
            let bytes = minimal_twos_complement(v);
            assert!(!bytes.is_empty() && bytes.len() <= 8);
            let mut r =
                RecordReader::new("T", Value::Record(vec![("m".into(), Money(v).to_avro())]))
                    .unwrap();
            assert_eq!(r.money("m").unwrap(), Money(v), "value {v} bytes {bytes:?}");
        }
        assert_eq!(minimal_twos_complement(128), vec![0x00, 0x80]);
        assert_eq!(minimal_twos_complement(-128), vec![0x80]);
        assert_eq!(Money(-1205).to_string(), "-12.05");
    }

    #[test]
    fn errors_name_record_and_field() {
        let mut r = RecordReader::new(
            "CouponCommand",
            Value::Record(vec![("couponId".into(), Value::Long(3))]),
        )
        .unwrap();
        assert_eq!(
            r.string("couponId").unwrap_err().to_string(),
            "CouponCommand.couponId: expected string, found Long"
        );
        assert_eq!(
            r.string("userId").unwrap_err().to_string(),
            "CouponCommand.userId: missing"
        );
    }
}

/// An Avro enum as a Rust enum: each variant with its symbol, in the
/// `.avsc` order (the index is the Avro ordinal). Generates `SYMBOLS`,
/// `ALL`, `symbol()` and `from_symbol()`, so a contract's symbols are
/// written once.
macro_rules! avro_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $symbol:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// The Avro symbols, in the schema's order.
            pub const SYMBOLS: [&'static str; [$($symbol),+].len()] = [$($symbol),+];
            /// Every variant, in the schema's order.
            pub const ALL: [$name; [$($symbol),+].len()] = [$($name::$variant),+];

            /// The Avro symbol, also a metric label and a store value.
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
    };
}
pub(crate) use avro_enum;
