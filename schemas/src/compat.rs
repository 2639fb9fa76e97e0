//! Explains, field by field, why a new schema cannot read data written with
//! an older one (BACKWARD compatibility: the new schema is the reader).
//!
//! The registry is the authority on *whether* a change is compatible; its
//! Confluent API only answers yes or no. This module says *which field* breaks
//! it, so `surge schemas check` can tell a developer what to fix.

use apache_avro::schema::{RecordSchema, Schema, UnionSchema};
use apache_avro::schema_compatibility::SchemaCompatibility;

/// One reason the new schema cannot read old data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breakage {
    /// Dotted path of the field, e.g. `CouponDecision.sequence`.
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for Breakage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.reason)
    }
}

/// Why `new` cannot read data written with `old`; empty when it can.
pub fn backward_breakages(old: &Schema, new: &Schema) -> Vec<Breakage> {
    if SchemaCompatibility::can_read(old, new).is_ok() {
        return Vec::new();
    }
    let mut out = Vec::new();
    walk(old, new, &root_name(new), &mut out);
    if out.is_empty() {
        let reason = match SchemaCompatibility::can_read(old, new) {
            Err(e) => e.to_string(),
            Ok(_) => "incompatible".into(),
        };
        out.push(Breakage {
            field: root_name(new),
            reason,
        });
    }
    out
}

fn root_name(s: &Schema) -> String {
    match s {
        Schema::Record(r) => r.name.name().to_string(),
        other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)),
    }
}

fn walk(old: &Schema, new: &Schema, path: &str, out: &mut Vec<Breakage>) {
    match (old, new) {
        (Schema::Record(o), Schema::Record(n)) => walk_record(o, n, path, out),
        (Schema::Union(o), Schema::Union(n)) => walk_union(o, n, path, out),
        _ => {
            if let Err(e) = SchemaCompatibility::can_read(old, new) {
                out.push(Breakage {
                    field: path.to_string(),
                    reason: format!("type changed incompatibly ({e})"),
                });
            }
        }
    }
}

fn walk_record(old: &RecordSchema, new: &RecordSchema, path: &str, out: &mut Vec<Breakage>) {
    for field in &new.fields {
        let field_path = format!("{path}.{}", field.name);
        let aliases = field.aliases.clone();
        let previous = old
            .fields
            .iter()
            .find(|f| f.name == field.name || aliases.contains(&f.name));
        match previous {
            None if field.default.is_none() => out.push(Breakage {
                field: field_path,
                reason:
                    "added without a default, so records written before it have no value for it"
                        .into(),
            }),
            None => {}
            Some(prev) => walk(&prev.schema, &field.schema, &field_path, out),
        }
    }
}

fn walk_union(old: &UnionSchema, new: &UnionSchema, path: &str, out: &mut Vec<Breakage>) {
    for (i, variant) in old.variants().iter().enumerate() {
        let readable = new
            .variants()
            .iter()
            .any(|n| SchemaCompatibility::can_read(variant, n).is_ok());
        if !readable {
            // Same-named record in the new union: explain inside it.
            let same = new.variants().iter().find(|n| match (variant, n) {
                (Schema::Record(a), Schema::Record(b)) => a.name == b.name,
                _ => false,
            });
            match same {
                Some(n) => walk(variant, n, &format!("{path}[{}]", root_name(variant)), out),
                None => out.push(Breakage {
                    field: path.to_string(),
                    reason: format!("union branch {i} ({}) was removed", root_name(variant)),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Schema {
        Schema::parse_str(s).unwrap()
    }

    const V1: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"n","type":"int"}]}"#;

    #[test]
    fn compatible_changes_have_no_breakage() {
        let added_with_default = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"n","type":"long"},{"name":"b","type":["null","string"],"default":null}]}"#;
        assert!(backward_breakages(&parse(V1), &parse(added_with_default)).is_empty());
        let removed = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}"#;
        assert!(backward_breakages(&parse(V1), &parse(removed)).is_empty());
    }

    #[test]
    fn names_the_field_added_without_default() {
        let v2 = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"n","type":"int"},{"name":"b","type":"string"}]}"#;
        let b = backward_breakages(&parse(V1), &parse(v2));
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].field, "R.b");
        assert!(b[0].reason.contains("without a default"));
    }

    #[test]
    fn names_the_field_whose_type_narrowed() {
        let v2 = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"n","type":"int"}]}"#;
        let b = backward_breakages(&parse(V1), &parse(v2));
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(b[0].field, "R.a");
    }
}
