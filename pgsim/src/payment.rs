//! A payment as pg-sim records it — a charge or a refund, approved or
//! declined — and the JSON body it is answered with. The body is built once,
//! stored with the ledger row, and every later answer (replay, lookup) sends
//! the stored bytes.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use surge_payment_gateway::format_minor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Charge,
    Refund,
}

impl Kind {
    /// As stored in `payments.kind` and answered in `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Charge => "CHARGE",
            Kind::Refund => "REFUND",
        }
    }

    /// The endpoint a request of this kind is posted to (part of its hash).
    pub fn endpoint(self) -> &'static str {
        match self {
            Kind::Charge => "/v1/charges",
            Kind::Refund => "/v1/refunds",
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Charge => "charges",
            Kind::Refund => "refunds",
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            Kind::Charge => "ch_",
            Kind::Refund => "rf_",
        }
    }
}

/// What a charge or refund asks for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRequest {
    pub kind: Kind,
    pub order_id: String,
    /// Charges only.
    pub user_id: Option<String>,
    /// Refunds only: the key the charge was made with.
    pub charge_key: Option<String>,
    pub amount_minor: i64,
    pub currency: String,
}

impl PaymentRequest {
    /// The fields that make two requests under one key the same request.
    pub fn hash(&self) -> String {
        let amount = self.amount_minor.to_string();
        let mut fields = vec![("orderId", self.order_id.as_str())];
        if let Some(user) = &self.user_id {
            fields.push(("userId", user));
        }
        if let Some(charge_key) = &self.charge_key {
            fields.push(("chargeKey", charge_key));
        }
        fields.push(("amount", &amount));
        fields.push(("currency", &self.currency));
        crate::idempotency::request_hash(self.kind.endpoint(), &fields)
    }
}

/// The definite answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Decline { code: String, message: String },
}

/// One row of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: String,
    pub key: String,
    pub request: PaymentRequest,
    pub decision: Decision,
    pub created_at: DateTime<Utc>,
}

impl Payment {
    /// A new payment id (`ch_<uuid>` / `rf_<uuid>`), stamped now. PostgreSQL
    /// keeps microseconds, so the stamp is cut to them: the body and the
    /// `created_at` column then agree exactly.
    pub fn new(key: &str, request: PaymentRequest, decision: Decision) -> Payment {
        let now = Utc::now();
        let created_at = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
        Payment {
            id: format!("{}{}", request.kind.id_prefix(), uuid::Uuid::new_v4()),
            key: key.to_string(),
            request,
            decision,
            created_at,
        }
    }

    pub fn status(&self) -> &'static str {
        match self.decision {
            Decision::Approve => "APPROVED",
            Decision::Decline { .. } => "DECLINED",
        }
    }

    pub fn http_status(&self) -> u16 {
        match self.decision {
            Decision::Approve => 200,
            Decision::Decline { .. } => 402,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match &self.decision {
            Decision::Approve => None,
            Decision::Decline { code, .. } => Some(code),
        }
    }

    /// The response body, as stored and answered.
    pub fn body(&self) -> serde_json::Value {
        let r = &self.request;
        let mut body = json!({
            "id": self.id,
            "key": self.key,
            "kind": r.kind.as_str(),
            "status": self.status(),
            "orderId": r.order_id,
            "amount": format_minor(r.amount_minor),
            "currency": r.currency,
            "createdAt": self.created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        });
        let fields = body.as_object_mut().expect("a JSON object");
        if let Some(user) = &r.user_id {
            fields.insert("userId".into(), json!(user));
        }
        if let Some(charge_key) = &r.charge_key {
            fields.insert("chargeKey".into(), json!(charge_key));
        }
        if let Decision::Decline { code, message } = &self.decision {
            fields.insert("code".into(), json!(code));
            fields.insert("message".into(), json!(message));
        }
        body
    }
}

/// What the ledger knows about a charge when a refund of it is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeTotals {
    /// Approved charges under the key (one, unless the key expired and was
    /// charged again; refunds are limited by all of them together).
    pub charged_minor: i64,
    pub currency: String,
    /// Refunds already approved against the key.
    pub refunded_minor: i64,
}

/// A refund never exceeds what was charged, and refunds the charge's currency.
pub fn decide_refund(charge: Option<&ChargeTotals>, amount_minor: i64, currency: &str) -> Decision {
    let decline = |code: &str, message: String| Decision::Decline {
        code: code.to_string(),
        message,
    };
    let Some(charge) = charge else {
        return decline(
            "charge_not_found",
            "no approved charge under chargeKey".into(),
        );
    };
    if charge.currency != currency {
        return decline(
            "currency_mismatch",
            format!(
                "the charge is in {}, the refund in {currency}",
                charge.currency
            ),
        );
    }
    let left = charge.charged_minor - charge.refunded_minor;
    if amount_minor > left {
        return decline(
            "amount_exceeds_charge",
            format!(
                "refund of {} exceeds the {} left to refund of the charge",
                format_minor(amount_minor),
                format_minor(left)
            ),
        );
    }
    Decision::Approve
}

/// The message of a charge declined with `code`.
pub fn decline_message(code: &str) -> String {
    format!("the card issuer declined the charge ({code})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(d: Decision) -> Option<String> {
        match d {
            Decision::Approve => None,
            Decision::Decline { code, .. } => Some(code),
        }
    }

    #[test]
    fn refunds_stay_within_the_charge() {
        let charge = ChargeTotals {
            charged_minor: 1000,
            currency: "KRW".into(),
            refunded_minor: 600,
        };
        assert_eq!(code(decide_refund(Some(&charge), 400, "KRW")), None);
        assert_eq!(
            code(decide_refund(Some(&charge), 401, "KRW")).as_deref(),
            Some("amount_exceeds_charge")
        );
        assert_eq!(
            code(decide_refund(Some(&charge), 1, "USD")).as_deref(),
            Some("currency_mismatch")
        );
        assert_eq!(
            code(decide_refund(None, 1, "KRW")).as_deref(),
            Some("charge_not_found")
        );
    }

    #[test]
    fn bodies_carry_the_contract_fields() {
        let request = PaymentRequest {
            kind: Kind::Charge,
            order_id: "o-1".into(),
            user_id: Some("u-1".into()),
            charge_key: None,
            amount_minor: 1230,
            currency: "KRW".into(),
        };
        let p = Payment::new(
            "k",
            request,
            Decision::Decline {
                code: "card_declined".into(),
                message: decline_message("card_declined"),
            },
        );
        let body = p.body();
        assert!(body["id"].as_str().unwrap().starts_with("ch_"));
        assert_eq!(body["status"], "DECLINED");
        assert_eq!(body["code"], "card_declined");
        assert_eq!(body["amount"], "12.30");
        assert_eq!(p.http_status(), 402);
        let stamp = body["createdAt"].as_str().unwrap();
        assert_eq!(DateTime::parse_from_rfc3339(stamp).unwrap(), p.created_at);
    }
}
