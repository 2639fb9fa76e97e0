//! The inventory rules against the engine's contract, in process: every rule
//! with its exact outputs, repeats and replays, and a seeded randomized run
//! with aborts and crashes checked against a run without them.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::executor::block_on;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use surge_engine::harness::{Harness, Sent};
use surge_engine::laws::{assert_apply_revert_identity, assert_restore_rebuilds, changelog_of};
use surge_engine::PartitionState;

use super::*;

const COMMANDS: &str = "inventory-commands";
const EVENTS: &str = "inventory-result";
const REPLIES: &str = "order-replies";
const IN_PARTITIONS: i32 = 3;
const REPLY_PARTITIONS: i32 = 5;
const T0: i64 = 1_700_000_000_000;

fn processor() -> InventoryProcessor {
    InventoryProcessor::new(
        TopicCodec::offline(11),
        TopicCodec::offline(12),
        EVENTS.to_string(),
        REPLIES.to_string(),
    )
}

fn harness() -> Harness<InventoryProcessor> {
    Harness::new(
        processor(),
        &[(COMMANDS, IN_PARTITIONS)],
        &[(EVENTS, IN_PARTITIONS), (REPLIES, REPLY_PARTITIONS)],
    )
}

thread_local! {
    // One codec per thread: building one builds a registry client, which
    // costs milliseconds.
    static EVENT_CODEC: TopicCodec<InventoryEvent> = TopicCodec::offline(11);
    static REPLY_CODEC: TopicCodec<OrderReply> = TopicCodec::offline(12);
}

fn event_of(sent: &Sent) -> InventoryEvent {
    assert_eq!(sent.topic, EVENTS);
    EVENT_CODEC
        .with(|c| block_on(c.decode(sent.payload.as_deref())))
        .expect("an event decodes")
}

fn reply_of(sent: &Sent) -> OrderReply {
    assert_eq!(sent.topic, REPLIES);
    REPLY_CODEC
        .with(|c| block_on(c.decode(sent.payload.as_deref())))
        .expect("a reply decodes")
}

fn command(request: &str, product: &str, command: InventoryAction) -> InventoryCommand {
    InventoryCommand {
        request_id: request.into(),
        product_id: product.into(),
        requested_at: DateTime::from_timestamp_millis(T0 - 1).unwrap(),
        command,
    }
}
fn create(request: &str, product: &str, stock: i64) -> InventoryCommand {
    command(request, product, InventoryAction::CreateProduct { stock })
}
fn adjust(request: &str, product: &str, delta: i64) -> InventoryCommand {
    command(
        request,
        product,
        InventoryAction::AdjustStock {
            delta,
            reason: Some("recount".into()),
        },
    )
}
fn reserve(request: &str, product: &str, order: &str, quantity: i32) -> InventoryCommand {
    command(
        request,
        product,
        InventoryAction::Reserve {
            order_id: order.into(),
            quantity,
        },
    )
}
fn release(request: &str, product: &str, order: &str) -> InventoryCommand {
    command(
        request,
        product,
        InventoryAction::Release {
            order_id: order.into(),
            reason: "CANCELLED".into(),
        },
    )
}
fn commit(request: &str, product: &str, order: &str) -> InventoryCommand {
    command(
        request,
        product,
        InventoryAction::Commit {
            order_id: order.into(),
        },
    )
}

fn stock(created: i64, available: i64, reserved: i64, sold: i64) -> Stock {
    Stock {
        created,
        available,
        reserved,
        sold,
    }
}

/// Feeds commands one by one and checks every output against the exact
/// event and reply expected, tracking offsets and timestamps itself.
struct Script {
    h: Harness<InventoryProcessor>,
    offsets: HashMap<i32, i64>,
    ts: i64,
}

impl Script {
    fn new() -> Self {
        Self {
            h: harness(),
            offsets: HashMap::new(),
            ts: T0,
        }
    }

    /// Feeds `cmd` and asserts it decided `outcome` with `quantity`, the
    /// product's stock `after`, `reason`, and (for a saga command) the
    /// matching reply at the partition of its order id.
    fn expect(
        &mut self,
        cmd: InventoryCommand,
        outcome: InventoryOutcome,
        quantity: i32,
        after: Stock,
        reason: Option<&str>,
    ) {
        self.ts += 10;
        let partition = self.h.partition_of(0, &cmd.product_id);
        let offset = {
            let o = self.offsets.entry(partition).or_insert(0);
            *o += 1;
            *o - 1
        };
        let order_id = cmd.command.order_id().map(str::to_string);
        let sent = self
            .h
            .feed(0, &cmd.product_id.clone(), cmd.clone(), self.ts)
            .expect("decided");
        let at = DateTime::from_timestamp_millis(self.ts).unwrap();
        let expected = InventoryEvent {
            request_id: cmd.request_id.clone(),
            product_id: cmd.product_id.clone(),
            order_id: order_id.clone(),
            outcome,
            quantity,
            available: after.available,
            reserved: after.reserved,
            sold: after.sold,
            created: after.created,
            reason: reason.map(str::to_string),
            source_partition: partition,
            source_offset: offset,
            decided_at: at,
        };
        assert_eq!(
            sent[0].partition, partition,
            "event at the input's partition"
        );
        assert_eq!(sent[0].key, cmd.product_id.as_bytes());
        assert_eq!(event_of(&sent[0]), expected, "event for {cmd:?}");
        match order_id {
            None => assert_eq!(sent.len(), 1, "an admin command is not replied to"),
            Some(order) => {
                assert_eq!(sent.len(), 2, "one event and one reply for {cmd:?}");
                assert_eq!(
                    sent[1].partition,
                    surge_kafka::partition_for(order.as_bytes(), REPLY_PARTITIONS)
                );
                assert_eq!(sent[1].key, order.as_bytes());
                let expected = OrderReply {
                    order_id: order,
                    reply: Reply::Stock(StockReply {
                        product_id: cmd.product_id.clone(),
                        outcome: stock_outcome(outcome).unwrap(),
                        quantity,
                        available: after.available,
                    }),
                    replied_at: at,
                };
                assert_eq!(reply_of(&sent[1]), expected, "reply for {cmd:?}");
            }
        }
        let state = self.h.state(partition);
        match state.stock(&cmd.product_id) {
            Some(s) => assert_eq!(*s, after, "state after {cmd:?}"),
            None => assert_eq!(after, Stock::default(), "unknown product after {cmd:?}"),
        }
    }

    /// Feeds `cmd` and asserts nothing at all was sent.
    fn expect_silence(&mut self, cmd: InventoryCommand) {
        self.ts += 10;
        let partition = self.h.partition_of(0, &cmd.product_id);
        *self.offsets.entry(partition).or_insert(0) += 1;
        let before = self.h.state(partition).clone();
        let sent = self
            .h
            .feed(0, &cmd.product_id.clone(), cmd, self.ts)
            .expect("decided");
        assert_eq!(sent, vec![], "a repeated admin request sends nothing");
        assert_eq!(self.h.state(partition), &before, "and changes nothing");
    }
}

#[test]
fn admin_commands_create_and_adjust_once_per_request() {
    use InventoryOutcome::*;
    let mut s = Script::new();
    s.expect(
        adjust("a0", "p", 5),
        UnknownProduct,
        0,
        stock(0, 0, 0, 0),
        None,
    );
    s.expect(create("a1", "p", 10), Created, 0, stock(10, 10, 0, 0), None);
    s.expect(
        create("a2", "p", 3),
        Invalid,
        0,
        stock(10, 10, 0, 0),
        Some("product p already exists with 10 units created; adjust its stock instead"),
    );
    s.expect(
        create("a3", "q", -1),
        Invalid,
        0,
        stock(0, 0, 0, 0),
        Some("stock -1 is negative"),
    );
    s.expect(
        adjust("a4", "p", -11),
        Invalid,
        0,
        stock(10, 10, 0, 0),
        Some("available 10 -11 = -1 would be below 0"),
    );
    s.expect(adjust("a5", "p", -10), Adjusted, 0, stock(0, 0, 0, 0), None);
    s.expect(adjust("a6", "p", 7), Adjusted, 0, stock(7, 7, 0, 0), None);
    s.expect(
        adjust("a7", "p", i64::MAX),
        Invalid,
        0,
        stock(7, 7, 0, 0),
        Some("created 7 +9223372036854775807 overflows 64 bits"),
    );
    s.expect(create("a8", "q", 0), Created, 0, stock(0, 0, 0, 0), None);
    // Upstream retries, whatever they carry: no second decision.
    s.expect_silence(adjust("a6", "p", 7));
    s.expect_silence(create("a1", "p", 99));
    s.expect_silence(adjust("a2", "p", 1));
    s.expect_silence(create("a8", "q", 0));
    // Reserved stock is not available to withdraw.
    s.expect(
        reserve("s1", "p", "o1", 5),
        Reserved,
        5,
        stock(7, 2, 5, 0),
        None,
    );
    s.expect(
        adjust("a9", "p", -3),
        Invalid,
        0,
        stock(7, 2, 5, 0),
        Some("available 2 -3 = -1 would be below 0"),
    );
    s.expect(adjust("a10", "p", -2), Adjusted, 0, stock(5, 0, 5, 0), None);
    assert_eq!(
        s.h.outcomes(),
        &[
            "unknown_product",
            "created",
            "invalid",
            "invalid",
            "invalid",
            "adjusted",
            "adjusted",
            "invalid",
            "created",
            "reserved",
            "invalid",
            "adjusted"
        ]
    );
}

#[test]
fn saga_commands_are_idempotent_per_order_and_product() {
    use InventoryOutcome::*;
    let mut s = Script::new();
    s.expect(create("a1", "p", 10), Created, 0, stock(10, 10, 0, 0), None);
    s.expect(
        reserve("r1", "p", "o1", 4),
        Reserved,
        4,
        stock(10, 6, 4, 0),
        None,
    );
    // Repeats, even with another quantity, are answered as the first time.
    s.expect(
        reserve("r2", "p", "o1", 4),
        Reserved,
        4,
        stock(10, 6, 4, 0),
        None,
    );
    s.expect(
        reserve("r3", "p", "o1", 9),
        Reserved,
        4,
        stock(10, 6, 4, 0),
        None,
    );
    s.expect(
        reserve("r4", "p", "o2", 7),
        InsufficientStock,
        7,
        stock(10, 6, 4, 0),
        Some("asked 7 units of product p, 6 available"),
    );
    s.expect(
        reserve("r5", "p", "o2", 1),
        InsufficientStock,
        7,
        stock(10, 6, 4, 0),
        Some("asked 7 units of product p; refused when first asked, fewer were available"),
    );
    s.expect(
        reserve("r6", "x", "o9", 2),
        UnknownProduct,
        2,
        stock(0, 0, 0, 0),
        None,
    );
    s.expect(
        release("r7", "p", "o2"),
        NotReserved,
        0,
        stock(10, 6, 4, 0),
        Some("the reservation of order o2 on product p was refused (insufficient stock)"),
    );
    s.expect(
        commit("r8", "p", "o3"),
        NotReserved,
        0,
        stock(10, 6, 4, 0),
        Some("order o3 holds no reservation of product p"),
    );
    s.expect(
        release("r9", "p", "o3"),
        NotReserved,
        0,
        stock(10, 6, 4, 0),
        Some("order o3 holds no reservation of product p"),
    );
    s.expect(
        commit("r10", "p", "o1"),
        Committed,
        4,
        stock(10, 6, 0, 4),
        None,
    );
    s.expect(
        commit("r11", "p", "o1"),
        Committed,
        4,
        stock(10, 6, 0, 4),
        None,
    );
    s.expect(
        reserve("r12", "p", "o1", 4),
        Reserved,
        4,
        stock(10, 6, 0, 4),
        None,
    );
    // A cancel after payment returns the sold units.
    s.expect(
        release("r13", "p", "o1"),
        Released,
        4,
        stock(10, 10, 0, 0),
        None,
    );
    s.expect(
        release("r14", "p", "o1"),
        Released,
        4,
        stock(10, 10, 0, 0),
        None,
    );
    s.expect(
        commit("r15", "p", "o1"),
        NotReserved,
        0,
        stock(10, 10, 0, 0),
        Some("the reservation of order o1 on product p was released"),
    );
    s.expect(
        reserve("r16", "p", "o1", 4),
        Reserved,
        4,
        stock(10, 10, 0, 0),
        None,
    );
    s.expect(
        reserve("r17", "p", "o4", 10),
        Reserved,
        10,
        stock(10, 0, 10, 0),
        None,
    );
    s.expect(
        release("r18", "p", "o4"),
        Released,
        10,
        stock(10, 10, 0, 0),
        None,
    );
    s.expect(
        commit("r19", "p", "o4"),
        NotReserved,
        0,
        stock(10, 10, 0, 0),
        Some("the reservation of order o4 on product p was released"),
    );
    // The same order on another product is another reservation.
    s.expect(create("a2", "x", 5), Created, 0, stock(5, 5, 0, 0), None);
    s.expect(
        reserve("r20", "x", "o4", 5),
        Reserved,
        5,
        stock(5, 0, 5, 0),
        None,
    );
    // A refusal for an unknown product stays the answer once it exists.
    s.expect(
        reserve("r21", "x", "o9", 2),
        UnknownProduct,
        2,
        stock(5, 0, 5, 0),
        None,
    );
    s.expect(
        release("r22", "x", "o9"),
        NotReserved,
        0,
        stock(5, 0, 5, 0),
        Some("the reservation of order o9 on product x was refused (unknown product)"),
    );
    s.expect(
        release("r23", "ghost", "o1"),
        NotReserved,
        0,
        stock(0, 0, 0, 0),
        Some("order o1 holds no reservation of product ghost"),
    );
    // Saga commands are not deduplicated by request id, admin ones are.
    s.expect(
        commit("r20", "x", "o4"),
        Committed,
        5,
        stock(5, 0, 0, 5),
        None,
    );
    s.expect_silence(create("a2", "x", 5));
    s.h.commit();
    s.h.assert_restore_law();
}

#[test]
fn a_reserve_below_one_unit_is_poison_and_changes_nothing() {
    let mut h = harness();
    h.feed(0, "p", create("a1", "p", 3), T0).unwrap();
    let before = h.state(h.partition_of(0, "p")).clone();
    let err = h
        .feed(0, "p", reserve("r1", "p", "o1", 0), T0 + 1)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Reject::Poison {
                reason: "contract_violation",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(h.state(h.partition_of(0, "p")), &before);
    assert_eq!(h.dead_letters().len(), 1);
    assert_eq!(h.pending().len(), 1, "only the create's event is pending");
}

/// The decoded outputs, with the source offset set aside (see
/// `harness_replay_keeps_source_offsets`).
fn comparable(sent: &[Sent]) -> Vec<(String, i32, Vec<u8>, String)> {
    sent.iter()
        .map(|s| {
            let body = if s.topic == EVENTS {
                let e = event_of(s);
                format!(
                    "{:?}",
                    InventoryEvent {
                        source_offset: -1,
                        ..e
                    }
                )
            } else {
                format!("{:?}", reply_of(s))
            };
            (s.topic.clone(), s.partition, s.key.clone(), body)
        })
        .collect()
}

#[test]
fn a_replay_after_abort_decides_and_writes_the_same() {
    let mut h = harness();
    h.feed(0, "p", create("a1", "p", 5), T0).unwrap();
    h.feed(0, "p", reserve("r1", "p", "o1", 2), T0 + 1).unwrap();
    h.commit();
    let committed = h.committed().to_vec();
    let mut first = Vec::new();
    let batch = [
        reserve("r2", "p", "o2", 3),
        reserve("r3", "p", "o3", 1),
        commit("r4", "p", "o1"),
        release("r5", "p", "o2"),
        adjust("a2", "p", 4),
        reserve("r6", "p", "o1", 2),
    ];
    for (i, c) in batch.iter().enumerate() {
        first.extend(h.feed(0, "p", c.clone(), T0 + 10 + i as i64).unwrap());
    }
    let p = h.partition_of(0, "p");
    let after_first = h.state(p).clone();
    assert_eq!(*after_first.stock("p").unwrap(), stock(9, 7, 0, 2));
    for _ in 0..3 {
        let again = h.abort_and_replay();
        assert_eq!(comparable(&again), comparable(&first));
        assert_eq!(h.state(p), &after_first);
    }
    // A plain abort leaves the committed state and outputs only, and drops
    // the aborted records; fed again, they decide the same way.
    h.abort();
    assert_eq!(*h.state(p).stock("p").unwrap(), stock(5, 3, 2, 0));
    assert_eq!(h.committed(), &committed[..]);
    assert!(h.pending().is_empty());
    assert!(h.abort_and_replay().is_empty(), "nothing left to replay");
    let mut again = Vec::new();
    for (i, c) in batch.iter().enumerate() {
        again.extend(h.feed(0, "p", c.clone(), T0 + 10 + i as i64).unwrap());
    }
    assert_eq!(comparable(&again), comparable(&first));
    h.commit();
    assert_eq!(h.committed().len(), committed.len() + first.len());
    h.assert_restore_law();
}

/// A replayed record has the offset it had in the log: Kafka offsets do not
/// move when a transaction aborts, and the harness rewinds like the engine.
#[test]
fn harness_replay_keeps_source_offsets() {
    let mut h = harness();
    let first = h.feed(0, "p", create("a1", "p", 5), T0).unwrap();
    let again = h.abort_and_replay();
    assert_eq!(
        event_of(&again[0]).source_offset,
        event_of(&first[0]).source_offset
    );
}

#[test]
fn a_crash_restores_the_committed_book_and_its_memory() {
    use InventoryOutcome::*;
    let mut h = harness();
    let p = h.partition_of(0, "p");
    for (i, c) in [
        create("a1", "p", 10),
        reserve("r1", "p", "o1", 3),
        reserve("r2", "p", "o2", 4),
        commit("r3", "p", "o2"),
        reserve("r4", "p", "o3", 8),
        release("r5", "p", "o1"),
    ]
    .into_iter()
    .enumerate()
    {
        h.feed(0, "p", c, T0 + i as i64).unwrap();
    }
    h.commit();
    h.assert_restore_law();
    let committed = h.state(p).clone();
    assert_eq!(*committed.stock("p").unwrap(), stock(10, 6, 0, 4));
    // Uncommitted work is lost with the crash.
    h.feed(0, "p", reserve("r6", "p", "o4", 6), T0 + 10)
        .unwrap();
    h.feed(0, "p", adjust("a2", "p", 1), T0 + 11).unwrap();
    h.restart();
    assert_eq!(h.state(p), &committed);
    // The restored book remembers requests and reservations.
    assert!(h
        .feed(0, "p", create("a1", "p", 1), T0 + 20)
        .unwrap()
        .is_empty());
    let answers: Vec<(InventoryOutcome, i32)> = [
        reserve("r7", "p", "o1", 3),
        commit("r8", "p", "o2"),
        reserve("r9", "p", "o3", 8),
        release("r10", "p", "o1"),
        reserve("r11", "p", "o4", 6),
    ]
    .into_iter()
    .map(|c| {
        let e = event_of(&h.feed(0, "p", c, T0 + 30).unwrap()[0]);
        (e.outcome, e.quantity)
    })
    .collect();
    assert_eq!(
        answers,
        vec![
            (Reserved, 3),
            (Committed, 4),
            (InsufficientStock, 8),
            (Released, 3),
            (Reserved, 6)
        ]
    );
    assert_eq!(*h.state(p).stock("p").unwrap(), stock(10, 0, 6, 4));
    h.commit();
    h.assert_restore_law();
}

// ---------------------------------------------------------------------------
// Randomized runs.

const PRODUCTS: [&str; 4] = ["apple", "bread", "chair", "drill"];

/// A seeded stream: every product created first, then reservations and
/// their releases and commits over many orders, adjustments, recreations,
/// upstream retries of admin requests and commands for a product that never
/// exists.
fn random_commands(seed: u64, n: usize) -> Vec<InventoryCommand> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cmds: Vec<InventoryCommand> = PRODUCTS
        .iter()
        .enumerate()
        .map(|(i, p)| create(&format!("create-{i}"), p, rng.random_range(0..40)))
        .collect();
    let mut admin: Vec<InventoryCommand> = cmds.clone();
    for i in 0..n {
        let product = PRODUCTS[rng.random_range(0..PRODUCTS.len())];
        let order = format!("order-{}", rng.random_range(0..400));
        let req = format!("req-{i}");
        let roll = rng.random_range(0..100);
        let cmd = match roll {
            0..40 => reserve(&req, product, &order, rng.random_range(1..=8)),
            40..60 => release(&req, product, &order),
            60..80 => commit(&req, product, &order),
            80..90 => adjust(&req, product, rng.random_range(-15..=15)),
            90..92 => create(&req, product, rng.random_range(0..10)),
            92..97 => admin[rng.random_range(0..admin.len())].clone(),
            _ => match rng.random_range(0..3) {
                0 => reserve(&req, "ghost", &order, 1),
                1 => release(&req, "ghost", &order),
                _ => adjust(&req, "ghost", 1),
            },
        };
        if cmd.command.order_id().is_none() && roll < 92 {
            admin.push(cmd.clone());
        }
        cmds.push(cmd);
    }
    cmds
}

/// An independent statement of the rules: what each command must decide.
#[derive(Default)]
struct Model {
    stock: HashMap<String, Stock>,
    held: HashMap<(String, String), (ReservationStatus, i32)>,
    decided: HashSet<String>,
}

impl Model {
    /// The outcome, quantity and stock after `cmd`; `None` for a repeated
    /// admin request (no decision).
    fn decide(&mut self, cmd: &InventoryCommand) -> Option<(InventoryOutcome, i32, Stock)> {
        use InventoryOutcome::*;
        use ReservationStatus as S;
        let p = cmd.product_id.clone();
        let outcome = match &cmd.command {
            InventoryAction::CreateProduct { stock: n } => {
                if !self.decided.insert(cmd.request_id.clone()) {
                    return None;
                }
                if self.stock.contains_key(&p) || *n < 0 {
                    (Invalid, 0)
                } else {
                    self.stock.insert(p.clone(), stock(*n, *n, 0, 0));
                    (Created, 0)
                }
            }
            InventoryAction::AdjustStock { delta, .. } => {
                if !self.decided.insert(cmd.request_id.clone()) {
                    return None;
                }
                match self.stock.get_mut(&p) {
                    None => (UnknownProduct, 0),
                    Some(s) if s.available + delta < 0 => (Invalid, 0),
                    Some(s) => {
                        s.available += delta;
                        s.created += delta;
                        (Adjusted, 0)
                    }
                }
            }
            InventoryAction::Reserve { order_id, quantity } => {
                let key = (order_id.clone(), p.clone());
                match self.held.get(&key) {
                    Some((S::Insufficient, q)) => (InsufficientStock, *q),
                    Some((S::UnknownProduct, q)) => (UnknownProduct, *q),
                    Some((_, q)) => (Reserved, *q),
                    None => {
                        let q = *quantity;
                        let (status, outcome) = match self.stock.get_mut(&p) {
                            None => (S::UnknownProduct, UnknownProduct),
                            Some(s) if s.available >= i64::from(q) => {
                                s.available -= i64::from(q);
                                s.reserved += i64::from(q);
                                (S::Reserved, Reserved)
                            }
                            Some(_) => (S::Insufficient, InsufficientStock),
                        };
                        self.held.insert(key, (status, q));
                        (outcome, q)
                    }
                }
            }
            InventoryAction::Release { order_id, .. } => {
                let key = (order_id.clone(), p.clone());
                match self.held.get(&key).copied() {
                    Some((from @ (S::Reserved | S::Sold), q)) => {
                        let s = self.stock.get_mut(&p).expect("held stock exists");
                        s.available += i64::from(q);
                        if from == S::Reserved {
                            s.reserved -= i64::from(q);
                        } else {
                            s.sold -= i64::from(q);
                        }
                        self.held.insert(key, (S::Released, q));
                        (Released, q)
                    }
                    Some((S::Released, q)) => (Released, q),
                    _ => (NotReserved, 0),
                }
            }
            InventoryAction::Commit { order_id } => {
                let key = (order_id.clone(), p.clone());
                match self.held.get(&key).copied() {
                    Some((S::Reserved, q)) => {
                        let s = self.stock.get_mut(&p).expect("held stock exists");
                        s.reserved -= i64::from(q);
                        s.sold += i64::from(q);
                        self.held.insert(key, (S::Sold, q));
                        (Committed, q)
                    }
                    Some((S::Sold, q)) => (Committed, q),
                    _ => (NotReserved, 0),
                }
            }
        };
        let after = self.stock.get(&p).copied().unwrap_or_default();
        Some((outcome.0, outcome.1, after))
    }
}

/// Conservation and non-negativity on every product of every partition,
/// and reserved/sold equal to the units the reservations hold.
fn assert_sound(h: &Harness<InventoryProcessor>, step: &str) {
    for p in 0..IN_PARTITIONS {
        let book = h.state(p);
        for (id, s) in book.products() {
            assert!(s.is_sound(), "{step}: product {id} at partition {p}: {s:?}");
            let (mut reserved, mut sold) = (0, 0);
            for (_, r) in book.reservations_of(id) {
                match r.status {
                    ReservationStatus::Reserved => reserved += i64::from(r.quantity),
                    ReservationStatus::Sold => sold += i64::from(r.quantity),
                    _ => {}
                }
            }
            assert_eq!(
                (reserved, sold),
                (s.reserved, s.sold),
                "{step}: product {id}: reservations hold what the stock says"
            );
        }
    }
}

fn assert_sent_sound(sent: &[Sent], step: &str) {
    for s in sent.iter().filter(|s| s.topic == EVENTS) {
        let e = event_of(s);
        assert!(
            e.is_conserved() && e.available >= 0 && e.reserved >= 0 && e.sold >= 0,
            "{step}: {e:?}"
        );
    }
}

fn ts(i: usize) -> i64 {
    T0 + 7 * i as i64
}

/// The run with no faults: every decision checked against the model.
fn clean_run(cmds: &[InventoryCommand]) -> Harness<InventoryProcessor> {
    let mut h = harness();
    let mut model = Model::default();
    let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut offsets: HashMap<i32, i64> = HashMap::new();
    for (i, cmd) in cmds.iter().enumerate() {
        let partition = h.partition_of(0, &cmd.product_id);
        let sent = h.feed(0, &cmd.product_id, cmd.clone(), ts(i)).unwrap();
        let offset = *offsets
            .entry(partition)
            .and_modify(|o| *o += 1)
            .or_insert(0);
        match model.decide(cmd) {
            None => assert!(sent.is_empty(), "command {i} is a retry: {cmd:?}"),
            Some((outcome, quantity, after)) => {
                let e = event_of(&sent[0]);
                assert_eq!(
                    (
                        e.outcome,
                        e.quantity,
                        e.available,
                        e.reserved,
                        e.sold,
                        e.created
                    ),
                    (
                        outcome,
                        quantity,
                        after.available,
                        after.reserved,
                        after.sold,
                        after.created
                    ),
                    "command {i}: {cmd:?}"
                );
                assert_eq!((e.source_partition, e.source_offset), (partition, offset));
                assert_eq!(e.decided_at.timestamp_millis(), ts(i));
                let replies = usize::from(cmd.command.order_id().is_some());
                assert_eq!(sent.len(), 1 + replies, "command {i}: {cmd:?}");
                *seen.entry(label(outcome)).or_default() += 1;
            }
        }
        if i % 50 == 49 {
            h.commit();
        }
    }
    h.commit();
    // The stream exercises every rule, or the run proves little.
    for o in InventoryOutcome::ALL {
        assert!(
            seen.get(label(o)).copied().unwrap_or(0) >= 3,
            "outcome {o:?} seen {:?} times: {seen:?}",
            seen.get(label(o))
        );
    }
    h.assert_restore_law();
    h
}

/// The same stream with random commits, aborts with replay, and crashes
/// with restore (the uncommitted records are then read again, as after a
/// rewind to the committed offsets).
fn faulty_run(cmds: &[InventoryCommand], seed: u64) -> (Harness<InventoryProcessor>, usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut h = harness();
    let mut uncommitted: Vec<usize> = Vec::new();
    let mut snapshot: Vec<InventoryBook> = (0..IN_PARTITIONS)
        .map(|_| InventoryBook::default())
        .collect();
    let mut faults = 0;
    let mut commits = 0;
    for (i, cmd) in cmds.iter().enumerate() {
        let sent = h.feed(0, &cmd.product_id, cmd.clone(), ts(i)).unwrap();
        assert_sent_sound(&sent, &format!("command {i}"));
        assert_sound(&h, &format!("after command {i}"));
        uncommitted.push(i);
        match rng.random_range(0..100) {
            0..8 => {
                h.commit();
                uncommitted.clear();
                snapshot = (0..IN_PARTITIONS).map(|p| h.state(p).clone()).collect();
                commits += 1;
                if commits % 8 == 0 {
                    h.assert_restore_law();
                }
            }
            8..12 => {
                faults += 1;
                let sent = h.abort_and_replay();
                assert_sent_sound(&sent, &format!("replay at {i}"));
                assert_sound(&h, &format!("after replay at {i}"));
            }
            12..14 => {
                faults += 1;
                h.restart();
                for p in 0..IN_PARTITIONS {
                    assert_eq!(h.state(p), &snapshot[p as usize], "restore at {i}");
                }
                assert_sound(&h, &format!("after restore at {i}"));
                for &j in &uncommitted {
                    let c = &cmds[j];
                    let sent = h.feed(0, &c.product_id, c.clone(), ts(j)).unwrap();
                    assert_sent_sound(&sent, &format!("re-read {j} after crash at {i}"));
                    assert_sound(&h, &format!("after re-reading {j}"));
                }
            }
            _ => {}
        }
    }
    h.commit();
    h.assert_restore_law();
    (h, faults)
}

fn assert_same_committed(
    clean: &Harness<InventoryProcessor>,
    faulty: &Harness<InventoryProcessor>,
) {
    let (a, b) = (clean.committed(), faulty.committed());
    assert_eq!(a.len(), b.len(), "as many committed outputs");
    // Replies carry no offset: byte for byte the same.
    let replies =
        |s: &[Sent]| -> Vec<Sent> { s.iter().filter(|s| s.topic == REPLIES).cloned().collect() };
    assert_eq!(replies(a), replies(b));
    assert_eq!(comparable(a), comparable(b));
    for p in 0..IN_PARTITIONS {
        assert_eq!(
            clean.state(p),
            faulty.state(p),
            "final book of partition {p}"
        );
    }
}

#[test]
fn randomized_runs_conserve_stock_and_faults_change_nothing_committed() {
    for seed in [1u64, 2, 3] {
        let cmds = random_commands(seed, 3_000);
        let clean = clean_run(&cmds);
        let (faulty, faults) = faulty_run(&cmds, seed + 100);
        assert!(faults > 100, "seed {seed}: only {faults} faults");
        assert_same_committed(&clean, &faulty);
        // Each product's last committed event is its final stock.
        for product in PRODUCTS {
            let last = clean
                .committed_on(EVENTS)
                .filter(|s| s.key == product.as_bytes())
                .last()
                .map(event_of)
                .unwrap();
            let p = clean.partition_of(0, product);
            let s = clean.state(p).stock(product).unwrap();
            assert_eq!(
                (last.created, last.available, last.reserved, last.sold),
                (s.created, s.available, s.reserved, s.sold)
            );
        }
    }
}

#[test]
fn apply_then_revert_is_the_identity_for_decided_changes() {
    let cmds = random_commands(7, 3_000);
    let mut book = InventoryBook::default();
    let mut changes = Vec::new();
    let mut bases = Vec::new();
    for (i, cmd) in cmds.iter().enumerate() {
        if i % 250 == 0 {
            bases.push((book.clone(), changes.len()));
        }
        let request = id_hash(&cmd.request_id);
        if cmd.command.order_id().is_none() && book.already_decided(request) {
            continue;
        }
        if let Some(change) = judge(&book, cmd, request).change {
            book.apply(&change);
            changes.push(change);
        }
    }
    assert!(changes.len() > 1_000, "{} changes", changes.len());
    for (base, from) in &bases {
        assert_apply_revert_identity(base, &changes[*from..]);
        for len in [1, 2, 17, 100] {
            let end = (*from + len).min(changes.len());
            assert_apply_revert_identity(base, &changes[*from..end]);
        }
    }
    let (live, log) = changelog_of::<InventoryBook>(&changes);
    assert_eq!(live, book);
    assert_restore_rebuilds(&book, &log);
}
