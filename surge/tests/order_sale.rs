//! The order sale, on the real stack: products with limited stock, a coupon
//! sale, then orders from thousands of users (several products per order for
//! some; coupons held, not held and used twice), paid through pg-sim with
//! faults on (20 ms median latency, 5 % declines, 2 % 5xx after the charge,
//! 2 % timeouts after the charge, 1 % 409s), cancels at random moments
//! (before, during and after payment), while the saga, the inventory, the
//! coupon and the payment pipelines are each SIGKILLed at random moments at
//! least 5 times and the broker is restarted once. Then, from what
//! read_committed consumers see and from pg-sim's ledger, invariant 5 must
//! hold in full (see `surge_order::audit`): one terminal state per order,
//! stock conserved, coupons used once and given back, every PAID order
//! charged exactly once, every cancelled paid order refunded exactly once,
//! charges minus refunds equal to the PAID total.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::coupon::{signal, Fixture, Instance};
use common::orders::{produce, spawn, stack, BrokerRestart, Tail};
use common::payments::{ledger, spawn_payment, start_pg_sim, PgSim};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use surge_order::audit::{audit, Observed};
use surge_order::scenario::OrderScenario;
use surge_schemas::coupon::CouponDecision;
use surge_schemas::inventory::InventoryEvent;
use surge_schemas::order::{
    OrderCancel, OrderCreate, OrderEvent, OrderState, OrderStatus, PaymentRequest,
};
use surge_schemas::Contract;

/// Sizes: the acceptance numbers by default; smaller with env vars.
fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn at(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_sale_with_crashes_and_a_broker_restart_keeps_every_order_invariant() {
    let orders = size("SURGE_TEST_ORDERS", 20_000);
    let users = size("SURGE_TEST_ORDER_USERS", 5_000);
    let kills_each = size("SURGE_TEST_KILLS_EACH", 5);
    // A short payment timeout, so kills of the payment pipeline make some
    // charges outlive it (the order expires; a late approval is refunded).
    let fx = Fixture::with_env("order-sale", &[("SURGE_ORDERS__PAYMENT_TIMEOUT", "15s")]).await;
    let sim = start_pg_sim(
        &fx,
        &[
            ("latency_median_ms", "20"),
            ("latency_sigma", "0.5"),
            ("decline_ratio", "0.05"),
            ("error_after_ratio", "0.02"),
            ("timeout_after_ratio", "0.02"),
            ("hang", "2s"),
            ("conflict_ratio", "0.01"),
        ],
    );
    const PIPELINES: [&str; 4] = ["order", "inventory", "coupon", "payment"];
    let start = |p: &str| match p {
        "payment" => spawn_payment(&fx, &sim, &[]),
        other => spawn(&fx, other),
    };
    let mut rng = StdRng::seed_from_u64(11);

    // The sale: 40 products, a coupon sale, the orders and their cancels
    // (surge_order::scenario, as `surge loadgen --orders` sends it).
    let sale = OrderScenario {
        prefix: "s".into(),
        orders,
        users,
        products: 40,
        waves: 20,
        seed: 11,
    }
    .generate();
    produce(&fx, &sale.products).await;
    produce(&fx, &sale.coupons).await;
    let creates: Vec<OrderCreate> = sale.creates().cloned().collect();
    let mut cancels: Vec<OrderCancel> = sale.cancels().cloned().collect();

    let mut running: BTreeMap<&str, Instance> = PIPELINES.iter().map(|p| (*p, start(p))).collect();

    // Orders and cancels arrive in waves while pipelines die.
    let producer = {
        let prefix = fx.prefix.clone();
        let waves = sale.waves.clone();
        tokio::spawn(async move {
            let fx = Fixture::reuse(&prefix).await;
            for (orders, cancels) in waves {
                produce(&fx, &orders).await;
                produce(&fx, &cancels).await;
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        })
    };

    let mut kills: BTreeMap<&str, usize> = PIPELINES.iter().map(|p| (*p, 0)).collect();
    let mut broker_restarted = false;
    let started = Instant::now();
    while kills.values().any(|k| *k < kills_each) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(700..2_500))).await;
        let candidates: Vec<&str> = PIPELINES
            .iter()
            .copied()
            .filter(|p| kills[p] < kills_each)
            .collect();
        let victim = candidates[rng.random_range(0..candidates.len())];
        let child = running.get_mut(victim).unwrap();
        if let Some(status) = child.try_wait().unwrap() {
            // Fenced after the broker restart (exit 3) is a supervisor's job.
            assert_eq!(
                status.code(),
                Some(3),
                "{victim} exited on its own with {status}; see {}",
                fx.logs.display()
            );
        } else {
            signal(child, "KILL");
            child.wait().unwrap();
        }
        *kills.get_mut(victim).unwrap() += 1;
        eprintln!(
            "SIGKILL {victim} ({} so far) at {:?}",
            kills[victim],
            started.elapsed()
        );
        running.insert(victim, start(victim));
        if !broker_restarted && kills.values().sum::<usize>() == kills_each {
            eprintln!("broker restart at {:?}", started.elapsed());
            let guard = BrokerRestart;
            stack(&["kill", "kafka"]);
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(guard);
            broker_restarted = true;
        }
    }
    producer.await.unwrap();
    eprintln!("all sent, {kills:?} at {:?}", started.elapsed());

    // Settle: the audit holds once every saga, refund included, is done.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut after_paid_sent = false;
    let report = loop {
        // A pipeline fenced after the broker restart is restarted, as a supervisor would.
        for p in PIPELINES {
            let child = running.get_mut(p).unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                assert_eq!(status.code(), Some(3), "{p} exited with {status}");
                running.insert(p, start(p));
            }
        }
        let (report, statuses) = observe(&fx, &sim, &creates, &cancels).await;
        let open: usize = ["CREATED", "PAYMENT_PENDING"]
            .iter()
            .filter_map(|s| report.by_final_state.get(*s))
            .sum();
        eprintln!(
            "{open} orders open, {} violation(s) at {:?}",
            report.violations.len(),
            started.elapsed()
        );
        if report.holds() && !after_paid_sent {
            // Some buyers change their minds once paid: refunds after PAID.
            let mut last: BTreeMap<&str, &OrderStatus> = BTreeMap::new();
            for s in statuses
                .iter()
                .filter(|s| s.event == OrderEvent::Transition)
            {
                last.insert(s.order_id.as_str(), s);
            }
            let late: Vec<OrderCancel> = last
                .values()
                .filter(|s| s.state == OrderState::Paid)
                .step_by(20)
                .map(|s| OrderCancel {
                    request_id: format!("after-paid-{}", s.order_id),
                    order_id: s.order_id.clone(),
                    user_id: s.user_id.clone(),
                    reason: Some("returned it".into()),
                    requested_at: at(3),
                })
                .collect();
            eprintln!("{} cancels of PAID orders", late.len());
            produce(&fx, &late).await;
            cancels.extend(late);
            after_paid_sent = true;
            continue;
        }
        if report.holds() || Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    };
    eprintln!("{report:#?}");
    assert!(
        report.holds(),
        "{:#?}; logs in {}",
        report.violations,
        fx.logs.display()
    );
    assert_eq!(report.orders, orders);
    for state in ["PAID", "PAYMENT_FAILED", "REJECTED", "CANCELLED"] {
        assert!(
            report.by_final_state.get(state).copied().unwrap_or(0) > 0,
            "no {state}: {:?}",
            report.by_final_state
        );
    }
    assert!(report.cancel_refusals > 0, "some cancels could not apply");
    assert!(
        report.refunded_after_paid > 0 && after_paid_sent,
        "no paid order was cancelled"
    );
    assert!(report.charged > 0 && report.refunded > 0);
    assert!(broker_restarted);

    // The product's own command proves the same, and fails on a forged
    // second charge in the provider's ledger.
    let verify = || {
        common::surge(
            &[
                "verify",
                "--orders",
                "--no-stores",
                "--ledger-schema",
                &sim.schema,
            ],
            &[("SURGE_TOPICS__NAME_PREFIX", fx.prefix.as_str())],
        )
    };
    let out = verify();
    let text = common::stdout(&out);
    assert!(
        out.status.success() && text.contains("verify: OK"),
        "{text}{}",
        common::stderr(&out)
    );
    forge_second_charge(&fx, &sim).await;
    let out = verify();
    let text = common::stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("verify: FAILED") && text.contains("a PAID order not charged exactly once"),
        "{text}"
    );
}

/// Copies one PAID order's approved charge under another key and id, as a
/// provider charging twice would leave it.
async fn forge_second_charge(fx: &Fixture, sim: &PgSim) {
    let pool = sqlx::PgPool::connect(&fx.settings.postgres.url)
        .await
        .unwrap();
    let s = &sim.schema;
    let done = sqlx::query(&format!(
        "INSERT INTO {s}.payments (id, key, kind, status, code, order_id, user_id, charge_key, \
         amount_minor, currency, body, http_status, created_at) \
         SELECT 'ch_forged', key || '-again', kind, status, code, order_id, user_id, charge_key, \
         amount_minor, currency, body, http_status, now() FROM {s}.payments p \
         WHERE kind = 'CHARGE' AND status = 'APPROVED' AND NOT EXISTS \
         (SELECT 1 FROM {s}.payments r WHERE r.kind = 'REFUND' AND r.order_id = p.order_id) \
         LIMIT 1"
    ))
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(done.rows_affected(), 1, "a PAID order's charge to copy");
    pool.close().await;
}

/// Everything the audit reads, read again from the start.
async fn observe(
    fx: &Fixture,
    sim: &PgSim,
    creates: &[OrderCreate],
    cancels: &[OrderCancel],
) -> (surge_order::audit::OrderAudit, Vec<OrderStatus>) {
    let read = |base: &'static str| {
        let mut t = Tail::new(fx, base);
        t.catch_up(Duration::from_secs(3));
        t
    };
    let statuses: Vec<OrderStatus> = read(OrderStatus::TOPIC)
        .decoded(&common::codec(&fx.settings).await)
        .await;
    let payments: Vec<PaymentRequest> = read(PaymentRequest::TOPIC)
        .decoded(&common::codec(&fx.settings).await)
        .await;
    let events: Vec<InventoryEvent> = read(InventoryEvent::TOPIC)
        .decoded(&common::codec(&fx.settings).await)
        .await;
    let decisions: Vec<CouponDecision> = read(CouponDecision::TOPIC)
        .decoded(&common::codec(&fx.settings).await)
        .await;
    let ledger = ledger(fx, sim).await;
    let report = audit(&Observed {
        creates,
        cancels,
        statuses: &statuses,
        payments: &payments,
        inventory: &events,
        coupons: &decisions,
        ledger: Some(&ledger),
    });
    (report, statuses)
}
