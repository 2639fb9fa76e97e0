//! An order id identifies one order: an order-create repeating an order id
//! with the same content (user, currency, coupon, lines — not the time it
//! was sent) is an upstream retry and sends nothing; one with another
//! content is a different order under a reused id, dead-lettered as
//! `order_id_reused` in the same transaction, never dropped silently and
//! never mixed into the first order's saga. Orders restored from a
//! changelog written before fingerprints are unchecked (any repeat is a
//! retry, as before). Run through the engine's in-process harness
//! (savepoints, commits, restarts from the committed changelog), no
//! services.

use surge_core::settings::OrdersSettings;
use surge_engine::harness::{Harness, Sent};
use surge_engine::{Context, Incoming, Millis, Processor, Reject};
use surge_order::book::OrderChange;
use surge_order::inputs::{CANCEL, CREATE, REPLIES};
use surge_order::{Order, OrderBook, OrderSaga, SagaInput, Stage, ORDER_ID_REUSED};
use surge_schemas::order::{
    CouponReply, CouponReplyOutcome, OrderCancel, OrderCreate, OrderEvent, OrderReply, OrderState,
    OrderStatus, Reply, StockOutcome, StockReply,
};
use surge_schemas::TopicCodec;

mod common;

use common::{at, harness, COUPONS, INVENTORY, STATUS};

/// The saga, plus one input of the test's own: an order entry put in the
/// book as it stands (to write a changelog entry of the layout before
/// fingerprints, which the saga of this version no longer writes).
struct Seeded(OrderSaga);

#[derive(Debug, Clone)]
enum Input {
    Saga(SagaInput),
    Seed(Box<Order>),
}

impl Processor for Seeded {
    type Input = Input;
    type State = OrderBook;

    fn process(
        &mut self,
        ctx: &mut Context<'_, OrderBook>,
        input: Incoming<Input>,
    ) -> Result<(), Reject> {
        match input.message {
            Input::Saga(message) => self.0.process(
                ctx,
                Incoming {
                    message,
                    input: input.input,
                    partition: input.partition,
                    offset: input.offset,
                    timestamp: input.timestamp,
                },
            ),
            Input::Seed(order) => {
                let before = ctx.state().order(&order.order_id).cloned().map(Box::new);
                ctx.apply(OrderChange {
                    before,
                    after: order,
                });
                Ok(())
            }
        }
    }

    fn tick_interval(&self) -> Option<std::time::Duration> {
        self.0.tick_interval()
    }

    fn tick(&mut self, ctx: &mut Context<'_, OrderBook>, now: Millis) -> Result<(), Reject> {
        self.0.tick(ctx, now)
    }
}

fn saga() -> Harness<Seeded> {
    harness(Seeded(common::saga(OrdersSettings::default())))
}

fn statuses<'a>(sent: impl IntoIterator<Item = &'a Sent>) -> Vec<OrderStatus> {
    static CODEC: std::sync::OnceLock<TopicCodec<OrderStatus>> = std::sync::OnceLock::new();
    let codec = CODEC.get_or_init(|| TopicCodec::offline(1));
    sent.into_iter()
        .filter(|s| s.topic == STATUS)
        .map(|s| futures::executor::block_on(codec.decode(s.payload.as_deref())).expect("decodes"))
        .collect()
}

/// Order o1 (every order of these tests shares the id).
fn order(user: &str, lines: &[(&str, i32, i64)], coupon: Option<&str>) -> OrderCreate {
    common::order("o1", user, lines, coupon)
}

/// alice's order o1: two lines and a coupon.
fn first() -> OrderCreate {
    order("alice", &[("p1", 2, 1_000), ("p2", 1, 500)], Some("c"))
}

fn feed(h: &mut Harness<Seeded>, input: usize, key: &str, m: SagaInput, ts: Millis) -> Vec<Sent> {
    h.feed(input, key, Input::Saga(m), ts)
        .unwrap_or_else(|e| panic!("{key}: rejected: {e}"))
}

fn create_at(h: &mut Harness<Seeded>, c: OrderCreate, ts: Millis) -> Result<Vec<Sent>, Reject> {
    let key = c.order_id.clone();
    h.feed(CREATE, &key, Input::Saga(SagaInput::Create(c)), ts)
}

fn create(h: &mut Harness<Seeded>, c: OrderCreate) -> Vec<Sent> {
    create_at(h, c, 1_000).expect("decided")
}

/// Feeds `c` and expects it dead-lettered as a reused order id, with
/// nothing sent and the book unchanged; returns the dead letter's message.
fn feed_reused(h: &mut Harness<Seeded>, c: OrderCreate) -> String {
    let what = format!("{c:?}");
    let p = h.partition_of(CREATE, &c.order_id);
    let book = h.state(p).clone();
    let (pending, letters) = (h.pending().len(), h.dead_letters().len());
    let message = match create_at(h, c, 3_000) {
        Err(Reject::Poison { reason, message }) => {
            assert_eq!(reason, ORDER_ID_REUSED, "{what}");
            message
        }
        Err(e) => panic!("{what}: rejected for a retry: {e}"),
        Ok(sent) => panic!("{what}: a reused order id was not dead-lettered; sent {sent:?}"),
    };
    assert_eq!(h.pending().len(), pending, "{what}: nothing sent");
    assert_eq!(h.state(p), &book, "{what}: the book is unchanged");
    assert_eq!(h.dead_letters().len(), letters + 1);
    assert_eq!(
        h.dead_letters().last().unwrap(),
        &(CREATE, p, ORDER_ID_REUSED.to_string()),
        "dead-lettered from order-create, on the partition owning the order"
    );
    message
}

fn reply(h: &mut Harness<Seeded>, reply: Reply) -> Vec<Sent> {
    let r = OrderReply {
        order_id: "o1".into(),
        reply,
        replied_at: at(1_500),
    };
    feed(h, REPLIES, "o1", SagaInput::Reply(r), 1_500)
}

/// How many of `sent` went to `topic`.
fn on(sent: &[Sent], topic: &str) -> usize {
    sent.iter().filter(|s| s.topic == topic).count()
}

fn reserved(product: &str, quantity: i32) -> Reply {
    Reply::Stock(StockReply {
        product_id: product.into(),
        outcome: StockOutcome::Reserved,
        quantity,
        available: 0,
    })
}

fn redeemed() -> Reply {
    Reply::Coupon(CouponReply {
        coupon_id: "c".into(),
        outcome: CouponReplyOutcome::Redeemed,
        reason: None,
        discount: None,
    })
}

fn cancel(h: &mut Harness<Seeded>, user: &str, request: &str) -> Vec<Sent> {
    let k = OrderCancel {
        request_id: request.into(),
        order_id: "o1".into(),
        user_id: user.into(),
        reason: None,
        requested_at: at(2_000),
    };
    feed(h, CANCEL, "o1", SagaInput::Cancel(k), 2_000)
}

/// (state, version) of every order-status transition of o1 committed so far.
fn history(h: &Harness<Seeded>) -> Vec<(OrderState, i32)> {
    statuses(h.committed())
        .into_iter()
        .filter(|s| s.order_id == "o1" && s.event == OrderEvent::Transition)
        .map(|s| (s.state, s.version))
        .collect()
}

fn o1(h: &Harness<Seeded>) -> Order {
    let p = h.partition_of(CREATE, "o1");
    h.state(p).order("o1").expect("o1 is in the book").clone()
}

/// Every differing order, with what its dead letter must say.
fn other_orders() -> Vec<(OrderCreate, &'static str)> {
    let mut usd = first();
    usd.currency = "USD".into();
    vec![
        (
            order("alice", &[("p1", 3, 1_000), ("p2", 1, 500)], Some("c")),
            "items [p1 x3 at 10.00, p2 x1 at 5.00] (the order's: [p1 x2 at 10.00, p2 x1 at 5.00])",
        ),
        (
            order("alice", &[("p1", 2, 1_000), ("p3", 1, 500)], Some("c")),
            "items [p1 x2 at 10.00, p3 x1 at 5.00]",
        ),
        (
            order("alice", &[("p1", 2, 900), ("p2", 1, 500)], Some("c")),
            "items [p1 x2 at 9.00, p2 x1 at 5.00]",
        ),
        (
            order("alice", &[("p1", 2, 1_000)], Some("c")),
            "items [p1 x2 at 10.00] (the order's",
        ),
        (
            order("bob", &[("p1", 2, 1_000), ("p2", 1, 500)], Some("c")),
            "user bob (the order's: alice)",
        ),
        (
            order("alice", &[("p1", 2, 1_000), ("p2", 1, 500)], Some("d")),
            "coupon d (the order's: c)",
        ),
        (
            order("alice", &[("p1", 2, 1_000), ("p2", 1, 500)], None),
            "coupon none (the order's: c)",
        ),
        (usd, "currency USD (the order's: KRW)"),
    ]
}

#[test]
fn the_same_order_again_is_a_retry_and_sends_nothing() {
    let mut h = saga();
    let s = statuses(&create(&mut h, first()));
    assert_eq!((s[0].state, s[0].version), (OrderState::Created, 1));
    let book = o1(&h);
    assert!(book.fingerprint.is_some(), "kept with the order");

    // Sent again later, in the same transaction or a later one, with a new
    // requestedAt and the lines in another order: the same order.
    let mut again = first();
    again.requested_at = at(60_000);
    assert!(create_at(&mut h, again.clone(), 60_000).unwrap().is_empty());
    h.commit();
    again.items.reverse();
    assert!(create_at(&mut h, again.clone(), 61_000).unwrap().is_empty());
    assert_eq!(o1(&h), book, "a retry changes nothing");

    // Still a retry once the saga moved on: the coupon first (its
    // redemption asks both lines), then the stock.
    assert_eq!(on(&reply(&mut h, redeemed()), INVENTORY), 2);
    reply(&mut h, reserved("p1", 2));
    let s = statuses(&reply(&mut h, reserved("p2", 1)));
    assert_eq!((s[0].state, s[0].version), (OrderState::PaymentPending, 2));
    assert!(create_at(&mut h, again, 62_000).unwrap().is_empty());
    h.commit();
    assert!(h.dead_letters().is_empty());
    assert_eq!(
        history(&h),
        [(OrderState::Created, 1), (OrderState::PaymentPending, 2)]
    );
    h.assert_restore_law();
}

#[test]
fn another_order_under_a_used_id_is_dead_lettered_and_changes_nothing() {
    let mut h = saga();
    create(&mut h, first());
    // In the transaction that created the order, before any commit.
    let m = feed_reused(&mut h, order("bob", &[("p9", 1, 100)], None));
    assert!(m.contains("order id o1"), "{m}");
    assert!(m.contains("user bob (the order's: alice)"), "{m}");
    assert!(m.contains("coupon none (the order's: c)"), "{m}");
    assert!(m.contains("items [p9 x1 at 1.00]"), "{m}");
    h.commit();

    for (other, says) in other_orders() {
        let m = feed_reused(&mut h, other);
        assert!(m.contains(says), "expected {says:?} in {m:?}");
        assert!(m.contains("CREATED, version 1"), "{m}");
    }
    h.commit();
    assert_eq!(history(&h), [(OrderState::Created, 1)], "no order-status");
    // A coupon order asks its coupon first: no Reserve yet.
    assert_eq!(
        h.committed().len(),
        1 + 1,
        "only the first order's status and redemption"
    );
    assert_eq!(on(h.committed(), COUPONS), 1);

    // The first order's saga goes on as if nothing happened.
    assert_eq!(on(&reply(&mut h, redeemed()), INVENTORY), 2);
    reply(&mut h, reserved("p1", 2));
    reply(&mut h, reserved("p2", 1));
    h.commit();
    assert_eq!(
        history(&h),
        [(OrderState::Created, 1), (OrderState::PaymentPending, 2)]
    );
    // And a reuse once it has moved on is told as well.
    let m = feed_reused(&mut h, order("bob", &[("p1", 2, 1_000)], None));
    assert!(m.contains("PAYMENT_PENDING, version 2"), "{m}");
    h.assert_restore_law();
}

#[test]
fn a_rejected_order_keeps_its_id() {
    // Broke a rule (a currency not accepted): REJECTED, nothing asked. The
    // same id with a fixed order is still another order, not a retry.
    let mut h = saga();
    let mut bad = first();
    bad.currency = "XYZ".into();
    let s = statuses(&create(&mut h, bad.clone()));
    assert_eq!((s[0].state, s[0].version), (OrderState::Rejected, 1));
    assert!(create(&mut h, bad).is_empty(), "its retry");
    let m = feed_reused(&mut h, first());
    assert!(m.contains("currency KRW (the order's: XYZ)"), "{m}");
    assert!(m.contains("REJECTED, version 1"), "{m}");
    h.commit();
    assert_eq!(history(&h), [(OrderState::Rejected, 1)]);
}

#[test]
fn reuse_is_told_after_a_restart_from_the_changelog() {
    let mut h = saga();
    create(&mut h, first());
    // Mid-saga: redeemed (both lines asked), one line held.
    assert_eq!(on(&reply(&mut h, redeemed()), INVENTORY), 2);
    reply(&mut h, reserved("p1", 2));
    h.commit();
    h.restart();
    let restored = o1(&h);
    assert!(
        restored.fingerprint.is_some(),
        "restored with its fingerprint"
    );

    let mut again = first();
    again.requested_at = at(90_000);
    assert!(
        create_at(&mut h, again, 90_000).unwrap().is_empty(),
        "a retry"
    );
    for (other, says) in other_orders() {
        let m = feed_reused(&mut h, other);
        assert!(m.contains(says), "expected {says:?} in {m:?}");
    }
    // A crash with reuses uncommitted: they are read again and
    // dead-lettered again, the book as it was.
    let letters = h.dead_letters().len();
    let replayed = h.crash_and_restore();
    assert!(replayed.is_empty());
    assert_eq!(h.dead_letters().len(), letters + other_orders().len());
    assert_eq!(o1(&h), restored);

    // The saga continues from the restored book.
    let s = statuses(&reply(&mut h, reserved("p2", 1)));
    assert_eq!((s[0].state, s[0].version), (OrderState::PaymentPending, 2));
    h.commit();
    h.assert_restore_law();
}

#[test]
fn an_order_restored_from_the_layout_before_fingerprints_is_unchecked() {
    let mut h = saga();
    create(&mut h, first());
    h.commit();
    // The entry as the version before fingerprints wrote it.
    let mut old = o1(&h);
    old.fingerprint = None;
    let p = h.partition_of(CREATE, "o1");
    h.feed(CREATE, "o1", Input::Seed(Box::new(old.clone())), 1_000)
        .unwrap();
    h.commit();
    let (key, value) = h.changelog(p).last().unwrap().clone();
    assert_eq!(key, b"o1");
    let text = String::from_utf8(value.unwrap()).unwrap();
    assert!(!text.contains("fingerprint"), "the old layout: {text}");

    h.restart();
    assert_eq!(o1(&h), old, "restored unchecked");
    // Any repeat is taken as a retry, as before fingerprints existed.
    for (other, _) in other_orders() {
        assert!(create(&mut h, other).is_empty());
    }
    assert!(create(&mut h, first()).is_empty());
    assert!(h.dead_letters().is_empty());
    assert_eq!(o1(&h), old);
    // And the saga goes on: the coupon first, then the stock it asks.
    assert_eq!(on(&reply(&mut h, redeemed()), INVENTORY), 2);
    reply(&mut h, reserved("p1", 2));
    let s = statuses(&reply(&mut h, reserved("p2", 1)));
    assert_eq!((s[0].state, s[0].version), (OrderState::PaymentPending, 2));
    h.commit();
    h.assert_restore_law();
}

#[test]
fn an_order_create_after_an_early_cancel_gets_its_saga_and_its_id() {
    let mut h = saga();
    // A cancel read before its order: refused as unknown, remembered in a
    // placeholder that has no fingerprint.
    let s = statuses(&cancel(&mut h, "alice", "k1"));
    assert_eq!(s[0].reason.as_deref(), Some("unknown order"));
    let placeholder = o1(&h);
    assert!(placeholder.awaiting_create && placeholder.fingerprint.is_none());
    h.commit();

    // The order-create is the order, whatever the placeholder holds.
    let sent = create(&mut h, first());
    let s = statuses(&sent);
    assert_eq!((s[0].state, s[0].version), (OrderState::Created, 1));
    // A coupon order asks its coupon first: no Reserve yet.
    assert_eq!(on(&sent, INVENTORY), 0);
    assert_eq!(on(&sent, COUPONS), 1);
    let o = o1(&h);
    assert!(!o.awaiting_create && o.fingerprint.is_some());
    assert_eq!(o.cancels, ["k1"], "the early cancel stays answered");

    assert!(create(&mut h, first()).is_empty(), "a retry");
    let m = feed_reused(
        &mut h,
        order("bob", &[("p1", 2, 1_000), ("p2", 1, 500)], Some("c")),
    );
    assert!(m.contains("user bob (the order's: alice)"), "{m}");
    h.commit();
    h.restart();
    feed_reused(&mut h, order("alice", &[("p1", 1, 1_000)], Some("c")));
    assert!(cancel(&mut h, "alice", "k1").is_empty(), "answered once");
    let s = statuses(&cancel(&mut h, "alice", "k2"));
    assert_eq!((s[0].state, s[0].version), (OrderState::Cancelled, 2));
    assert_eq!(o1(&h).stage, Stage::Cancelled);
    h.commit();
    h.assert_restore_law();
}
