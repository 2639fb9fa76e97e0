//! Avro binary encoding of the values our contracts build, on the hot path.
//!
//! apache-avro's writer builds a name → field hash map for every record it
//! encodes (fields may come in any order in a `Value::Record`), and its
//! validation walks the value once more: together more than a third of the
//! coupon pipeline's CPU in a profile (docs/bench/flamegraph-hot.svg). Our
//! `to_avro` builds records with their fields in schema order, so this
//! encoder walks schema and value side by side instead, checking each node
//! as it goes — a field name, a union branch, an enum symbol, a value kind
//! that does not match gives `None`, and the caller then encodes with
//! apache-avro's validating writer, which reports the error (or encodes a
//! value this walk does not know). The bytes are the same as apache-avro's
//! (tested in `codec.rs` for every contract).

use apache_avro::schema::{InnerDecimalSchema, NamesRef, Schema};
use apache_avro::types::Value;

/// Appends the encoding of `value` as `schema` to `out`; `None` (with `out`
/// possibly partly written) when the value is not one this walk encodes.
pub fn encode(
    value: &Value,
    schema: &Schema,
    names: &NamesRef<'_>,
    out: &mut Vec<u8>,
) -> Option<()> {
    encode_in(value, schema, names, None, out)
}

fn encode_in(
    value: &Value,
    schema: &Schema,
    names: &NamesRef<'_>,
    namespace: Option<&str>,
    out: &mut Vec<u8>,
) -> Option<()> {
    match (schema, value) {
        (Schema::Ref { name }, _) => {
            let named = names.get(&name.fully_qualified_name(namespace))?;
            encode_in(value, named, names, namespace, out)
        }
        (Schema::Null, Value::Null) => Some(()),
        (Schema::Boolean, Value::Boolean(b)) => {
            out.push(u8::from(*b));
            Some(())
        }
        (Schema::Int, Value::Int(i)) => {
            long(i64::from(*i), out);
            Some(())
        }
        (Schema::Long, Value::Long(i)) | (Schema::TimestampMillis, Value::TimestampMillis(i)) => {
            long(*i, out);
            Some(())
        }
        (Schema::String, Value::String(s)) => {
            bytes(s.as_bytes(), out);
            Some(())
        }
        (Schema::Bytes, Value::Bytes(b)) => {
            bytes(b, out);
            Some(())
        }
        (Schema::Decimal(d), Value::Decimal(v)) if matches!(d.inner, InnerDecimalSchema::Bytes) => {
            let raw: Vec<u8> = v.try_into().ok()?;
            bytes(&raw, out);
            Some(())
        }
        (Schema::Enum(e), Value::Enum(i, symbol)) => {
            (e.symbols.get(*i as usize)? == symbol).then_some(())?;
            long(i64::from(*i), out);
            Some(())
        }
        (Schema::Union(u), Value::Union(i, inner)) => {
            let branch = u.variants().get(*i as usize)?;
            long(i64::from(*i), out);
            encode_in(inner, branch, names, namespace, out)
        }
        (Schema::Array(a), Value::Array(items)) => {
            if !items.is_empty() {
                long(items.len() as i64, out);
                for item in items {
                    encode_in(item, &a.items, names, namespace, out)?;
                }
            }
            out.push(0);
            Some(())
        }
        (Schema::Record(r), Value::Record(fields)) => {
            if r.fields.len() != fields.len() {
                return None;
            }
            let namespace = r.name.namespace().or(namespace);
            for (field, (name, v)) in r.fields.iter().zip(fields) {
                if field.name != *name {
                    return None;
                }
                encode_in(v, &field.schema, names, namespace, out)?;
            }
            Some(())
        }
        _ => None,
    }
}

/// The unframed bytes of `msg` by this walk alone (no fallback): `None` if
/// the walk does not encode it. For tests, which check it is taken for every
/// contract and agrees with apache-avro.
pub fn contract_bytes<T: crate::Contract>(msg: &T) -> Option<Vec<u8>> {
    let mut direct = Vec::new();
    if msg.write_avro(&mut Out(&mut direct)) {
        return Some(direct);
    }
    let names = apache_avro::schema::ResolvedSchema::try_from(T::schema()).ok()?;
    let mut out = Vec::new();
    encode(&msg.to_avro(), T::schema(), names.get_names(), &mut out)?;
    Some(out)
}

/// Avro binary written field by field, for [`crate::Contract::write_avro`]:
/// each call writes one field of the schema, in the schema's order.
pub struct Out<'a>(pub(crate) &'a mut Vec<u8>);

impl Out<'_> {
    pub fn long(&mut self, n: i64) -> &mut Self {
        long(n, self.0);
        self
    }

    pub fn int(&mut self, n: i32) -> &mut Self {
        long(i64::from(n), self.0);
        self
    }

    pub fn string(&mut self, s: &str) -> &mut Self {
        bytes(s.as_bytes(), self.0);
        self
    }

    pub fn timestamp(&mut self, t: chrono::DateTime<chrono::Utc>) -> &mut Self {
        self.long(t.timestamp_millis())
    }

    /// An enum symbol by its index in the schema's symbols.
    pub fn symbol(&mut self, index: usize) -> &mut Self {
        self.long(index as i64)
    }

    /// The branch index of a union (written before the branch's value).
    pub fn branch(&mut self, index: usize) -> &mut Self {
        self.long(index as i64)
    }

    /// `["null", "string"]`.
    pub fn opt_string(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            None => self.branch(0),
            Some(s) => self.branch(1).string(s),
        }
    }

    /// `["null", "long"]`.
    pub fn opt_long(&mut self, n: Option<i64>) -> &mut Self {
        match n {
            None => self.branch(0),
            Some(n) => self.branch(1).long(n),
        }
    }

    /// `["null", decimal]`.
    pub fn opt_money(&mut self, m: Option<crate::Money>) -> &mut Self {
        match m {
            None => self.branch(0),
            Some(m) => self.branch(1).money(m),
        }
    }

    /// A bytes-backed decimal: its minimal two's complement, as apache-avro writes it.
    pub fn money(&mut self, m: crate::Money) -> &mut Self {
        bytes(&m.minimal_bytes(), self.0);
        self
    }
}

/// Zig-zag varint, as Avro writes both int and long.
fn long(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn bytes(b: &[u8], out: &mut Vec<u8>) {
    long(b.len() as i64, out);
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    #[test]
    fn zigzag_varints_match_the_spec() {
        // Avro spec, "Binary Encoding": 0→00, -1→01, 1→02, -2→03, 64→80 01.
        for (n, want) in [
            (0i64, vec![0x00u8]),
            (-1, vec![0x01]),
            (1, vec![0x02]),
            (-2, vec![0x03]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
            (
                i64::MAX,
                vec![0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut out = Vec::new();
            super::long(n, &mut out);
            assert_eq!(out, want, "{n}");
        }
    }
}
