//! The Rust types and the .avsc files cannot drift apart: every message
//! round-trips through Avro binary with its schema, every schema file in
//! schemas/ is a registered contract, and every field is documented.

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use chrono::{DateTime, Utc};
use surge_schemas::coupon::{CouponAction, CouponCommand, CouponDecision, Outcome};
use surge_schemas::order::{
    OrderCancel, OrderCreate, OrderItem, OrderState, OrderStatus, PaymentKind, PaymentRequest,
};
use surge_schemas::{Contract, Money, PUBLIC_CONTRACTS};

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

fn round_trip<T: Contract + PartialEq + std::fmt::Debug>(msg: &T) {
    let value = msg.to_avro();
    assert!(
        value.validate(T::schema()),
        "{} value does not validate against {}.avsc: {value:?}",
        T::TOPIC,
        T::TOPIC
    );
    let bytes = GenericDatumWriter::builder(T::schema())
        .build()
        .unwrap()
        .write_value_to_vec(value)
        .unwrap();
    let decoded = GenericDatumReader::builder(T::schema())
        .build()
        .unwrap()
        .read_value(&mut bytes.as_slice())
        .unwrap();
    let back = T::from_avro(decoded).unwrap();
    assert_eq!(&back, msg, "{} did not survive the round trip", T::TOPIC);
}

#[test]
fn coupon_commands_round_trip() {
    let base = |command| CouponCommand {
        request_id: "r-1".into(),
        coupon_id: "c-1".into(),
        requested_at: at(1_700_000_000_123),
        command,
    };
    round_trip(&base(CouponAction::Issue {
        user_id: "u-1".into(),
    }));
    round_trip(&base(CouponAction::Create {
        stock: 100,
        active_from: None,
        active_until: None,
    }));
    round_trip(&base(CouponAction::Create {
        stock: 0,
        active_from: Some(at(1)),
        active_until: Some(at(2)),
    }));
    round_trip(&base(CouponAction::AdjustStock {
        delta: -5,
        reason: Some("damaged".into()),
    }));
    round_trip(&base(CouponAction::AdjustStock {
        delta: 7,
        reason: None,
    }));
}

#[test]
fn every_coupon_outcome_round_trips() {
    for outcome in Outcome::ALL {
        round_trip(&CouponDecision {
            request_id: "r".into(),
            coupon_id: "c".into(),
            user_id: (outcome != Outcome::Created).then(|| "u".into()),
            outcome,
            sequence: (outcome == Outcome::Issued).then_some(3),
            stock: 10,
            issued: 3,
            remaining: 7,
            reason: (outcome == Outcome::Invalid).then(|| "why".into()),
            source_partition: 2,
            source_offset: 99,
            requested_at: at(5),
            decided_at: at(6),
        });
    }
}

#[test]
fn order_messages_round_trip() {
    round_trip(&OrderCreate {
        order_id: "o-1".into(),
        user_id: "u-1".into(),
        items: vec![
            OrderItem {
                product_id: "p-1".into(),
                quantity: 2,
                unit_price: Money(1999),
            },
            OrderItem {
                product_id: "p-2".into(),
                quantity: 1,
                unit_price: Money(100_000_000),
            },
        ],
        currency: "EUR".into(),
        coupon_id: Some("c-1".into()),
        requested_at: at(10),
    });
    round_trip(&OrderCancel {
        request_id: "x".into(),
        order_id: "o-1".into(),
        user_id: "u-1".into(),
        reason: None,
        requested_at: at(11),
    });
    for kind in [PaymentKind::Charge, PaymentKind::Refund] {
        round_trip(&PaymentRequest {
            payment_id: "pay-1".into(),
            order_id: "o-1".into(),
            user_id: "u-1".into(),
            kind,
            amount: Money(3998),
            currency: "EUR".into(),
            requested_at: at(12),
        });
    }
    for state in [
        OrderState::Created,
        OrderState::PaymentPending,
        OrderState::Paid,
        OrderState::Rejected,
        OrderState::PaymentFailed,
        OrderState::Cancelled,
    ] {
        round_trip(&OrderStatus {
            order_id: "o-1".into(),
            user_id: "u-1".into(),
            state,
            reason: state.is_terminal().then(|| "because".into()),
            total: Money(3998),
            currency: "EUR".into(),
            coupon_id: None,
            payment_id: Some("pay-1".into()),
            version: 2,
            occurred_at: at(13),
        });
    }
}

#[test]
fn contract_rules_are_enforced_on_decode() {
    let mut cmd = CouponCommand {
        request_id: "r".into(),
        coupon_id: "c".into(),
        requested_at: at(1),
        command: CouponAction::Issue {
            user_id: "  ".into(),
        },
    }
    .to_avro();
    let err = CouponCommand::from_avro(cmd.clone()).unwrap_err();
    assert_eq!(err.to_string(), "IssueRequest.userId: must not be empty");
    if let apache_avro::types::Value::Record(fields) = &mut cmd {
        fields.retain(|(n, _)| n != "couponId");
    }
    assert_eq!(
        CouponCommand::from_avro(cmd).unwrap_err().to_string(),
        "CouponCommand.couponId: missing"
    );

    let empty_order = OrderCreate {
        order_id: "o".into(),
        user_id: "u".into(),
        items: vec![],
        currency: "EUR".into(),
        coupon_id: None,
        requested_at: at(1),
    };
    assert!(OrderCreate::from_avro(empty_order.to_avro())
        .unwrap_err()
        .to_string()
        .contains("at least one line"));
}

#[test]
fn every_schema_file_is_a_public_contract_and_fully_documented() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".avsc"))
        .collect();
    files.sort();
    let mut declared: Vec<String> = PUBLIC_CONTRACTS
        .iter()
        .map(|c| format!("{}.avsc", c.topic))
        .collect();
    declared.sort();
    assert_eq!(
        files, declared,
        "schemas/*.avsc and PUBLIC_CONTRACTS must list the same topics"
    );

    for c in PUBLIC_CONTRACTS {
        let text = std::fs::read_to_string(dir.join(format!("{}.avsc", c.topic))).unwrap();
        assert_eq!(
            text, c.schema_json,
            "{}: the embedded schema is the file",
            c.topic
        );
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut undocumented = Vec::new();
        collect_undocumented(&json, c.topic, &mut undocumented);
        assert!(
            undocumented.is_empty(),
            "fields without a doc: {undocumented:?}"
        );
    }
}

fn collect_undocumented(schema: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    match schema {
        serde_json::Value::Object(o)
            if o.get("type").and_then(|t| t.as_str()) == Some("record") =>
        {
            for f in o["fields"].as_array().unwrap() {
                let name = format!("{path}.{}", f["name"].as_str().unwrap());
                if f.get("doc")
                    .and_then(|d| d.as_str())
                    .is_none_or(|d| d.trim().is_empty())
                {
                    out.push(name.clone());
                }
                collect_undocumented(&f["type"], &name, out);
            }
        }
        serde_json::Value::Object(o) => {
            if let Some(items) = o.get("items") {
                collect_undocumented(items, path, out);
            }
        }
        serde_json::Value::Array(branches) => branches
            .iter()
            .for_each(|b| collect_undocumented(b, path, out)),
        _ => {}
    }
}
