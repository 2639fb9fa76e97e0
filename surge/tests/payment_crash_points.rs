//! The crash-point matrix of a payment: for each step of a charge and of a
//! refund — intent recorded, request sent, answer received, result
//! committed — the payment pipeline is stopped exactly there by its test
//! hook and SIGKILLed (a real kill), then restarted without the hook. For
//! each, pg-sim's ledger shows exactly one charge (and one refund), and the
//! order ends PAID (or CANCELLED with the refund's id).

mod common;

use std::time::{Duration, Instant};

use common::coupon::{signal, Fixture, Instance};
use common::orders::{produce, spawn, Tail};
use common::payments::{ledger, set_faults, spawn_payment, start_pg_sim, PgSim};
use surge_schemas::inventory::{InventoryAction, InventoryCommand};
use surge_schemas::order::{
    OrderCancel, OrderCreate, OrderEvent, OrderItem, OrderState, OrderStatus, PaymentKind,
};
use surge_schemas::{Contract, Money, TopicCodec};

const STEPS: [&str; 4] = [
    "intent_recorded",
    "request_sent",
    "answer_received",
    "result_committed",
];
const HOOK: &str = "SURGE_TEST_PAYMENT_HOLD_AT";

fn at(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap()
}

struct Matrix {
    fx: Fixture,
    sim: PgSim,
    status: Tail,
    codec: TopicCodec<OrderStatus>,
}

impl Matrix {
    /// Waits until `order`'s last transition is `state`; returns it.
    async fn wait_for(&mut self, order: &str, state: OrderState) -> OrderStatus {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            self.status.catch_up(Duration::from_millis(300));
            let last = self
                .status
                .decoded(&self.codec)
                .await
                .into_iter()
                .filter(|s| s.order_id == order && s.event == OrderEvent::Transition)
                .next_back();
            if let Some(s) = last.filter(|s| s.state == state) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{order} never reached {state:?}; logs in {}",
                self.fx.logs.display()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Starts the payment pipeline, armed with `hook` if given.
    fn payment(&self, hook: Option<&str>) -> Instance {
        let log = self.fx.logs.join("pipeline-payment.log");
        let _ = std::fs::remove_file(&log);
        match hook {
            Some(h) => spawn_payment(&self.fx, &self.sim, &[(HOOK, h)]),
            None => spawn_payment(&self.fx, &self.sim, &[]),
        }
    }

    /// Waits for the hook to stop the pipeline at its step, then kills it.
    async fn kill_at_hold(&self, mut p: Instance, step: &str) {
        let log = self.fx.logs.join("pipeline-payment.log");
        let fx_log = log.clone();
        tokio::task::spawn_blocking(move || {
            common::wait_for_log(
                &fx_log,
                "held at a step (test hook)",
                Duration::from_secs(60),
            )
        })
        .await
        .unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains(&format!("step={step}")),
            "held elsewhere: {text}"
        );
        if step == "request_sent" {
            // The call is at pg-sim (which takes 1.5 s to answer) when we kill.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        signal(&mut p, "KILL");
        p.wait().unwrap();
    }

    async fn order(&self, id: &str) {
        let create = OrderCreate {
            order_id: id.into(),
            user_id: format!("buyer-{id}"),
            items: vec![OrderItem {
                product_id: "p".into(),
                quantity: 1,
                unit_price: Money(12_300),
            }],
            currency: "KRW".into(),
            coupon_id: None,
            requested_at: at(1),
        };
        produce(&self.fx, &[create]).await;
    }

    async fn cancel(&self, id: &str) {
        let cancel = OrderCancel {
            request_id: format!("cancel-{id}"),
            order_id: id.into(),
            user_id: format!("buyer-{id}"),
            reason: None,
            requested_at: at(2),
        };
        produce(&self.fx, &[cancel]).await;
    }

    /// pg-sim's approved (charges, refunds) for `order`, in minor units.
    async fn money(&self, order: &str) -> (Vec<i64>, Vec<i64>) {
        let mut out = (Vec::new(), Vec::new());
        for p in ledger(&self.fx, &self.sim).await {
            if p.order_id == order && p.approved {
                match p.kind {
                    PaymentKind::Charge => out.0.push(p.amount),
                    PaymentKind::Refund => out.1.push(p.amount),
                }
            }
        }
        out
    }

    async fn slow_provider(&self, on: bool) {
        let ms = if on { 1500.0 } else { 0.0 };
        set_faults(&self.sim, serde_json::json!({ "latency_median_ms": ms })).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payment_killed_at_any_step_is_charged_and_refunded_exactly_once() {
    let fx = Fixture::new("pay-crash").await;
    let sim = start_pg_sim(&fx, &[]);
    let _others: Vec<Instance> = ["order", "inventory"]
        .into_iter()
        .map(|p| spawn(&fx, p))
        .collect();
    produce(
        &fx,
        &[InventoryCommand {
            request_id: "admin-p".into(),
            product_id: "p".into(),
            requested_at: at(0),
            command: InventoryAction::CreateProduct { stock: 100 },
        }],
    )
    .await;
    let mut m = Matrix {
        status: Tail::new(&fx, OrderStatus::TOPIC),
        codec: common::codec(&fx.settings).await,
        fx,
        sim,
    };

    for step in STEPS {
        // A charge, killed at `step`.
        let order = format!("charge-{step}");
        m.slow_provider(step == "request_sent").await;
        let p = m.payment(Some(&format!("charge:{step}")));
        m.order(&order).await;
        m.kill_at_hold(p, step).await;
        m.slow_provider(false).await;
        let mut p = m.payment(None);
        let paid = m.wait_for(&order, OrderState::Paid).await;
        let (charges, refunds) = m.money(&order).await;
        assert_eq!(charges, [12_300], "{order}: one charge");
        assert!(refunds.is_empty(), "{order}");
        assert_eq!(paid.payment_id, Some(surge_order::charge_id(&order)));
        eprintln!("charge killed at {step}: charged once, PAID");

        // A refund of a paid order, killed at `step`.
        let order = format!("refund-{step}");
        m.order(&order).await;
        m.wait_for(&order, OrderState::Paid).await;
        signal(&mut p, "KILL");
        p.wait().unwrap();
        m.slow_provider(step == "request_sent").await;
        let p = m.payment(Some(&format!("refund:{step}")));
        m.cancel(&order).await;
        m.kill_at_hold(p, step).await;
        m.slow_provider(false).await;
        let mut p = m.payment(None);
        let cancelled = m.wait_for(&order, OrderState::Cancelled).await;
        let (charges, refunds) = m.money(&order).await;
        assert_eq!(
            (charges, refunds),
            (vec![12_300], vec![12_300]),
            "{order}: one charge, one refund"
        );
        assert_eq!(cancelled.refund_id, Some(surge_order::refund_id(&order)));
        eprintln!("refund killed at {step}: refunded once, CANCELLED");
        signal(&mut p, "KILL");
        p.wait().unwrap();
    }
}
