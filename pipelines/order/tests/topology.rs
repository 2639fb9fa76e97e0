//! The whole order topology in process: the saga, the inventory pipeline
//! and the coupon pipeline, each in the engine's harness, with every record
//! one sends delivered to the next in per-partition order but in a random
//! interleaving across partitions, random cancels, and random crashes
//! (restore from the changelog) between commits. Payments go to a simulated
//! provider with real providers' key rules (an approval, a decline, a slow
//! answer that outlives the payment timeout, a repeated reply), standing in
//! for the payment pipeline, whose own crash tests run against pg-sim. The
//! order audit, the provider's ledger included, must hold on what they
//! committed.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::DateTime;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use surge_core::settings::OrdersSettings;
use surge_coupon::CouponProcessor;
use surge_engine::harness::{Harness, Sent};
use surge_engine::Processor;
use surge_inventory::InventoryProcessor;
use surge_order::audit::{audit, LedgerPayment, Observed};
use surge_order::inputs::{CANCEL, CREATE, REPLIES};
use surge_order::{OrderSaga, SagaCodecs, SagaInput, SagaTopics};
use surge_schemas::coupon::{CouponAction, CouponCommand, CouponDecision, Discount};
use surge_schemas::inventory::{InventoryAction, InventoryCommand, InventoryEvent};
use surge_schemas::order::{
    OrderCancel, OrderCreate, OrderItem, OrderReply, OrderStatus, PaymentKind, PaymentOutcome,
    PaymentReply, PaymentRequest, Reply,
};
use surge_schemas::{Contract, Money, TopicCodec};

const N: i32 = 4;

struct Codecs {
    status: TopicCodec<OrderStatus>,
    payments: TopicCodec<PaymentRequest>,
    inventory: TopicCodec<InventoryCommand>,
    coupons: TopicCodec<CouponCommand>,
    replies: TopicCodec<OrderReply>,
    events: TopicCodec<InventoryEvent>,
    results: TopicCodec<CouponDecision>,
}

fn decode<T: Contract>(c: &TopicCodec<T>, s: &Sent) -> T {
    futures::executor::block_on(c.decode(s.payload.as_deref())).expect("decodes")
}

fn at(ms: i64) -> DateTime<chrono::Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

/// A record in flight to one pipeline's input partition.
enum Msg {
    Saga(usize, SagaInput),
    Inventory(InventoryCommand),
    Coupon(CouponCommand),
    Payment(PaymentRequest),
}

/// A payment provider with Idempotency-Key semantics: a key answered once
/// is answered the same way again; refunds never exceed the charge.
#[derive(Default)]
struct Provider {
    answered: HashMap<String, LedgerPayment>,
    ledger: Vec<LedgerPayment>,
}

impl Provider {
    fn answer(&mut self, r: &PaymentRequest, rng: &mut StdRng) -> LedgerPayment {
        if let Some(known) = self.answered.get(&r.payment_id) {
            return known.clone();
        }
        let approved = match r.kind {
            PaymentKind::Charge => rng.random_bool(0.85),
            PaymentKind::Refund => {
                let charge = r.refund_of.as_deref().and_then(|k| self.answered.get(k));
                let refunded: i64 = self
                    .ledger
                    .iter()
                    .filter(|p| {
                        p.kind == PaymentKind::Refund && p.approved && p.order_id == r.order_id
                    })
                    .map(|p| p.amount)
                    .sum();
                charge.is_some_and(|c| c.approved && refunded + r.amount.0 <= c.amount)
            }
        };
        let p = LedgerPayment {
            key: r.payment_id.clone(),
            kind: r.kind,
            approved,
            order_id: r.order_id.clone(),
            amount: r.amount.0,
        };
        self.answered.insert(r.payment_id.clone(), p.clone());
        self.ledger.push(p.clone());
        p
    }
}

#[test]
fn a_sale_through_the_three_pipelines_keeps_every_order_invariant() {
    let mut late = 0;
    for seed in 0..4 {
        let r = run(seed);
        let report = r.audit();
        eprintln!("seed {seed}: {report:?}");
        assert!(report.holds(), "seed {seed}: {:#?}", report.violations);
        assert_eq!(report.orders, 300);
        for state in ["PAID", "PAYMENT_FAILED", "REJECTED", "CANCELLED"] {
            assert!(
                report.by_final_state.get(state).copied().unwrap_or(0) > 0,
                "seed {seed}: no {state} in {:?}",
                report.by_final_state
            );
        }
        assert!(
            !report.by_final_state.contains_key("PAYMENT_PENDING")
                && !report.by_final_state.contains_key("CREATED"),
            "seed {seed}: unsettled orders {:?}",
            report.by_final_state
        );
        assert!(
            report.refunded_after_paid > 0,
            "seed {seed}: no paid order was refunded"
        );
        assert!(report.charged > 0 && report.refunded > 0);
        late += report.late_charges_refunded;
    }
    assert!(
        late > 0,
        "no seed had a charge approved after its order expired"
    );
}

/// What the topology committed on its outputs, and the orders sent.
struct Run {
    creates: Vec<OrderCreate>,
    cancels: Vec<OrderCancel>,
    ledger: Vec<LedgerPayment>,
    statuses: Vec<OrderStatus>,
    payments: Vec<PaymentRequest>,
    events: Vec<InventoryEvent>,
    decisions: Vec<CouponDecision>,
}

impl Run {
    fn audit(&self) -> surge_order::audit::OrderAudit {
        audit(&Observed {
            creates: &self.creates,
            cancels: &self.cancels,
            statuses: &self.statuses,
            payments: &self.payments,
            inventory: &self.events,
            coupons: &self.decisions,
            ledger: Some(&self.ledger),
        })
    }
}

#[test]
fn the_audit_fails_on_forged_data() {
    let clean = run(7);
    let forge = |what: &str, f: &dyn Fn(&mut Run)| {
        let mut r = run(7);
        f(&mut r);
        let report = r.audit();
        assert!(!report.holds(), "{what} went unnoticed");
        eprintln!("{what}: {:?}", report.violations);
    };
    assert!(clean.audit().holds());
    forge("a second charge for an order with another amount", &|r| {
        let mut p = r.payments[0].clone();
        p.amount = Money(p.amount.0 + 1);
        r.payments.push(p);
    });
    forge("a lost release (stock left reserved)", &|r| {
        let i = r
            .events
            .iter()
            .rposition(|e| e.outcome == surge_schemas::inventory::InventoryOutcome::Released)
            .unwrap();
        let mut e = r.events[i].clone();
        e.available -= 1;
        e.reserved += 1;
        e.request_id = "forged".into();
        r.events.push(e);
    });
    forge("a coupon unit used by two orders", &|r| {
        let d = r
            .decisions
            .iter()
            .find(|d| d.outcome == surge_schemas::coupon::Outcome::Redeemed)
            .unwrap()
            .clone();
        let mut other = d.clone();
        other.order_id = Some("someone-else".into());
        r.decisions.push(other);
    });
    forge("a second charge in the provider's ledger", &|r| {
        let mut p = r
            .ledger
            .iter()
            .find(|p| p.kind == PaymentKind::Charge && p.approved)
            .unwrap()
            .clone();
        p.key = "forged".into();
        r.ledger.push(p);
    });
    forge("a lost refund", &|r| {
        let i = r
            .ledger
            .iter()
            .position(|p| p.kind == PaymentKind::Refund && p.approved)
            .unwrap();
        r.ledger.remove(i);
    });
    forge("a cancel never answered", &|r| {
        let k = r.cancels[0].request_id.clone();
        r.statuses
            .retain(|s| s.cancel_request_id.as_deref() != Some(k.as_str()));
    });
    forge("a version skipped", &|r| {
        let s = r.statuses.iter_mut().find(|s| s.version == 2).unwrap();
        s.version = 3;
    });
    forge("an order that never ended", &|r| {
        let id = r.creates[0].order_id.clone();
        r.statuses.retain(|s| s.order_id != id || s.version == 1);
    });
}

fn run(seed: u64) -> Run {
    let mut rng = StdRng::seed_from_u64(seed);
    let c = Codecs {
        status: TopicCodec::offline(1),
        payments: TopicCodec::offline(2),
        inventory: TopicCodec::offline(3),
        coupons: TopicCodec::offline(4),
        replies: TopicCodec::offline(5),
        events: TopicCodec::offline(6),
        results: TopicCodec::offline(7),
    };
    let outputs = [
        ("order-status", N),
        ("payment-request", N),
        ("inventory-commands", N),
        ("coupon-issue", N),
        ("order-replies", N),
        ("inventory-result", N),
        ("coupon-result", N),
    ];
    // Time is the step count, in milliseconds: a charge unanswered for
    // 500 steps expires.
    let rules = OrdersSettings {
        payment_timeout: std::time::Duration::from_millis(500),
        ..OrdersSettings::default()
    };
    let mut saga = Harness::new(
        OrderSaga::new(
            rules,
            SagaTopics {
                status: "order-status".into(),
                payments: "payment-request".into(),
                inventory: "inventory-commands".into(),
                coupons: "coupon-issue".into(),
            },
            SagaCodecs {
                status: c.status.clone(),
                payments: c.payments.clone(),
                inventory: c.inventory.clone(),
                coupons: c.coupons.clone(),
            },
        ),
        &[
            ("order-create", N),
            ("order-cancel", N),
            ("order-replies", N),
        ],
        &outputs,
    );
    let mut stock = Harness::new(
        InventoryProcessor::new(
            c.events.clone(),
            c.replies.clone(),
            "inventory-result".into(),
            "order-replies".into(),
        ),
        &[("inventory-commands", N)],
        &outputs,
    );
    let mut coupons = Harness::new(
        CouponProcessor::new(
            c.results.clone(),
            c.replies.clone(),
            "coupon-result",
            "order-replies",
        ),
        &[("coupon-issue", N)],
        &outputs,
    );

    // Per (destination, partition) FIFO queues: order within a partition is
    // Kafka's; across partitions anything goes.
    let mut queues: BTreeMap<(u8, i32), VecDeque<Msg>> = BTreeMap::new();
    let mut statuses = Vec::new();
    let mut payments = Vec::new();
    let mut events = Vec::new();
    let mut decisions = Vec::new();
    let mut creates = Vec::new();
    let mut cancels = Vec::new();
    let mut provider = Provider::default();

    let mut route = |sent: Vec<Sent>, queues: &mut BTreeMap<(u8, i32), VecDeque<Msg>>| {
        for s in sent {
            match s.topic.as_str() {
                "order-status" => statuses.push(decode(&c.status, &s)),
                "payment-request" => {
                    let r: PaymentRequest = decode(&c.payments, &s);
                    payments.push(r.clone());
                    queues
                        .entry((4, s.partition))
                        .or_default()
                        .push_back(Msg::Payment(r));
                }
                "inventory-result" => events.push(decode(&c.events, &s)),
                "coupon-result" => decisions.push(decode(&c.results, &s)),
                "inventory-commands" => queues
                    .entry((1, s.partition))
                    .or_default()
                    .push_back(Msg::Inventory(decode(&c.inventory, &s))),
                "coupon-issue" => queues
                    .entry((2, s.partition))
                    .or_default()
                    .push_back(Msg::Coupon(decode(&c.coupons, &s))),
                "order-replies" => queues
                    .entry((0, s.partition))
                    .or_default()
                    .push_back(Msg::Saga(REPLIES, SagaInput::Reply(decode(&c.replies, &s)))),
                other => panic!("unexpected topic {other}"),
            }
        }
    };

    // Admin: products and coupons, and a coupon sale.
    let products: Vec<String> = (0..6).map(|i| format!("p{i}")).collect();
    for (i, p) in products.iter().enumerate() {
        let cmd = InventoryCommand {
            request_id: format!("admin-{p}"),
            product_id: p.clone(),
            requested_at: at(0),
            command: InventoryAction::CreateProduct {
                stock: 60 + 30 * i as i64,
            },
        };
        let sent = stock.feed(0, p, cmd, 0).unwrap();
        stock.commit();
        route(sent, &mut queues);
    }
    let users: Vec<String> = (0..60).map(|i| format!("u{i}")).collect();
    for (k, discount) in [
        ("c0", Discount::fixed(Money(300))),
        ("c1", Discount::percent(Money(1500), Some(Money(1000)))),
    ] {
        let mut cmds = vec![CouponCommand {
            request_id: format!("admin-{k}"),
            coupon_id: k.into(),
            requested_at: at(0),
            command: CouponAction::Create {
                stock: 15,
                active_from: None,
                active_until: None,
                discount: Some(discount),
            },
        }];
        for u in users.iter().step_by(2) {
            cmds.push(CouponCommand {
                request_id: format!("issue-{k}-{u}"),
                coupon_id: k.into(),
                requested_at: at(0),
                command: CouponAction::Issue { user_id: u.clone() },
            });
        }
        for cmd in cmds {
            let sent = coupons.feed(0, k, cmd, 0).unwrap();
            route(sent, &mut queues);
        }
        coupons.commit();
    }

    // Orders enter the saga's queues up front; cancels at their moment.
    let mut later: Vec<(usize, (u8, i32), Msg)> = Vec::new();
    for i in 0..300 {
        let id = format!("o{seed}-{i}");
        let user = users[rng.random_range(0..users.len())].clone();
        let lines = rng.random_range(1..=3);
        let mut items: Vec<OrderItem> = Vec::new();
        for _ in 0..lines {
            let p = products[rng.random_range(0..products.len())].clone();
            if items.iter().all(|it| it.product_id != p) {
                items.push(OrderItem {
                    product_id: p,
                    quantity: rng.random_range(1..=3),
                    unit_price: Money(rng.random_range(100..5_000)),
                });
            }
        }
        let coupon = match rng.random_range(0..4) {
            0 => Some("c0".to_string()),
            1 => Some("c1".to_string()),
            _ => None,
        };
        let create = OrderCreate {
            order_id: id.clone(),
            user_id: user.clone(),
            items,
            currency: "KRW".into(),
            coupon_id: coupon,
            requested_at: at(i),
        };
        creates.push(create.clone());
        let p = saga.partition_of(CREATE, &id);
        queues
            .entry((0, p))
            .or_default()
            .push_back(Msg::Saga(CREATE, SagaInput::Create(create.clone())));
        if rng.random_bool(0.05) {
            // An upstream retry of the same create.
            queues
                .entry((0, p))
                .or_default()
                .push_back(Msg::Saga(CREATE, SagaInput::Create(create)));
        }
        if rng.random_bool(0.15) {
            let who = if rng.random_bool(0.8) {
                user
            } else {
                "mallory".into()
            };
            let cancel = OrderCancel {
                request_id: format!("k-{id}"),
                order_id: id,
                user_id: who,
                reason: None,
                requested_at: at(i),
            };
            // Cancels travel on their own topic and come at any moment:
            // before the order, while it waits for replies, or after.
            let when = rng.random_range(0..3_000);
            cancels.push(cancel.clone());
            later.push((when, (3, p), Msg::Saga(CANCEL, SagaInput::Cancel(cancel))));
        }
    }

    let mut steps = 0;
    while !queues.is_empty() || !later.is_empty() {
        steps += 1;
        if steps % 25 == 0 {
            let sent = saga.tick(steps as i64).expect("tick");
            saga.commit();
            route(sent, &mut queues);
        }
        for (_, key, msg) in later.extract_if(.., |(when, _, _)| *when <= steps) {
            queues.entry(key).or_default().push_back(msg);
        }
        if queues.is_empty() {
            continue;
        }
        assert!(steps < 100_000, "the topology does not settle");
        let keys: Vec<(u8, i32)> = queues.keys().copied().collect();
        let key = keys[rng.random_range(0..keys.len())];
        let q = queues.get_mut(&key).unwrap();
        let msg = q.pop_front().unwrap();
        if q.is_empty() {
            queues.remove(&key);
        }
        let now = steps as i64;
        let sent = match msg {
            Msg::Saga(input, m) => {
                let k =
                    <surge_order::SagaInputs as surge_engine::Inputs>::owner_key(&m).to_string();
                step(&mut saga, input, &k, m, now, &mut rng)
            }
            Msg::Inventory(m) => {
                let k = m.product_id.clone();
                step(&mut stock, 0, &k, m, now, &mut rng)
            }
            Msg::Coupon(m) => {
                let k = m.coupon_id.clone();
                step(&mut coupons, 0, &k, m, now, &mut rng)
            }
            Msg::Payment(r) => {
                let answer = provider.answer(&r, &mut rng);
                let reply = OrderReply {
                    order_id: r.order_id.clone(),
                    reply: Reply::Payment(PaymentReply {
                        payment_id: r.payment_id.clone(),
                        kind: r.kind,
                        outcome: if answer.approved {
                            PaymentOutcome::Approved
                        } else {
                            PaymentOutcome::Declined
                        },
                        code: (!answer.approved).then(|| "card_declined".to_string()),
                        provider_ref: Some(format!("ch_{}", r.payment_id)),
                        amount: r.amount,
                        currency: r.currency.clone(),
                    }),
                    replied_at: at(now),
                };
                let p = saga.partition_of(REPLIES, &r.order_id);
                let msg = || Msg::Saga(REPLIES, SagaInput::Reply(reply.clone()));
                // Slow answers outlive the payment timeout; some come twice.
                let delay = if rng.random_bool(0.15) {
                    rng.random_range(600..1_500)
                } else {
                    rng.random_range(0..50)
                };
                later.push((steps + delay, (0, p), msg()));
                if rng.random_bool(0.05) {
                    later.push((steps + delay + 10, (0, p), msg()));
                }
                Vec::new()
            }
        };
        route(sent, &mut queues);
    }

    saga.assert_restore_law();
    stock.assert_restore_law();
    coupons.assert_restore_law();
    Run {
        creates,
        cancels,
        ledger: provider.ledger,
        statuses,
        payments,
        events,
        decisions,
    }
}

/// Decides one record and commits; now and then the pipeline crashes right
/// after the commit and comes back from its changelog, or aborts first and
/// decides the same record again.
fn step<P: Processor>(
    h: &mut Harness<P>,
    input: usize,
    key: &str,
    msg: P::Input,
    now: i64,
    rng: &mut StdRng,
) -> Vec<Sent>
where
    P::Input: Clone,
{
    let sent = h.feed(input, key, msg, now).expect("decided");
    let sent = if rng.random_bool(0.1) {
        h.abort_and_replay()
    } else {
        sent
    };
    h.commit();
    if rng.random_bool(0.05) {
        h.crash_and_restore();
    }
    sent
}
