//! Every rule and compensation path of the saga, in process (the engine's
//! harness: savepoints, aborts, changelog), with the replies of inventory
//! and coupon played by the test.

use surge_core::settings::OrdersSettings;
use surge_engine::harness::{Harness, Sent};
use surge_order::inputs::{CANCEL, CREATE, REPLIES};
use surge_order::{charge_id, refund_id, OrderSaga, SagaInput};
use surge_schemas::coupon::{CouponAction, CouponCommand, Discount};
use surge_schemas::inventory::{InventoryAction, InventoryCommand};
use surge_schemas::order::{
    CouponReply, CouponReplyOutcome, OrderCancel, OrderCreate, OrderEvent, OrderReply, OrderState,
    OrderStatus, PaymentKind, PaymentOutcome, PaymentReply, PaymentRequest, Reply, StockOutcome,
    StockReply,
};
use surge_schemas::{Contract, Money, TopicCodec};

mod common;

use common::{at, harness, order, COUPONS, INVENTORY, PAYMENTS, STATUS};

fn saga() -> Harness<OrderSaga> {
    harness(common::saga(OrdersSettings {
        max_lines: 3,
        payment_timeout: std::time::Duration::from_secs(10),
        ..OrdersSettings::default()
    }))
}

/// Readers of what the saga sends, made once (a codec holds an HTTP client).
struct Readers {
    status: TopicCodec<OrderStatus>,
    payments: TopicCodec<PaymentRequest>,
    inventory: TopicCodec<InventoryCommand>,
    coupons: TopicCodec<CouponCommand>,
}

fn readers() -> &'static Readers {
    static R: std::sync::OnceLock<Readers> = std::sync::OnceLock::new();
    R.get_or_init(|| Readers {
        status: TopicCodec::offline(1),
        payments: TopicCodec::offline(2),
        inventory: TopicCodec::offline(3),
        coupons: TopicCodec::offline(4),
    })
}

fn decode<T: Contract>(codec: &TopicCodec<T>, s: &Sent) -> T {
    futures::executor::block_on(codec.decode(s.payload.as_deref())).expect("decodes")
}

/// What a decision sent, decoded by topic.
#[derive(Debug, Default)]
struct Sends {
    status: Vec<OrderStatus>,
    payments: Vec<PaymentRequest>,
    inventory: Vec<InventoryCommand>,
    coupons: Vec<CouponCommand>,
}

fn sends(sent: &[Sent]) -> Sends {
    let mut out = Sends::default();
    for s in sent {
        match s.topic.as_str() {
            STATUS => {
                let st: OrderStatus = decode(&readers().status, s);
                assert_eq!(s.key, st.order_id.as_bytes());
                assert_eq!(s.partition, surge_kafka::partition_for(&s.key, 6));
                out.status.push(st)
            }
            PAYMENTS => out.payments.push(decode(&readers().payments, s)),
            INVENTORY => {
                let c: InventoryCommand = decode(&readers().inventory, s);
                assert_eq!(
                    s.partition,
                    surge_kafka::partition_for(c.product_id.as_bytes(), 6),
                    "a command lands on the partition owning its product"
                );
                out.inventory.push(c)
            }
            COUPONS => out.coupons.push(decode(&readers().coupons, s)),
            other => panic!("sent to {other}"),
        }
    }
    out
}

fn create(h: &mut Harness<OrderSaga>, o: OrderCreate) -> Sends {
    let key = o.order_id.clone();
    sends(&h.feed(CREATE, &key, SagaInput::Create(o), 1_000).unwrap())
}

fn cancel(h: &mut Harness<OrderSaga>, order: &str, user: &str, request: &str) -> Sends {
    let k = OrderCancel {
        request_id: request.into(),
        order_id: order.into(),
        user_id: user.into(),
        reason: None,
        requested_at: at(2_000),
    };
    sends(&h.feed(CANCEL, order, SagaInput::Cancel(k), 2_000).unwrap())
}

fn reply(h: &mut Harness<OrderSaga>, order: &str, reply: Reply) -> Sends {
    let r = OrderReply {
        order_id: order.into(),
        reply,
        replied_at: at(1_500),
    };
    sends(&h.feed(REPLIES, order, SagaInput::Reply(r), 1_500).unwrap())
}

fn stock(product: &str, outcome: StockOutcome, quantity: i32) -> Reply {
    Reply::Stock(StockReply {
        product_id: product.into(),
        outcome,
        quantity,
        available: 0,
    })
}

fn coupon(outcome: CouponReplyOutcome, discount: Option<Discount>) -> Reply {
    Reply::Coupon(CouponReply {
        coupon_id: "c".into(),
        outcome,
        reason: (outcome == CouponReplyOutcome::RedeemRejected)
            .then(|| "coupon already used by another order".into()),
        discount,
    })
}

fn reserved(product: &str, q: i32) -> Reply {
    stock(product, StockOutcome::Reserved, q)
}

fn is_release(c: &InventoryCommand) -> bool {
    matches!(c.command, InventoryAction::Release { .. })
}

#[test]
fn held_stock_and_coupon_lead_to_one_charge_for_the_discounted_amount() {
    let mut h = saga();
    let s = create(
        &mut h,
        order(
            "o1",
            "alice",
            &[("p1", 2, 1_000), ("p2", 1, 500)],
            Some("c"),
        ),
    );
    assert_eq!(s.status.len(), 1);
    assert_eq!(
        (s.status[0].state, s.status[0].version),
        (OrderState::Created, 1)
    );
    // A coupon order asks its coupon first: no Reserve yet.
    assert_eq!(s.inventory.len(), 0, "{:?}", s.inventory);
    assert!(matches!(
        &s.coupons[..],
        [CouponCommand { command: CouponAction::Redeem { order_id, user_id }, coupon_id, .. }]
            if order_id == "o1" && user_id == "alice" && coupon_id == "c"
    ));

    // Redeemed: now the Reserves, one per line, and no status yet.
    let s = reply(
        &mut h,
        "o1",
        coupon(
            CouponReplyOutcome::Redeemed,
            Some(Discount::percent(Money(1000), Some(Money(200)))),
        ),
    );
    assert_eq!(reserves(&s), vec![("p1", "o1", 2), ("p2", "o1", 1)]);
    assert!(s.status.is_empty() && s.payments.is_empty() && s.coupons.is_empty());
    assert!(sends_nothing(reply(&mut h, "o1", reserved("p1", 2))));
    let s = reply(&mut h, "o1", reserved("p2", 1));
    assert_eq!(s.status.len(), 1);
    let st = &s.status[0];
    assert_eq!((st.state, st.version), (OrderState::PaymentPending, 2));
    // 2 500 total, 10 % = 250 capped at 200.
    assert_eq!(st.total, Money(2_300));
    let p = &s.payments[0];
    assert_eq!(p.kind, PaymentKind::Charge);
    assert_eq!(p.amount, Money(2_300));
    assert_eq!(p.payment_id, charge_id("o1"));
    assert_eq!(st.payment_id.as_deref(), Some(p.payment_id.as_str()));
    h.commit();
    h.assert_restore_law();
}

fn sends_nothing(s: Sends) -> bool {
    s.status.is_empty() && s.payments.is_empty() && s.inventory.is_empty() && s.coupons.is_empty()
}

/// (product, order, quantity) of every inventory command sent, each a Reserve.
fn reserves(s: &Sends) -> Vec<(&str, &str, i32)> {
    s.inventory
        .iter()
        .map(|c| match &c.command {
            InventoryAction::Reserve { order_id, quantity } => {
                (c.product_id.as_str(), order_id.as_str(), *quantity)
            }
            other => panic!("not a Reserve: {other:?}"),
        })
        .collect()
}

#[test]
fn out_of_stock_rejects_and_releases_everything_else_at_once() {
    let mut h = saga();
    create(
        &mut h,
        order(
            "o1",
            "u",
            &[("p1", 1, 100), ("p2", 1, 100), ("p3", 1, 100)],
            Some("c"),
        ),
    );
    // The coupon first; its redemption asks the three lines.
    let s = reply(&mut h, "o1", coupon(CouponReplyOutcome::Redeemed, None));
    assert_eq!(
        reserves(&s),
        vec![("p1", "o1", 1), ("p2", "o1", 1), ("p3", "o1", 1)]
    );
    reply(&mut h, "o1", reserved("p1", 1));
    let s = reply(
        &mut h,
        "o1",
        stock("p2", StockOutcome::InsufficientStock, 1),
    );
    let st = &s.status[0];
    assert_eq!((st.state, st.version), (OrderState::Rejected, 2));
    assert!(
        st.reason
            .as_deref()
            .unwrap()
            .contains("out of stock: product p2"),
        "{st:?}"
    );
    // p1 (held) and p3 (still asked: the release follows the reserve on its
    // partition) are released; p2 was refused and holds nothing.
    let released: Vec<_> = s
        .inventory
        .iter()
        .filter(|c| is_release(c))
        .map(|c| c.product_id.as_str())
        .collect();
    assert_eq!(released, vec!["p1", "p3"]);
    assert_eq!(s.inventory.len(), 2, "releases only: {:?}", s.inventory);
    // The redeemed coupon is given back.
    assert!(matches!(
        &s.coupons[..],
        [CouponCommand {
            command: CouponAction::Release { .. },
            ..
        }]
    ));
    assert!(s.payments.is_empty());
    // Late answers change nothing visible (the coupon's is a repeat now).
    assert!(sends_nothing(reply(&mut h, "o1", reserved("p3", 1))));
    assert!(sends_nothing(reply(
        &mut h,
        "o1",
        coupon(CouponReplyOutcome::Redeemed, None)
    )));
    assert!(sends_nothing(reply(
        &mut h,
        "o1",
        stock("p1", StockOutcome::Released, 1)
    )));
    h.commit();
    h.assert_restore_law();
}

#[test]
fn a_coupon_not_held_or_used_twice_rejects_with_its_reason() {
    let mut h = saga();
    let s = create(&mut h, order("o1", "u", &[("p1", 1, 100)], Some("c")));
    assert_eq!(
        (s.inventory.len(), s.coupons.len()),
        (0, 1),
        "a coupon order asks its coupon first: no Reserve yet"
    );
    let s = reply(
        &mut h,
        "o1",
        coupon(CouponReplyOutcome::RedeemRejected, None),
    );
    let st = &s.status[0];
    assert_eq!(st.state, OrderState::Rejected);
    assert!(
        st.reason
            .as_deref()
            .unwrap()
            .contains("coupon already used"),
        "{st:?}"
    );
    // No stock was asked (the line waited for the coupon), so none is
    // released: no inventory command at all.
    assert_eq!(s.inventory.len(), 0, "{:?}", s.inventory);
    assert!(
        s.coupons.is_empty(),
        "a refused redemption holds nothing to release"
    );
    assert!(s.payments.is_empty());
    // A stray stock answer for the line never asked changes nothing.
    assert!(sends_nothing(reply(&mut h, "o1", reserved("p1", 1))));
    h.commit();
    assert_eq!(
        h.committed_on(INVENTORY).count(),
        0,
        "never any stock asked"
    );
    h.assert_restore_law();
}

#[test]
fn replies_twice_and_replies_for_unknown_orders_change_nothing() {
    let mut h = saga();
    create(
        &mut h,
        order("o1", "u", &[("p1", 1, 100), ("p2", 1, 100)], None),
    );
    reply(&mut h, "o1", reserved("p1", 1));
    h.commit();
    let before = h.state(h.partition_of(CREATE, "o1")).clone();
    assert!(sends_nothing(reply(&mut h, "o1", reserved("p1", 1))));
    assert!(sends_nothing(reply(&mut h, "nobody", reserved("p1", 1))));
    assert!(sends_nothing(reply(
        &mut h,
        "o1",
        stock("p9", StockOutcome::Reserved, 1)
    )));
    assert_eq!(h.state(h.partition_of(CREATE, "o1")), &before);
    // The second product's answer still completes it.
    let s = reply(&mut h, "o1", reserved("p2", 1));
    assert_eq!(s.status[0].state, OrderState::PaymentPending);
    assert_eq!(s.payments.len(), 1);
}

#[test]
fn cancel_before_payment_releases_once_and_a_second_cancel_is_answered() {
    let mut h = saga();
    create(&mut h, order("o1", "alice", &[("p1", 1, 100)], Some("c")));
    // The coupon is redeemed, which asks p1; the cancel comes while p1's
    // Reserve is in flight (still CREATED).
    let s = reply(&mut h, "o1", coupon(CouponReplyOutcome::Redeemed, None));
    assert_eq!(reserves(&s), vec![("p1", "o1", 1)]);
    let s = cancel(&mut h, "o1", "alice", "k1");
    let st = &s.status[0];
    assert_eq!(
        (st.state, st.version, st.event),
        (OrderState::Cancelled, 2, OrderEvent::Transition)
    );
    assert_eq!(st.cancel_request_id.as_deref(), Some("k1"));
    assert_eq!(s.inventory.iter().filter(|c| is_release(c)).count(), 1);
    assert_eq!(s.inventory.len(), 1, "only the release of p1");
    assert!(releases_coupon(&s), "the coupon redeemed is released");
    // The same request again: nothing at all.
    assert!(sends_nothing(cancel(&mut h, "o1", "alice", "k1")));
    // Another cancel: answered with the reason, never applied.
    let s = cancel(&mut h, "o1", "alice", "k2");
    let st = &s.status[0];
    assert_eq!(
        (st.state, st.version, st.event),
        (OrderState::Cancelled, 2, OrderEvent::CancelRefused)
    );
    assert!(st.reason.as_deref().unwrap().contains("already CANCELLED"));
    assert!(s.inventory.is_empty() && s.coupons.is_empty());
    // Replies after the cancel start no payment: the Reserve's answer
    // (which would have held everything) and a repeated redemption.
    assert!(sends_nothing(reply(&mut h, "o1", reserved("p1", 1))));
    assert!(sends_nothing(reply(
        &mut h,
        "o1",
        coupon(CouponReplyOutcome::Redeemed, None)
    )));
    h.commit();
    h.assert_restore_law();
}

#[test]
fn cancels_that_cannot_apply_are_refused_with_the_reason() {
    let mut h = saga();
    let s = cancel(&mut h, "ghost", "u", "k0");
    assert_eq!(
        (s.status[0].event, s.status[0].version),
        (OrderEvent::CancelRefused, 0)
    );
    assert_eq!(s.status[0].reason.as_deref(), Some("unknown order"));

    create(&mut h, order("o1", "alice", &[("p1", 1, 100)], None));
    let s = cancel(&mut h, "o1", "mallory", "k1");
    assert_eq!(s.status[0].event, OrderEvent::CancelRefused);
    assert_eq!(s.status[0].state, OrderState::Created);
    assert!(s.status[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("another user"));
    assert!(s.inventory.is_empty());

    // Failed and cancelled orders refuse a cancel with their state.
    create(&mut h, order("o2", "bob", &[("p1", 1, 100)], None));
    reply(&mut h, "o2", reserved("p1", 1));
    pay(&mut h, "o2", PaymentKind::Charge, false);
    let s = cancel(&mut h, "o2", "bob", "k3");
    assert_eq!(
        (s.status[0].event, s.status[0].state, s.status[0].version),
        (OrderEvent::CancelRefused, OrderState::PaymentFailed, 3)
    );
    assert!(s.status[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("already PAYMENT_FAILED"));
    assert!(s.payments.is_empty() && s.inventory.is_empty());
}

/// The payment pipeline's answer for `order`'s charge or refund.
fn pay(h: &mut Harness<OrderSaga>, order: &str, kind: PaymentKind, approved: bool) -> Sends {
    let payment_id = match kind {
        PaymentKind::Charge => charge_id(order),
        PaymentKind::Refund => refund_id(order),
    };
    reply(
        h,
        order,
        Reply::Payment(PaymentReply {
            payment_id,
            kind,
            outcome: if approved {
                PaymentOutcome::Approved
            } else {
                PaymentOutcome::Declined
            },
            code: (!approved).then(|| "insufficient_funds".into()),
            provider_ref: Some("ch_1".into()),
            amount: Money(100),
            currency: "KRW".into(),
        }),
    )
}

fn pending(h: &mut Harness<OrderSaga>, id: &str, user: &str) {
    let s = create(h, order(id, user, &[("p1", 1, 100)], Some("c")));
    assert!(s.inventory.is_empty(), "the coupon first");
    let s = reply(h, id, coupon(CouponReplyOutcome::Redeemed, None));
    assert_eq!(reserves(&s), vec![("p1", id, 1)]);
    assert!(s.status.is_empty());
    let s = reply(h, id, reserved("p1", 1));
    assert_eq!(s.status[0].state, OrderState::PaymentPending);
}

fn is_commit(c: &InventoryCommand) -> bool {
    matches!(c.command, InventoryAction::Commit { .. })
}

fn releases_coupon(s: &Sends) -> bool {
    matches!(
        &s.coupons[..],
        [CouponCommand {
            command: CouponAction::Release { .. },
            ..
        }]
    )
}

#[test]
fn an_approved_charge_pays_and_a_declined_one_fails_and_releases() {
    let mut h = saga();
    pending(&mut h, "o1", "alice");
    let s = pay(&mut h, "o1", PaymentKind::Charge, true);
    assert_eq!(
        (s.status[0].state, s.status[0].version),
        (OrderState::Paid, 3)
    );
    assert!(s.inventory.iter().all(is_commit) && s.inventory.len() == 1);
    assert!(s.coupons.is_empty(), "the coupon stays used");
    assert!(
        sends_nothing(pay(&mut h, "o1", PaymentKind::Charge, true)),
        "a repeat"
    );

    pending(&mut h, "o2", "bob");
    let s = pay(&mut h, "o2", PaymentKind::Charge, false);
    assert_eq!(s.status[0].state, OrderState::PaymentFailed);
    assert!(s.status[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("insufficient_funds"));
    assert!(s.inventory.iter().all(is_release) && releases_coupon(&s));
    h.commit();
    h.assert_restore_law();
}

#[test]
fn a_cancel_during_payment_waits_for_it_and_refunds_a_charge_that_went_through() {
    let mut h = saga();
    pending(&mut h, "o1", "alice");
    assert!(
        sends_nothing(cancel(&mut h, "o1", "alice", "k1")),
        "remembered, not answered yet"
    );
    let s = cancel(&mut h, "o1", "alice", "k2");
    assert_eq!(
        s.status[0].event,
        OrderEvent::CancelRefused,
        "a second cancel is answered"
    );
    assert!(s.status[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("in progress"));
    // The charge went through: refund first.
    let s = pay(&mut h, "o1", PaymentKind::Charge, true);
    assert!(s.status.is_empty() && s.inventory.is_empty());
    assert_eq!(s.payments.len(), 1);
    let r = &s.payments[0];
    assert_eq!(
        (r.kind, r.payment_id.clone(), r.refund_of.clone()),
        (PaymentKind::Refund, refund_id("o1"), Some(charge_id("o1")))
    );
    let s = pay(&mut h, "o1", PaymentKind::Refund, true);
    let st = &s.status[0];
    assert_eq!((st.state, st.version), (OrderState::Cancelled, 3));
    assert_eq!(st.cancel_request_id.as_deref(), Some("k1"));
    assert_eq!(st.refund_id, Some(refund_id("o1")));
    assert!(s.inventory.iter().all(is_release) && releases_coupon(&s));

    // Declined while cancelling: nothing to give back.
    pending(&mut h, "o2", "bob");
    cancel(&mut h, "o2", "bob", "k3");
    let s = pay(&mut h, "o2", PaymentKind::Charge, false);
    assert_eq!(s.status[0].state, OrderState::Cancelled);
    assert!(s.payments.is_empty() && releases_coupon(&s));
    h.commit();
    h.assert_restore_law();
}

#[test]
fn a_cancel_after_payment_refunds_then_returns_stock_and_coupon() {
    let mut h = saga();
    pending(&mut h, "o1", "alice");
    pay(&mut h, "o1", PaymentKind::Charge, true);
    let s = cancel(&mut h, "o1", "alice", "k1");
    assert!(s.status.is_empty(), "CANCELLED only once the money is back");
    assert_eq!(s.payments[0].kind, PaymentKind::Refund);
    assert_eq!(s.payments[0].amount, Money(100));
    let s = pay(&mut h, "o1", PaymentKind::Refund, true);
    let st = &s.status[0];
    assert_eq!(
        (st.state, st.version, st.event),
        (OrderState::Cancelled, 4, OrderEvent::Transition)
    );
    assert_eq!(st.refund_id, Some(refund_id("o1")));
    assert!(s.inventory.iter().all(is_release) && s.inventory.len() == 1 && releases_coupon(&s));
    let s = cancel(&mut h, "o1", "alice", "k2");
    assert!(s.status[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("already CANCELLED"));

    // A refund the provider refuses leaves the order paid; the cancel is refused.
    pending(&mut h, "o2", "bob");
    pay(&mut h, "o2", PaymentKind::Charge, true);
    cancel(&mut h, "o2", "bob", "k3");
    let s = pay(&mut h, "o2", PaymentKind::Refund, false);
    let st = &s.status[0];
    assert_eq!(
        (st.state, st.event),
        (OrderState::Paid, OrderEvent::CancelRefused)
    );
    assert_eq!(st.cancel_request_id.as_deref(), Some("k3"));
    assert!(s.inventory.is_empty() && s.coupons.is_empty());
    h.commit();
    h.assert_restore_law();
}

#[test]
fn an_unresolved_payment_expires_and_a_late_charge_is_refunded_without_reviving_the_order() {
    let mut h = saga();
    pending(&mut h, "o1", "alice");
    // The first tick sees the charge asked at 5 000; the timeout is 10 s. No
    // reply comes after it: once replies have been quiet for 5 s, wall time
    // less those 5 s stands in for theirs, so it expires at 20 000.
    assert!(sends(&h.tick(5_000).unwrap()).status.is_empty());
    assert!(sends(&h.tick(19_999).unwrap()).status.is_empty());
    let s = sends(&h.tick(20_000).unwrap());
    let st = &s.status[0];
    assert_eq!((st.state, st.version), (OrderState::Cancelled, 3));
    assert!(st.reason.as_deref().unwrap().contains("not resolved"));
    assert!(s.inventory.iter().all(is_release) && releases_coupon(&s));
    assert!(
        sends(&h.tick(30_000).unwrap()).status.is_empty(),
        "expires once"
    );

    let s = pay(&mut h, "o1", PaymentKind::Charge, true);
    assert!(
        s.status.is_empty(),
        "the late approval does not revive the order"
    );
    assert_eq!(s.payments[0].kind, PaymentKind::Refund);
    let s = pay(&mut h, "o1", PaymentKind::Refund, true);
    let st = &s.status[0];
    assert_eq!(
        (st.state, st.version, st.event),
        (OrderState::Cancelled, 3, OrderEvent::LateChargeRefunded)
    );
    assert_eq!(st.refund_id, Some(refund_id("o1")));
    assert!(
        s.inventory.is_empty() && s.coupons.is_empty(),
        "released once, at expiry"
    );
    h.commit();
    h.assert_restore_law();
}

#[test]
fn a_saga_behind_its_replies_does_not_expire_an_answer_waiting_in_its_own_input() {
    let mut h = saga();
    // The saga is 60 s behind: the reply that completes o1's holds is from
    // 1 500, and the saga reaches it at 61 000 (wall time). Its deadline
    // counts from then, not from the old record.
    pending(&mut h, "o1", "alice");
    assert!(sends(&h.tick(61_000).unwrap()).status.is_empty());
    // Replies keep coming (the backlog): while they are older than the
    // deadline, nothing expires however late the wall clock is.
    for t in [30_000, 70_000] {
        let r = OrderReply {
            order_id: "other".into(),
            reply: reserved("p9", 1),
            replied_at: at(t),
        };
        h.feed(REPLIES, "o1", SagaInput::Reply(r), t).unwrap();
        assert!(sends(&h.tick(80_000 + t).unwrap()).status.is_empty());
    }
    let s = pay(&mut h, "o1", PaymentKind::Charge, true);
    assert_eq!(s.status[0].state, OrderState::Paid, "answered in time");
    // When the replies reach past the deadline without an answer, it expires.
    pending(&mut h, "o2", "bob");
    assert!(sends(&h.tick(151_000).unwrap()).status.is_empty());
    let r = OrderReply {
        order_id: "other".into(),
        reply: reserved("p9", 1),
        replied_at: at(161_000),
    };
    h.feed(REPLIES, "o2", SagaInput::Reply(r), 161_000).unwrap();
    let s = sends(&h.tick(161_001).unwrap());
    assert_eq!(
        s.status
            .iter()
            .map(|s| (s.order_id.as_str(), s.state))
            .collect::<Vec<_>>(),
        [("o2", OrderState::Cancelled)]
    );
    h.commit();
    h.assert_restore_law();
}

#[test]
fn a_cancel_read_before_its_order_is_refused_once_and_the_order_proceeds() {
    let mut h = saga();
    let s = cancel(&mut h, "o1", "alice", "k1");
    assert_eq!(s.status[0].reason.as_deref(), Some("unknown order"));
    assert!(
        sends_nothing(cancel(&mut h, "o1", "alice", "k1")),
        "a retry is not answered again"
    );
    let s = cancel(&mut h, "o1", "alice", "k2");
    assert_eq!(
        s.status[0].event,
        OrderEvent::CancelRefused,
        "another request is answered"
    );
    // The order-create comes after all: it gets its saga.
    let s = create(&mut h, order("o1", "alice", &[("p1", 1, 100)], None));
    assert_eq!(
        (s.status[0].state, s.status[0].version),
        (OrderState::Created, 1)
    );
    assert_eq!(s.inventory.len(), 1);
    assert!(
        sends_nothing(cancel(&mut h, "o1", "alice", "k1")),
        "still answered once"
    );
    let s = cancel(&mut h, "o1", "alice", "k3");
    assert_eq!(s.status[0].state, OrderState::Cancelled);
    h.commit();
    h.assert_restore_law();
}

#[test]
fn orders_that_break_the_rules_are_rejected_before_anything_is_asked() {
    let cases: Vec<(OrderCreate, &str)> = vec![
        (
            OrderCreate {
                currency: "XXX".into(),
                ..order("o1", "u", &[("p", 1, 1)], None)
            },
            "currency",
        ),
        (order("o2", "u", &[("p", 1, -1)], None), "negative"),
        (
            order(
                "o3",
                "u",
                &[("a", 1, 1), ("b", 1, 1), ("c", 1, 1), ("d", 1, 1)],
                None,
            ),
            "at most 3",
        ),
        (
            order("o4", "u", &[("p", 1, 1), ("p", 2, 1)], None),
            "more than one line",
        ),
        (order("o5", "u", &[("p", 20_000, 1)], None), "quantity"),
        (
            order("o6", "u", &[("p", 10_000, i64::MAX / 2)], None),
            "18 digits",
        ),
    ];
    let mut h = saga();
    for (o, why) in cases {
        let s = create(&mut h, o);
        let st = &s.status[0];
        assert_eq!((st.state, st.version), (OrderState::Rejected, 1), "{why}");
        assert!(
            st.reason.as_deref().unwrap().contains(why),
            "{why}: {:?}",
            st.reason
        );
        assert!(s.inventory.is_empty() && s.coupons.is_empty() && s.payments.is_empty());
    }
}

#[test]
fn a_repeated_order_create_gets_no_second_saga() {
    // The same order again; another order under the same id is
    // dead-lettered (tests/order_ids.rs).
    let mut h = saga();
    create(&mut h, order("o1", "u", &[("p1", 1, 100)], None));
    assert!(sends_nothing(create(
        &mut h,
        order("o1", "u", &[("p1", 1, 100)], None)
    )));
}

#[test]
fn a_fully_discounted_order_is_paid_without_a_charge() {
    let mut h = saga();
    create(&mut h, order("o1", "u", &[("p1", 1, 300)], Some("c")));
    let s = reply(
        &mut h,
        "o1",
        coupon(
            CouponReplyOutcome::Redeemed,
            Some(Discount::fixed(Money(500))),
        ),
    );
    // Redeemed: p1 is asked now; nothing is decided before its answer.
    assert_eq!(reserves(&s), vec![("p1", "o1", 1)]);
    assert!(s.status.is_empty() && s.payments.is_empty());
    let s = reply(&mut h, "o1", reserved("p1", 1));
    assert_eq!(
        (s.status[0].state, s.status[0].total),
        (OrderState::Paid, Money(0))
    );
    assert!(s.payments.is_empty());
    assert!(matches!(
        &s.inventory[..],
        [InventoryCommand {
            command: InventoryAction::Commit { .. },
            ..
        }]
    ));

    // Cancelled after: nothing was charged, so nothing is refunded (a refund
    // of 0 would break payment-request's contract); stock and coupon go
    // back at once.
    let s = cancel(&mut h, "o1", "u", "k1");
    assert!(s.payments.is_empty(), "no refund of a charge never made");
    let st = &s.status[0];
    assert_eq!(
        (st.state, st.event, st.cancel_request_id.as_deref()),
        (OrderState::Cancelled, OrderEvent::Transition, Some("k1"))
    );
    assert!(s.inventory.iter().all(is_release) && s.inventory.len() == 1 && releases_coupon(&s));
    h.commit();
    h.assert_restore_law();
}

#[test]
fn abort_replay_and_restart_decide_the_same_way() {
    let mut h = saga();
    create(
        &mut h,
        order("o1", "u", &[("p1", 1, 100), ("p2", 1, 100)], None),
    );
    h.commit();
    reply(&mut h, "o1", reserved("p1", 1));
    let first = h.pending().to_vec();
    let replayed = h.abort_and_replay();
    assert_eq!(
        replayed, first,
        "a replay after an abort sends the same records"
    );
    h.commit();
    // A crash after the commit: the restored book continues the saga.
    h.crash_and_restore();
    let s = reply(&mut h, "o1", reserved("p2", 1));
    assert_eq!(
        (s.status[0].state, s.status[0].version),
        (OrderState::PaymentPending, 2)
    );
    h.commit();
    h.assert_restore_law();
}

#[test]
fn versions_rise_by_one_and_each_order_ends_once() {
    let mut h = saga();
    for i in 0..50 {
        let id = format!("o{i}");
        create(
            &mut h,
            order(
                &id,
                "u",
                &[("p1", 1, 100), ("p2", 1, 100)],
                (i % 2 == 0).then_some("c"),
            ),
        );
        match i % 5 {
            0 => {
                cancel(&mut h, &id, "u", "k");
            }
            1 => {
                if i % 2 == 0 {
                    // A coupon order asks its stock once the coupon is redeemed.
                    reply(&mut h, &id, coupon(CouponReplyOutcome::Redeemed, None));
                }
                reply(&mut h, &id, stock("p1", StockOutcome::UnknownProduct, 1));
            }
            _ => {
                if i % 2 == 0 {
                    reply(&mut h, &id, coupon(CouponReplyOutcome::Redeemed, None));
                }
                reply(&mut h, &id, reserved("p2", 1));
                reply(&mut h, &id, reserved("p1", 1));
            }
        }
        cancel(&mut h, &id, "u", "late");
        reply(&mut h, &id, reserved("p1", 1));
    }
    h.commit();
    let mut by_order: std::collections::BTreeMap<String, Vec<OrderStatus>> = Default::default();
    for s in h.committed_on(STATUS) {
        let st: OrderStatus = decode(&readers().status, s);
        if st.event == OrderEvent::Transition {
            by_order.entry(st.order_id.clone()).or_default().push(st);
        }
    }
    assert_eq!(by_order.len(), 50);
    for (id, history) in by_order {
        let versions: Vec<i32> = history.iter().map(|s| s.version).collect();
        assert_eq!(
            versions,
            (1..=history.len() as i32).collect::<Vec<_>>(),
            "{id}"
        );
        let ends = history
            .iter()
            .filter(|s| s.state.is_terminal() || s.state == OrderState::PaymentPending)
            .count();
        assert_eq!(
            ends, 1,
            "{id}: one terminal or PAYMENT_PENDING outcome: {history:?}"
        );
        // Each path reached the outcome it was played for, coupon or not.
        let i: usize = id[1..].parse().unwrap();
        let expected = match i % 5 {
            0 => OrderState::Cancelled,
            1 => OrderState::Rejected,
            _ => OrderState::PaymentPending,
        };
        assert_eq!(history.last().unwrap().state, expected, "{id}: {history:?}");
    }
    h.assert_restore_law();
}

/// The order of a coupon order's steps: the coupon is asked alone, and
/// stock only once it is redeemed, so an order refused for its coupon (or
/// cancelled before) never holds units another order is refused for.
#[test]
fn a_coupon_order_asks_its_coupon_first_and_holds_no_stock_until_redeemed() {
    let mut h = saga();
    let s = create(
        &mut h,
        order(
            "o1",
            "alice",
            &[("p1", 2, 1_000), ("p2", 1, 500)],
            Some("c"),
        ),
    );
    assert_eq!(
        s.status
            .iter()
            .map(|st| (st.state, st.version))
            .collect::<Vec<_>>(),
        [(OrderState::Created, 1)]
    );
    assert_eq!(s.inventory.len(), 0, "no stock asked: {:?}", s.inventory);
    assert!(matches!(
        &s.coupons[..],
        [CouponCommand { command: CouponAction::Redeem { order_id, user_id }, coupon_id, .. }]
            if order_id == "o1" && user_id == "alice" && coupon_id == "c"
    ));
    assert!(s.payments.is_empty());

    // A stock answer before the redemption answers nothing asked: ignored.
    let p = h.partition_of(CREATE, "o1");
    let book = h.state(p).clone();
    assert!(sends_nothing(reply(&mut h, "o1", reserved("p1", 2))));
    assert_eq!(h.state(p), &book, "the waiting line is not held by it");

    // Redeemed: one Reserve per line, for its product and quantity; no
    // status until the stock answers.
    let s = reply(
        &mut h,
        "o1",
        coupon(
            CouponReplyOutcome::Redeemed,
            Some(Discount::fixed(Money(300))),
        ),
    );
    assert_eq!(reserves(&s), vec![("p1", "o1", 2), ("p2", "o1", 1)]);
    assert!(s.status.is_empty() && s.payments.is_empty() && s.coupons.is_empty());
    // A repeated redemption asks nothing twice.
    assert!(sends_nothing(reply(
        &mut h,
        "o1",
        coupon(CouponReplyOutcome::Redeemed, None)
    )));

    // Every line held: PAYMENT_PENDING, one charge for the discounted amount.
    assert!(sends_nothing(reply(&mut h, "o1", reserved("p1", 2))));
    let s = reply(&mut h, "o1", reserved("p2", 1));
    let st = &s.status[0];
    assert_eq!(s.status.len(), 1);
    assert_eq!((st.state, st.version), (OrderState::PaymentPending, 2));
    // 2 500 total less the fixed 300.
    assert_eq!(st.total, Money(2_200));
    assert!(matches!(
        &s.payments[..],
        [PaymentRequest { kind: PaymentKind::Charge, amount: Money(2_200), payment_id, order_id, .. }]
            if *payment_id == charge_id("o1") && order_id == "o1"
    ));
    assert!(s.inventory.is_empty() && s.coupons.is_empty());

    // o2 is refused by its coupon: REJECTED at once, nothing asked of the
    // inventory, and a later stock answer changes nothing.
    let s = create(&mut h, order("o2", "bob", &[("p1", 1, 100)], Some("c")));
    assert_eq!((s.inventory.len(), s.coupons.len()), (0, 1));
    assert!(sends_nothing(reply(&mut h, "o2", reserved("p1", 1))));
    let s = reply(
        &mut h,
        "o2",
        coupon(CouponReplyOutcome::RedeemRejected, None),
    );
    let st = &s.status[0];
    assert_eq!((st.state, st.version), (OrderState::Rejected, 2));
    assert!(
        st.reason
            .as_deref()
            .unwrap()
            .contains("coupon c cannot be used"),
        "{st:?}"
    );
    assert!(s.inventory.is_empty(), "nothing was reserved");
    assert!(s.coupons.is_empty(), "the refused coupon holds nothing");
    assert!(s.payments.is_empty());
    assert!(sends_nothing(reply(&mut h, "o2", reserved("p1", 1))));

    // o3 is cancelled before its redemption: CANCELLED, its coupon released,
    // and no inventory command (its lines were never asked).
    let s = create(
        &mut h,
        order("o3", "carol", &[("p1", 1, 100), ("p2", 1, 100)], Some("c")),
    );
    assert_eq!((s.inventory.len(), s.coupons.len()), (0, 1));
    let s = cancel(&mut h, "o3", "carol", "k1");
    let st = &s.status[0];
    assert_eq!(
        (
            st.state,
            st.version,
            st.event,
            st.cancel_request_id.as_deref()
        ),
        (OrderState::Cancelled, 2, OrderEvent::Transition, Some("k1"))
    );
    assert!(matches!(
        &s.coupons[..],
        [CouponCommand { command: CouponAction::Release { order_id }, coupon_id, .. }]
            if order_id == "o3" && coupon_id == "c"
    ));
    assert_eq!(s.inventory.len(), 0, "no Release of stock never asked");
    assert!(s.payments.is_empty());
    // The redemption answered after the cancel asks no stock either (the
    // coupon Release follows it on the coupon's partition).
    assert!(sends_nothing(reply(
        &mut h,
        "o3",
        coupon(CouponReplyOutcome::Redeemed, None)
    )));

    h.commit();
    let mut asked: std::collections::BTreeMap<String, usize> = Default::default();
    for s in h.committed_on(INVENTORY) {
        let c: InventoryCommand = decode(&readers().inventory, s);
        *asked
            .entry(c.command.order_id().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        asked.into_iter().collect::<Vec<_>>(),
        [("o1".to_string(), 2)],
        "only o1's two Reserves, ever"
    );
    h.assert_restore_law();
}
