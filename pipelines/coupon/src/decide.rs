//! The coupon rules: given a command and the partition's coupon book,
//! decide and emit. First come, first served means the partition's log
//! order: the engine feeds commands in that order, and the decision depends
//! only on the book and the command, so a replay after an abort decides the
//! same way.

use crate::gauges::StockGauges;
use surge_engine::{Context, Incoming, Processor, Reject};
use surge_schemas::coupon::{CouponAction, CouponCommand, CouponDecision, Outcome};
use surge_schemas::order::{CouponReply, CouponReplyOutcome, OrderReply, Reply};
use surge_schemas::TopicCodec;

use crate::ledger::{
    id_hash, window_buckets, Bucket, CouponBook, CouponChange, Request, Seen, Terms,
};

/// How long a decided request id that issued nothing is remembered, in
/// stream time, by default: the declared retention of coupon-issue
/// (config/topics.toml, 7 days), past which the log holds no retry of it.
pub const DEFAULT_DEDUPE_WINDOW: std::time::Duration =
    std::time::Duration::from_secs(7 * 24 * 3600);

/// Why `window` is too short for an input topic declared with `retention`
/// (`None`: kept forever): a retry still in the log after the window would
/// be decided again. `None` when the window covers the retention.
pub fn window_shorter_than_retention(
    window: std::time::Duration,
    retention: Option<std::time::Duration>,
) -> Option<String> {
    let fmt = |d: std::time::Duration| format!("{}s", d.as_secs());
    match retention {
        Some(r) if window >= r => None,
        Some(r) => Some(format!(
            "dedupe_window {} is shorter than the input's retention {}: a retry of a request \
             decided more than {} ago, still in the log, would be decided again",
            fmt(window),
            fmt(r),
            fmt(window)
        )),
        None => Some(format!(
            "the input is kept forever but the dedupe_window is {}: a retry of a request \
             decided longer ago would be decided again",
            fmt(window)
        )),
    }
}

/// Expirations per partition per tick: a tick stays short (a few ms).
pub const EXPIRE_PER_TICK: usize = 10_000;

/// Expirations per record decided, on top of the ticks: each record pays
/// for more entries than it can add, so expiry keeps up with any input
/// rate and a catch-up replay does not wait for ticks.
pub const EXPIRE_PER_RECORD: usize = 2;

/// coupon-issue → coupon-result, and the answers to the order saga's
/// redeem and release commands → order-replies.
pub struct CouponProcessor {
    results: TopicCodec<CouponDecision>,
    replies: TopicCodec<OrderReply>,
    /// Resolved names of coupon-result and order-replies.
    results_topic: String,
    replies_topic: String,
    /// The dedupe window in stream-clock buckets.
    window: Bucket,
    stock_gauges: Option<StockGauges>,
}

impl CouponProcessor {
    pub fn new(
        results: TopicCodec<CouponDecision>,
        replies: TopicCodec<OrderReply>,
        results_topic: impl Into<String>,
        replies_topic: impl Into<String>,
    ) -> Self {
        Self {
            results,
            replies,
            results_topic: results_topic.into(),
            replies_topic: replies_topic.into(),
            window: window_buckets(DEFAULT_DEDUPE_WINDOW),
            stock_gauges: None,
        }
    }

    /// Reports each coupon's stock and what is left of it through `gauges`.
    pub fn with_stock_gauges(mut self, gauges: StockGauges) -> Self {
        self.stock_gauges = Some(gauges);
        self
    }

    /// Remembers decided requests that issued nothing for `window` of
    /// stream time (rounded up to whole minutes) instead of the default.
    /// Panics on a zero window: every retry would be decided again.
    pub fn with_dedupe_window(mut self, window: std::time::Duration) -> Self {
        assert!(!window.is_zero(), "the dedupe window must be positive");
        self.window = window_buckets(window);
        self
    }

    /// Expires up to `limit` entries past the window, oldest first.
    fn expire(&self, ctx: &mut Context<'_, CouponBook>, mut limit: usize) {
        while limit > 0 {
            let Some(change) = ctx.state().expire(self.window, limit) else {
                return;
            };
            if let CouponChange::Expired { requests, .. } = &change {
                limit -= requests.len().min(limit);
            }
            ctx.apply(change);
        }
    }
}

/// A decision before it is stamped with where its command came from.
struct Verdict {
    outcome: Outcome,
    sequence: Option<i64>,
    terms: Option<Terms>,
    issued: i64,
    reason: Option<String>,
    change: CouponChange,
    /// The answer to the order saga, for redeem and release.
    reply: Option<CouponReplyOutcome>,
}

impl Verdict {
    /// A decision that issues nothing and records only that the request was
    /// decided; the caller may set another change or a reply.
    fn plain(
        outcome: Outcome,
        request: Request,
        book: &CouponBook,
        coupon: &str,
        reason: Option<String>,
    ) -> Self {
        let c = book.coupon(coupon);
        Verdict {
            outcome,
            sequence: None,
            terms: c.and_then(|c| c.terms().copied()),
            issued: c.map_or(0, |c| c.issued()),
            reason,
            change: CouponChange::Decided { request },
            reply: None,
        }
    }

    fn answer(mut self, reply: CouponReplyOutcome) -> Self {
        self.reply = Some(reply);
        self
    }
}

/// The rules, as a pure function of the book and the command.
fn judge(book: &CouponBook, cmd: &CouponCommand, request: Request) -> Verdict {
    let coupon = cmd.coupon_id.as_str();
    let at = cmd.requested_at.timestamp_millis();
    match &cmd.command {
        CouponAction::Issue { user_id } => {
            let Some(ledger) = book.coupon(coupon) else {
                return Verdict::plain(Outcome::UnknownCoupon, request, book, coupon, None);
            };
            let terms = *ledger.terms().expect("a known coupon has terms");
            if let Some(from) = terms.active_from.filter(|from| at < *from) {
                let reason = format!("requested at {at} ms, coupon active from {from} ms");
                return Verdict::plain(Outcome::NotActive, request, book, coupon, Some(reason));
            }
            if let Some(until) = terms.active_until.filter(|until| at >= *until) {
                let reason = format!("requested at {at} ms, coupon active until {until} ms");
                return Verdict::plain(Outcome::NotActive, request, book, coupon, Some(reason));
            }
            let user = id_hash(user_id);
            if ledger.holds(user) {
                return Verdict::plain(Outcome::Duplicate, request, book, coupon, None);
            }
            if ledger.issued() >= terms.stock {
                return Verdict::plain(Outcome::SoldOut, request, book, coupon, None);
            }
            let sequence = ledger.issued() + 1;
            Verdict {
                outcome: Outcome::Issued,
                sequence: Some(sequence),
                terms: Some(terms),
                issued: sequence,
                reason: None,
                change: CouponChange::Issued {
                    request,
                    coupon: coupon.to_string(),
                    user,
                    sequence,
                },
                reply: None,
            }
        }
        CouponAction::Create {
            stock,
            active_from,
            active_until,
            discount,
        } => {
            let invalid =
                |why: String| Verdict::plain(Outcome::Invalid, request, book, coupon, Some(why));
            if book.coupon(coupon).is_some() {
                return invalid(format!(
                    "coupon {coupon} already exists; adjust its stock instead"
                ));
            }
            if *stock < 0 {
                return invalid(format!("stock {stock} is negative"));
            }
            let (from, until) = (
                active_from.map(|t| t.timestamp_millis()),
                active_until.map(|t| t.timestamp_millis()),
            );
            if let (Some(f), Some(u)) = (from, until) {
                if f >= u {
                    return invalid(format!(
                        "active window is empty: from {f} ms is not before until {u} ms"
                    ));
                }
            }
            let terms = Terms {
                stock: *stock,
                active_from: from,
                active_until: until,
                discount: *discount,
            };
            Verdict {
                outcome: Outcome::Created,
                sequence: None,
                terms: Some(terms),
                issued: 0,
                reason: None,
                change: CouponChange::Terms {
                    request,
                    coupon: coupon.to_string(),
                    terms,
                    previous: None,
                },
                reply: None,
            }
        }
        CouponAction::AdjustStock { delta, .. } => {
            let Some(ledger) = book.coupon(coupon) else {
                return Verdict::plain(Outcome::UnknownCoupon, request, book, coupon, None);
            };
            let previous = *ledger.terms().expect("a known coupon has terms");
            let Some(stock) = previous.stock.checked_add(*delta) else {
                // Saturating would decide ADJUSTED to a stock nobody asked for.
                let why = format!(
                    "stock {} {delta:+} is beyond a 64-bit count",
                    previous.stock
                );
                return Verdict::plain(Outcome::Invalid, request, book, coupon, Some(why));
            };
            if stock < ledger.issued() {
                let why = format!(
                    "stock {} {delta:+} = {stock} would be below the {} already issued",
                    previous.stock,
                    ledger.issued()
                );
                return Verdict::plain(Outcome::Invalid, request, book, coupon, Some(why));
            }
            let terms = Terms { stock, ..previous };
            Verdict {
                outcome: Outcome::Adjusted,
                sequence: None,
                terms: Some(terms),
                issued: ledger.issued(),
                reason: None,
                change: CouponChange::Terms {
                    request,
                    coupon: coupon.to_string(),
                    terms,
                    previous: Some(previous),
                },
                reply: None,
            }
        }
        CouponAction::Redeem { order_id, user_id } => {
            use CouponReplyOutcome::{RedeemRejected, Redeemed};
            let refuse = |why: &str| {
                Verdict::plain(
                    Outcome::RedeemRejected,
                    request,
                    book,
                    coupon,
                    Some(why.to_string()),
                )
                .answer(RedeemRejected)
            };
            let Some(ledger) = book.coupon(coupon) else {
                return refuse("unknown coupon");
            };
            let (order, user) = (id_hash(order_id), id_hash(user_id));
            if !ledger.holds(user) {
                return refuse("coupon not held: the buyer was not issued this coupon");
            }
            let mut verdict = Verdict::plain(Outcome::Redeemed, request, book, coupon, None);
            match ledger.used_by(user) {
                // A repeat for the same order: answered the same way, nothing changes.
                Some(o) if o == order => verdict.answer(Redeemed),
                Some(_) => refuse("coupon already used by another order"),
                None => {
                    verdict.change = CouponChange::Redeemed {
                        request,
                        coupon: coupon.to_string(),
                        order,
                        user,
                    };
                    verdict.answer(Redeemed)
                }
            }
        }
        CouponAction::Release { order_id } => {
            let order = id_hash(order_id);
            let held = book.coupon(coupon).and_then(|l| l.redemption(order));
            match held {
                Some(user) => {
                    let mut v = Verdict::plain(Outcome::Released, request, book, coupon, None);
                    v.change = CouponChange::Released {
                        request,
                        coupon: coupon.to_string(),
                        order,
                        user,
                    };
                    v.answer(CouponReplyOutcome::Released)
                }
                None => Verdict::plain(
                    Outcome::Invalid,
                    request,
                    book,
                    coupon,
                    Some(format!("order {order_id} uses no unit of this coupon")),
                )
                .answer(CouponReplyOutcome::NotRedeemed),
            }
        }
    }
}

/// The dead-letter reason of a request id reused for another request
/// (pre-registered at 0 in surge-engine's `poison_reasons`).
pub const REQUEST_ID_REUSED: &str = "request_id_reused";

/// Whether `cmd` is to be decided: `Some(request)` if its request id is new
/// on this partition, `None` for an upstream retry of a decided request (the
/// same content again, or an id decided by a version that kept no
/// fingerprint), and poison for an id already decided for another request:
/// dropping it would lose the request, and answering it with the first
/// request's decision would tell its sender something false.
fn admit(book: &CouponBook, cmd: &CouponCommand) -> Result<Option<Request>, Reject> {
    let request = Request::of(cmd);
    match book.seen(&request) {
        Seen::New => Ok(Some(request)),
        Seen::Retry | Seen::RetryUnchecked => Ok(None),
        Seen::Reused => Err(Reject::Poison {
            reason: REQUEST_ID_REUSED,
            message: format!(
                "request id {} of coupon {} was first used for a different request (its \
                 action, user, order or terms differ); this one: {}",
                cmd.request_id,
                cmd.coupon_id,
                describe(&cmd.command)
            ),
        }),
    }
}

/// What an action asks for, in words, for a dead letter's message.
fn describe(action: &CouponAction) -> String {
    let time = |t: &Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or_else(|| "-".to_string(), |t| t.timestamp_millis().to_string())
    };
    match action {
        CouponAction::Issue { user_id } => format!("issue for user {user_id}"),
        CouponAction::Create {
            stock,
            active_from,
            active_until,
            discount,
        } => {
            let discount = discount.map_or_else(
                || "none".to_string(),
                |d| match d.cap {
                    Some(cap) => format!("{:?} {} capped at {}", d.kind, d.value.0, cap.0),
                    None => format!("{:?} {}", d.kind, d.value.0),
                },
            );
            format!(
                "create with stock {stock}, active from {} until {} ms, discount {discount}",
                time(active_from),
                time(active_until)
            )
        }
        CouponAction::AdjustStock { delta, reason } => match reason {
            Some(r) => format!("adjust stock by {delta:+}, reason {r:?}"),
            None => format!("adjust stock by {delta:+}"),
        },
        CouponAction::Redeem { order_id, user_id } => {
            format!("redeem for order {order_id} with user {user_id}'s unit")
        }
        CouponAction::Release { order_id } => format!("release of order {order_id}'s unit"),
    }
}

impl Processor for CouponProcessor {
    type Input = CouponCommand;
    type State = CouponBook;

    fn process(
        &mut self,
        book: &mut Context<'_, CouponBook>,
        input: Incoming<CouponCommand>,
    ) -> Result<(), Reject> {
        let cmd = input.message;
        // Stream time first: every record moves it, a retry too.
        if let Some(clock) = book.state().advance(input.timestamp) {
            book.apply(clock);
        }
        self.expire(book, EXPIRE_PER_RECORD);
        let Some(request) = admit(book.state(), &cmd)? else {
            // An upstream retry of a request already decided: no second decision.
            book.already_decided();
            return Ok(());
        };
        let request = request.at(book.state().clock());
        let verdict = judge(book.state(), &cmd, request);
        let stock = verdict.terms.map_or(0, |t| t.stock);
        let order_id = cmd.command.order_id().map(str::to_string);
        let discount = match verdict.outcome {
            Outcome::Redeemed | Outcome::Created => verdict.terms.and_then(|t| t.discount),
            _ => None,
        };
        let decision = CouponDecision {
            request_id: cmd.request_id,
            coupon_id: cmd.coupon_id,
            user_id: match cmd.command {
                CouponAction::Issue { user_id } | CouponAction::Redeem { user_id, .. } => {
                    Some(user_id)
                }
                _ => None,
            },
            order_id: order_id.clone(),
            discount,
            outcome: verdict.outcome,
            sequence: verdict.sequence,
            stock,
            issued: verdict.issued,
            remaining: (stock - verdict.issued).max(0),
            reason: verdict.reason,
            source_partition: input.partition,
            source_offset: input.offset,
            requested_at: cmd.requested_at,
            decided_at: surge_schemas::now(),
        };
        let payload = self
            .results
            .encode(&decision)
            .map_err(|e| Reject::Retry(e.to_string()))?;
        if let (Some(outcome), Some(order_id)) = (verdict.reply, order_id) {
            // The saga owns order ids: the answer goes where it reads that order.
            let reply = OrderReply {
                order_id,
                reply: Reply::Coupon(CouponReply {
                    coupon_id: decision.coupon_id.clone(),
                    outcome,
                    reason: decision.reason.clone(),
                    discount,
                }),
                replied_at: decision.decided_at,
            };
            let bytes = self
                .replies
                .encode(&reply)
                .map_err(|e| Reject::Retry(e.to_string()))?;
            book.send_by_key(&self.replies_topic, reply.order_id.into_bytes(), bytes);
        }
        book.apply(verdict.change);
        book.emit(
            &self.results_topic,
            decision.coupon_id.into_bytes(),
            payload,
        );
        book.outcome(verdict.outcome.symbol());
        Ok(())
    }

    fn tick_interval(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(1))
    }

    /// Expires what the window left behind. Reads the book's stream clock,
    /// never `now`: expiry is a function of the log.
    fn tick(
        &mut self,
        ctx: &mut Context<'_, CouponBook>,
        _now: surge_engine::Millis,
    ) -> Result<(), Reject> {
        self.expire(ctx, EXPIRE_PER_TICK);
        Ok(())
    }

    fn observe(&mut self, states: &mut dyn Iterator<Item = (i32, &CouponBook)>) {
        if let Some(g) = &mut self.stock_gauges {
            // Wall time: which sales are over is a display choice, not a
            // decision, so it need not follow the log.
            g.observe(
                states.map(|(_, book)| book),
                chrono::Utc::now().timestamp_millis(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use surge_engine::PartitionState;

    fn cmd(request: &str, coupon: &str, at: i64, command: CouponAction) -> CouponCommand {
        CouponCommand {
            request_id: request.into(),
            coupon_id: coupon.into(),
            requested_at: DateTime::from_timestamp_millis(at).unwrap(),
            command,
        }
    }

    fn issue(request: &str, user: &str) -> CouponCommand {
        cmd(
            request,
            "c",
            1_000,
            CouponAction::Issue {
                user_id: user.into(),
            },
        )
    }

    /// Runs commands through `judge` + `apply` and returns the outcomes.
    fn run(book: &mut CouponBook, cmds: &[CouponCommand]) -> Vec<(Outcome, Option<i64>)> {
        cmds.iter()
            .map(|c| {
                let v = judge(book, c, Request::of(c));
                book.apply(&v.change);
                (v.outcome, v.sequence)
            })
            .collect()
    }

    fn create(stock: i64) -> CouponCommand {
        cmd(
            "admin-1",
            "c",
            0,
            CouponAction::Create {
                stock,
                active_from: None,
                active_until: None,
                discount: None,
            },
        )
    }

    #[test]
    fn first_come_first_served_until_sold_out() {
        let mut book = CouponBook::default();
        let got = run(
            &mut book,
            &[
                create(2),
                issue("r1", "alice"),
                issue("r2", "alice"),
                issue("r3", "bob"),
                issue("r4", "carol"),
            ],
        );
        assert_eq!(
            got,
            vec![
                (Outcome::Created, None),
                (Outcome::Issued, Some(1)),
                (Outcome::Duplicate, None),
                (Outcome::Issued, Some(2)),
                (Outcome::SoldOut, None),
            ]
        );
    }

    #[test]
    fn unknown_window_and_invalid_commands() {
        let mut book = CouponBook::default();
        assert_eq!(
            run(&mut book, &[issue("r0", "a")])[0].0,
            Outcome::UnknownCoupon
        );
        let windowed = cmd(
            "admin",
            "c",
            0,
            CouponAction::Create {
                stock: 5,
                active_from: DateTime::from_timestamp_millis(500),
                active_until: DateTime::from_timestamp_millis(2_000),
                discount: None,
            },
        );
        let early = cmd(
            "r1",
            "c",
            499,
            CouponAction::Issue {
                user_id: "a".into(),
            },
        );
        let late = cmd(
            "r2",
            "c",
            2_000,
            CouponAction::Issue {
                user_id: "a".into(),
            },
        );
        let ok = cmd(
            "r3",
            "c",
            500,
            CouponAction::Issue {
                user_id: "a".into(),
            },
        );
        let outcomes: Vec<Outcome> = run(&mut book, &[windowed, early, late, ok])
            .into_iter()
            .map(|o| o.0)
            .collect();
        assert_eq!(
            outcomes,
            vec![
                Outcome::Created,
                Outcome::NotActive,
                Outcome::NotActive,
                Outcome::Issued
            ]
        );

        let again = cmd(
            "admin-2",
            "c",
            0,
            CouponAction::Create {
                stock: 1,
                active_from: None,
                active_until: None,
                discount: None,
            },
        );
        let shrink = cmd(
            "admin-3",
            "c",
            0,
            CouponAction::AdjustStock {
                delta: -5,
                reason: None,
            },
        );
        let grow = cmd(
            "admin-4",
            "c",
            0,
            CouponAction::AdjustStock {
                delta: 3,
                reason: None,
            },
        );
        let overflow = |id: &str, delta: i64| {
            cmd(
                id,
                "c",
                0,
                CouponAction::AdjustStock {
                    delta,
                    reason: None,
                },
            )
        };
        let outcomes: Vec<Outcome> = run(
            &mut book,
            &[
                again,
                shrink,
                grow,
                overflow("admin-5", i64::MAX),
                overflow("admin-6", i64::MIN),
            ],
        )
        .into_iter()
        .map(|o| o.0)
        .collect();
        assert_eq!(
            outcomes,
            vec![
                Outcome::Invalid,
                Outcome::Invalid,
                Outcome::Adjusted,
                Outcome::Invalid,
                Outcome::Invalid
            ],
            "a delta past a 64-bit stock is refused, not saturated"
        );
        assert_eq!(book.coupon("c").unwrap().terms().unwrap().stock, 8);
    }

    /// A changelog entry for `request` as versions before fingerprints wrote
    /// it: key `r` + request hash, value empty or user + sequence + couponId.
    fn old_entry(request: &str, issued: Option<(&str, i64)>) -> (Vec<u8>, Vec<u8>) {
        let mut key = vec![b'r'];
        key.extend_from_slice(&id_hash(request).to_be_bytes());
        let mut value = Vec::new();
        if let Some((user, sequence)) = issued {
            value.extend_from_slice(&id_hash(user).to_be_bytes());
            value.extend_from_slice(&sequence.to_be_bytes());
            value.extend_from_slice(b"c");
        }
        (key, value)
    }

    fn reason(r: Result<Option<Request>, Reject>) -> Option<&'static str> {
        match r {
            Err(Reject::Poison { reason, .. }) => Some(reason),
            Err(e) => panic!("{e}"),
            Ok(_) => None,
        }
    }

    #[test]
    fn an_id_decided_before_fingerprints_is_a_retry_whatever_it_asks() {
        let mut book = CouponBook::default();
        run(&mut book, &[create(5)]);
        for (k, v) in [old_entry("r1", Some(("alice", 1))), old_entry("r2", None)] {
            book.restore(&k, Some(&v)).unwrap();
        }
        run(&mut book, &[issue("r3", "carol")]);
        let c = book.coupon("c").unwrap();
        assert!(c.holds(id_hash("alice")) && c.issued() == 2);
        for again in [
            issue("r1", "alice"),
            issue("r1", "bob"),
            issue("r2", "dave"),
            cmd(
                "r2",
                "other",
                1_000,
                CouponAction::Release {
                    order_id: "o1".into(),
                },
            ),
        ] {
            assert!(
                matches!(admit(&book, &again), Ok(None)),
                "{again:?}: a silent duplicate, as before fingerprints"
            );
        }
        // Decided by this version: a retry is silent, a reuse is poison.
        assert!(matches!(admit(&book, &issue("r3", "carol")), Ok(None)));
        assert_eq!(
            reason(admit(&book, &issue("r3", "bob"))),
            Some(REQUEST_ID_REUSED)
        );
        assert!(matches!(admit(&book, &issue("r4", "bob")), Ok(Some(_))));
    }

    #[test]
    fn a_reused_id_is_named_with_what_the_new_request_asks() {
        let mut book = CouponBook::default();
        run(&mut book, &[create(5), issue("r1", "alice")]);
        let Err(Reject::Poison { reason, message }) = admit(&book, &issue("r1", "bob")) else {
            panic!("a reused id is poison");
        };
        assert_eq!(reason, "request_id_reused");
        assert_eq!(
            message,
            "request id r1 of coupon c was first used for a different request (its action, \
             user, order or terms differ); this one: issue for user bob"
        );
        let Err(Reject::Poison { message, .. }) = admit(&book, &create(6)) else {
            panic!("new terms under an admin request id already used are poison");
        };
        assert!(
            message.ends_with(
                "this one: create with stock 6, active from - until - ms, discount none"
            ),
            "{message}"
        );
    }

    #[test]
    fn stock_can_be_added_after_selling_out() {
        let mut book = CouponBook::default();
        let add = cmd(
            "admin-2",
            "c",
            0,
            CouponAction::AdjustStock {
                delta: 1,
                reason: None,
            },
        );
        let got = run(
            &mut book,
            &[
                create(1),
                issue("r1", "a"),
                issue("r2", "b"),
                add,
                issue("r3", "b"),
            ],
        );
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            vec![
                Outcome::Created,
                Outcome::Issued,
                Outcome::SoldOut,
                Outcome::Adjusted,
                Outcome::Issued
            ]
        );
        assert_eq!(got[4].1, Some(2));
    }
}

/// The redemption rules, run through the engine's in-process harness (the
/// same savepoint, abort and changelog semantics as the real loop).
#[cfg(test)]
mod redemption {
    use super::*;
    use chrono::DateTime;
    use surge_engine::harness::Harness;
    use surge_schemas::coupon::Discount;
    use surge_schemas::Money;

    const RESULTS: &str = "coupon-result";
    const REPLIES: &str = "order-replies";

    fn req(id: u128) -> Request {
        Request {
            id,
            unscoped: id,
            fingerprint: crate::ledger::Fingerprint::from_hash(id as u64 * 7 + 1),
            at: 0,
        }
    }

    fn harness() -> Harness<CouponProcessor> {
        let p = CouponProcessor::new(
            TopicCodec::offline(1),
            TopicCodec::offline(2),
            RESULTS,
            REPLIES,
        );
        Harness::new(p, &[("coupon-issue", 6)], &[(RESULTS, 6), (REPLIES, 6)])
    }

    fn cmd(request: &str, command: CouponAction) -> CouponCommand {
        CouponCommand {
            request_id: request.into(),
            coupon_id: "c".into(),
            requested_at: DateTime::from_timestamp_millis(1_000).unwrap(),
            command,
        }
    }

    fn feed(h: &mut Harness<CouponProcessor>, request: &str, command: CouponAction) {
        h.feed(0, "c", cmd(request, command), 1_000)
            .expect("decided");
    }

    /// The saga's view: outcomes of the replies sent so far, in order.
    fn replies(h: &Harness<CouponProcessor>) -> Vec<(String, CouponReplyOutcome, Option<String>)> {
        let codec = TopicCodec::<OrderReply>::offline(2);
        h.committed()
            .iter()
            .chain(h.pending())
            .filter(|s| s.topic == REPLIES)
            .map(|s| {
                let r = futures::executor::block_on(codec.decode(s.payload.as_deref())).unwrap();
                assert_eq!(s.key, r.order_id.as_bytes(), "replies are keyed by order");
                match r.reply {
                    Reply::Coupon(c) => (r.order_id, c.outcome, c.reason),
                    other => panic!("coupon pipeline sent {other:?}"),
                }
            })
            .collect()
    }

    fn setup(h: &mut Harness<CouponProcessor>) {
        feed(
            h,
            "admin",
            CouponAction::Create {
                stock: 2,
                active_from: None,
                active_until: None,
                discount: Some(Discount::fixed(Money(500))),
            },
        );
        feed(
            h,
            "i1",
            CouponAction::Issue {
                user_id: "alice".into(),
            },
        );
        feed(
            h,
            "i2",
            CouponAction::Issue {
                user_id: "bob".into(),
            },
        );
        h.commit();
    }

    fn redeem(order: &str, user: &str) -> CouponAction {
        CouponAction::Redeem {
            order_id: order.into(),
            user_id: user.into(),
        }
    }

    #[test]
    fn a_unit_is_used_by_one_order_and_usable_again_after_release() {
        use CouponReplyOutcome::*;
        let mut h = harness();
        setup(&mut h);
        feed(&mut h, "o1:redeem", redeem("o1", "alice"));
        feed(&mut h, "o2:redeem", redeem("o2", "alice"));
        feed(&mut h, "o3:redeem", redeem("o3", "carol"));
        feed(
            &mut h,
            "o1:release",
            CouponAction::Release {
                order_id: "o1".into(),
            },
        );
        feed(&mut h, "o2b:redeem", redeem("o2", "alice"));
        feed(
            &mut h,
            "o9:release",
            CouponAction::Release {
                order_id: "o9".into(),
            },
        );
        h.commit();
        let got: Vec<_> = replies(&h).into_iter().map(|r| (r.0, r.1)).collect();
        assert_eq!(
            got,
            vec![
                ("o1".into(), Redeemed),
                ("o2".into(), RedeemRejected),
                ("o3".into(), RedeemRejected),
                ("o1".into(), Released),
                ("o2".into(), Redeemed),
                ("o9".into(), NotRedeemed),
            ]
        );
        let r = replies(&h);
        assert_eq!(
            r[1].2.as_deref(),
            Some("coupon already used by another order")
        );
        assert!(r[2].2.as_deref().unwrap().starts_with("coupon not held"));
        let ledger = h.state(h.partition_of(0, "c")).coupon("c").unwrap();
        assert_eq!(ledger.redeemed(), 1, "only o2 holds a unit now");
        assert_eq!(
            ledger.issued(),
            2,
            "redemption never changes what was issued"
        );
        h.assert_restore_law();
    }

    #[test]
    fn repeats_are_answered_the_same_way_and_change_nothing() {
        let mut h = harness();
        setup(&mut h);
        feed(&mut h, "o1:redeem", redeem("o1", "alice"));
        h.commit();
        let before = h.state(h.partition_of(0, "c")).clone();
        // The same request id again: no second decision at all.
        feed(&mut h, "o1:redeem", redeem("o1", "alice"));
        // Another request id for the same order: the same answer, no change.
        feed(&mut h, "o1:redeem-again", redeem("o1", "alice"));
        let r = replies(&h);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].1, CouponReplyOutcome::Redeemed);
        h.abort();
        assert_eq!(h.state(h.partition_of(0, "c")), &before);
    }

    #[test]
    fn an_aborted_redemption_leaves_the_unit_free_and_replays_the_same() {
        let mut h = harness();
        setup(&mut h);
        feed(&mut h, "o1:redeem", redeem("o1", "alice"));
        let first = replies(&h);
        let replayed = h.abort_and_replay();
        assert_eq!(replayed.len(), 2, "one decision and one reply again");
        assert_eq!(replies(&h), first);
        h.commit();
        h.crash_and_restore();
        feed(&mut h, "o2:redeem", redeem("o2", "alice"));
        assert_eq!(
            replies(&h).last().unwrap().1,
            CouponReplyOutcome::RedeemRejected,
            "the restored ledger still knows o1 uses alice's unit"
        );
    }

    #[test]
    fn the_discount_of_the_coupon_travels_with_the_redemption() {
        let mut h = harness();
        setup(&mut h);
        feed(&mut h, "o1:redeem", redeem("o1", "bob"));
        let codec = TopicCodec::<OrderReply>::offline(2);
        let s = h.pending().iter().find(|s| s.topic == REPLIES).unwrap();
        let r = futures::executor::block_on(codec.decode(s.payload.as_deref())).unwrap();
        let Reply::Coupon(c) = r.reply else { panic!() };
        assert_eq!(c.discount, Some(Discount::fixed(Money(500))));
        assert_eq!(
            s.partition,
            surge_kafka::partition_for(b"o1", 6),
            "routed to the partition owning the order, not the coupon's"
        );
    }

    #[test]
    fn ledger_laws() {
        let changes = vec![
            CouponChange::Terms {
                request: req(1),
                coupon: "c".into(),
                terms: Terms {
                    stock: 3,
                    active_from: None,
                    active_until: None,
                    discount: Some(Discount::percent(Money(1000), None)),
                },
                previous: None,
            },
            CouponChange::Issued {
                request: req(2),
                coupon: "c".into(),
                user: 7,
                sequence: 1,
            },
            CouponChange::Redeemed {
                request: req(3),
                coupon: "c".into(),
                order: 11,
                user: 7,
            },
            CouponChange::Released {
                request: req(4),
                coupon: "c".into(),
                order: 11,
                user: 7,
            },
            CouponChange::Redeemed {
                request: req(5),
                coupon: "c".into(),
                order: 12,
                user: 7,
            },
        ];
        surge_engine::laws::assert_apply_revert_identity(&CouponBook::default(), &changes);
        for n in 0..=changes.len() {
            let (state, log) = surge_engine::laws::changelog_of::<CouponBook>(&changes[..n]);
            surge_engine::laws::assert_restore_rebuilds(&state, &log);
        }
    }

    /// The laws over a run with the stream clock and expiry in it: a clock
    /// that moves, requests decided in several buckets, an ISSUED one that
    /// never expires, a bucket expired in two steps and a request decided
    /// again after it expired.
    #[test]
    fn a_window_shorter_than_the_retention_is_reported() {
        let d = |h: u64| std::time::Duration::from_secs(h * 3600);
        assert_eq!(window_shorter_than_retention(d(168), Some(d(168))), None);
        assert_eq!(window_shorter_than_retention(d(200), Some(d(168))), None);
        assert!(window_shorter_than_retention(d(24), Some(d(168))).is_some());
        assert!(window_shorter_than_retention(d(24), None).is_some());
        assert_eq!(window_buckets(d(168)), 168 * 60);
        assert_eq!(
            window_buckets(std::time::Duration::from_millis(1)),
            1,
            "rounded up"
        );
    }

    #[test]
    fn ledger_laws_with_expiry() {
        use surge_engine::PartitionState;
        let window = 10;
        let mut book = CouponBook::default();
        let mut changes = Vec::new();
        let mut push = |book: &mut CouponBook, c: CouponChange| {
            book.apply(&c);
            changes.push(c);
        };
        let at = |b: u32| i64::from(b) * crate::ledger::BUCKET_MS + 1;
        let terms = Terms {
            stock: 1,
            active_from: None,
            active_until: None,
            discount: None,
        };
        let c = book.advance(at(100)).expect("the clock moves");
        push(&mut book, c);
        assert!(
            book.advance(at(100)).is_none(),
            "the same bucket: no change"
        );
        assert!(
            book.advance(at(99)).is_none(),
            "an earlier record: no change"
        );
        push(
            &mut book,
            CouponChange::Terms {
                request: req(1).at(100),
                coupon: "c".into(),
                terms,
                previous: None,
            },
        );
        push(
            &mut book,
            CouponChange::Issued {
                request: req(2).at(100),
                coupon: "c".into(),
                user: 7,
                sequence: 1,
            },
        );
        for r in 3..6 {
            push(
                &mut book,
                CouponChange::Decided {
                    request: req(r).at(100),
                },
            );
        }
        let c = book.advance(at(105)).unwrap();
        push(&mut book, c);
        push(
            &mut book,
            CouponChange::Decided {
                request: req(6).at(105),
            },
        );
        assert!(
            book.expire(window, 100).is_none(),
            "nothing is past the window yet"
        );
        let c = book.advance(at(111)).unwrap();
        push(&mut book, c);
        // Bucket 100 is due (111 > 100 + 10), in two steps; 105 is not.
        let first = book.expire(window, 2).unwrap();
        assert!(
            matches!(&first, CouponChange::Expired { bucket: 100, requests } if requests.len() == 2)
        );
        push(&mut book, first);
        let rest = book.expire(window, 100).unwrap();
        assert!(
            matches!(&rest, CouponChange::Expired { bucket: 100, requests } if requests.len() == 1)
        );
        push(&mut book, rest);
        assert!(book.expire(window, 100).is_none());
        assert!(book.already_decided(req(2).id), "ISSUED never expires");
        assert!(
            book.already_decided(req(1).id),
            "accepted terms never expire"
        );
        assert!(!book.already_decided(req(5).id));
        assert!(book.already_decided(req(6).id));
        // Expired and decided again.
        push(
            &mut book,
            CouponChange::Decided {
                request: req(3).at(111),
            },
        );
        assert_eq!((book.decided_len(), book.expirable_len()), (4, 2));

        surge_engine::laws::assert_apply_revert_identity(&CouponBook::default(), &changes);
        surge_engine::laws::assert_apply_revert_identity(&book, &changes[..0]);
        for n in 0..=changes.len() {
            let (state, log) = surge_engine::laws::changelog_of::<CouponBook>(&changes[..n]);
            surge_engine::laws::assert_restore_rebuilds(&state, &log);
            // And from a state mid-run: apply then revert the rest.
            surge_engine::laws::assert_apply_revert_identity(&state, &changes[n..]);
        }
        let (state, _) = surge_engine::laws::changelog_of::<CouponBook>(&changes);
        assert_eq!(state, book);
    }
    /// After a peak has expired the dedupe set gives its memory back: a
    /// sale's burst must not pin its size for the life of the process.
    #[test]
    fn expiry_gives_the_peaks_memory_back() {
        use surge_engine::PartitionState;
        let at = |b: u32| i64::from(b) * crate::ledger::BUCKET_MS + 1;
        let mut book = CouponBook::default();
        let c = book.advance(at(100)).unwrap();
        book.apply(&c);
        for r in 0..50_000 {
            book.apply(&CouponChange::Decided {
                request: req(r).at(100),
            });
        }
        let peak = book.approx_bytes();
        let c = book.advance(at(102)).unwrap();
        book.apply(&c);
        for r in 0..10 {
            book.apply(&CouponChange::Decided {
                request: req(100_000 + r).at(102),
            });
        }
        while let Some(c) = book.expire(1, 10_000) {
            book.apply(&c);
        }
        assert_eq!(book.decided_len(), 10, "only the recent requests are left");
        let after = book.approx_bytes();
        assert!(
            after * 20 < peak,
            "{after} bytes after expiry, {peak} at the peak"
        );
    }
}
