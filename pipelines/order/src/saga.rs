//! The order saga's rules: given an order-create, an order-cancel or a
//! reply, and the order's entry, decide the next step and what to send.
//!
//! The saga never reads another pipeline's state. It asks: a Reserve per
//! product line (to the inventory partition owning that product) and a
//! Redeem when the order names a coupon (to the coupon partition owning it),
//! then reacts to their replies. Compensation does not wait for answers: a
//! Release sent after a Reserve for the same product lands on the same
//! inventory partition behind it (one producer, one partition, in order), so
//! it undoes whatever that Reserve did, or answers NOT_RESERVED. That is why
//! a cancel or the first refusal ends the order at once.

use surge_core::settings::OrdersSettings;
use surge_engine::{Context, Incoming, Millis, Processor, Reject};
use surge_schemas::coupon::{CouponAction, CouponCommand};
use surge_schemas::inventory::{InventoryAction, InventoryCommand};
use surge_schemas::order::{
    CouponReplyOutcome, OrderCancel, OrderCreate, OrderEvent, OrderItem, OrderReply, OrderStatus,
    PaymentKind, PaymentRequest, Reply, StockOutcome,
};
use surge_schemas::{Money, TopicCodec};

use crate::book::{
    Cancelling, CouponUse, Line, LineStock, Order, OrderBook, OrderChange, PaymentStep, Stage,
};
use crate::identity::{fingerprint, repeat_of, reuse_message, Repeat, ORDER_ID_REUSED};
use crate::inputs::SagaInput;
use crate::metrics::SagaGauges;
use crate::payment::charge_id;

/// Resolved names of the topics the saga writes.
#[derive(Debug, Clone)]
pub struct SagaTopics {
    pub status: String,
    pub payments: String,
    pub inventory: String,
    pub coupons: String,
}

/// Codecs of the records the saga writes.
pub struct SagaCodecs {
    pub status: TopicCodec<OrderStatus>,
    pub payments: TopicCodec<PaymentRequest>,
    pub inventory: TopicCodec<InventoryCommand>,
    pub coupons: TopicCodec<CouponCommand>,
}

/// How long a partition's replies must have been quiet before the wall
/// clock stands in for their time (see [`ReplyClock`]).
pub const REPLIES_QUIET: Millis = 5_000;

/// The time the replies of one partition have reached: payment expiry is
/// judged by it, not by the wall clock alone. A saga that lags behind its
/// input would otherwise expire orders whose answers are already in its own
/// backlog. While replies flow, the time is the newest reply's timestamp:
/// every answer produced before it has been read (one partition, producers
/// on one clock). Once they have been quiet for [`REPLIES_QUIET`] (caught up,
/// or the payment pipeline is down), the wall clock less that pause is used,
/// so expiry still happens when nothing else moves. Kept in memory: after a
/// restart, the quiet pause starts again before anything can expire.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplyClock {
    time: Millis,
    advanced: bool,
    /// The tick that last saw `time` advance.
    seen_at: Option<Millis>,
}

impl Default for ReplyClock {
    fn default() -> Self {
        Self {
            time: Millis::MIN,
            advanced: false,
            seen_at: None,
        }
    }
}

impl ReplyClock {
    fn time_at(&mut self, now: Millis) -> Millis {
        if self.advanced || self.seen_at.is_none() {
            self.seen_at = Some(now);
            self.advanced = false;
        }
        let quiet_since = self.seen_at.unwrap_or(now);
        if now - quiet_since >= REPLIES_QUIET {
            self.time.max(now - REPLIES_QUIET)
        } else {
            self.time
        }
    }
}

/// The order saga.
pub struct OrderSaga {
    pub(crate) rules: OrdersSettings,
    pub(crate) topics: SagaTopics,
    pub(crate) codecs: SagaCodecs,
    gauges: Option<SagaGauges>,
    /// How far each partition's replies have come (in memory only).
    reply_clocks: std::collections::HashMap<i32, ReplyClock>,
    /// Per partition: when a tick first saw each unresolved charge (wall time).
    charges_seen: std::collections::HashMap<i32, std::collections::HashMap<String, Millis>>,
}

impl OrderSaga {
    pub fn new(rules: OrdersSettings, topics: SagaTopics, codecs: SagaCodecs) -> Self {
        Self {
            rules,
            topics,
            codecs,
            gauges: None,
            reply_clocks: std::collections::HashMap::new(),
            charges_seen: std::collections::HashMap::new(),
        }
    }

    /// Reports open sagas by state and the oldest one's age through `gauges`.
    pub fn with_gauges(mut self, gauges: SagaGauges) -> Self {
        self.gauges = Some(gauges);
        self
    }
}

/// Why an order-create is refused before anything is asked, if it is.
fn invalid(rules: &OrdersSettings, c: &OrderCreate) -> Option<String> {
    if !rules.currencies.iter().any(|k| k == &c.currency) {
        return Some(format!(
            "currency {:?} is not accepted (accepted: {})",
            c.currency,
            rules.currencies.join(", ")
        ));
    }
    if c.items.is_empty() {
        return Some("an order needs at least one line".into());
    }
    if c.items.len() > rules.max_lines {
        return Some(format!(
            "{} lines; an order has at most {}",
            c.items.len(),
            rules.max_lines
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, item) in c.items.iter().enumerate() {
        if item.quantity < 1 || item.quantity > rules.max_quantity {
            return Some(format!(
                "line {i} ({}): quantity {} is outside 1..={}",
                item.product_id, item.quantity, rules.max_quantity
            ));
        }
        if item.unit_price.0 < 0 {
            return Some(format!(
                "line {i} ({}): unit price {} is negative",
                item.product_id, item.unit_price
            ));
        }
        if !seen.insert(item.product_id.as_str()) {
            return Some(format!(
                "product {} appears on more than one line",
                item.product_id
            ));
        }
    }
    if total_of(c).is_none() {
        return Some("the order total does not fit 18 digits".into());
    }
    None
}

fn total_of(c: &OrderCreate) -> Option<i64> {
    c.items.iter().try_fold(0i64, |sum, i| {
        i.unit_price
            .0
            .checked_mul(i64::from(i.quantity))
            .and_then(|line| sum.checked_add(line))
            .filter(|t| *t < 1_000_000_000_000_000_000)
    })
}

/// One decision's sends, stamped with the input's time.
pub(crate) struct Out<'s, 'c, 'a> {
    pub saga: &'s OrderSaga,
    pub ctx: &'c mut Context<'a, OrderBook>,
    pub at: Millis,
}

pub(crate) fn retry(e: impl std::fmt::Display) -> Reject {
    Reject::Retry(e.to_string())
}

impl Out<'_, '_, '_> {
    pub(crate) fn time(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_millis(self.at).unwrap_or_default()
    }

    /// Records the order's new entry.
    pub(crate) fn put(&mut self, before: Option<&Order>, after: &Order) {
        self.ctx.apply(OrderChange {
            before: before.cloned().map(Box::new),
            after: Box::new(after.clone()),
        });
    }

    /// One order-status record for `o` as it stands.
    pub(crate) fn status(
        &mut self,
        o: &Order,
        event: OrderEvent,
        cancel_request_id: Option<String>,
    ) -> Result<(), Reject> {
        let status = OrderStatus {
            order_id: o.order_id.clone(),
            user_id: o.user_id.clone(),
            state: o.stage.contract(),
            reason: o.reason.clone(),
            total: Money(o.payable),
            currency: o.currency.clone(),
            coupon_id: o.coupon_id.clone(),
            payment_id: o.payment_id.clone(),
            version: o.version,
            occurred_at: self.time(),
            event,
            cancel_request_id,
            refund_id: (o.refund == Some(PaymentStep::Approved))
                .then(|| o.refund_id.clone())
                .flatten(),
            // Once per order, on its first transition: consumers keep them
            // from there, later records stay small.
            lines: (event == OrderEvent::Transition && o.version == 1).then(|| {
                o.lines
                    .iter()
                    .map(|l| OrderItem {
                        product_id: l.product_id.clone(),
                        quantity: l.quantity,
                        unit_price: Money(l.unit_price),
                    })
                    .collect()
            }),
        };
        let bytes = self.saga.codecs.status.encode(&status).map_err(retry)?;
        self.ctx
            .send_by_key(&self.saga.topics.status, o.order_id.as_bytes(), bytes);
        Ok(())
    }

    /// Enters `stage` (version + 1) and says so on order-status.
    pub(crate) fn transition(
        &mut self,
        before: Option<&Order>,
        mut o: Order,
        stage: Stage,
        cancel_request_id: Option<String>,
    ) -> Result<(), Reject> {
        o.stage = stage;
        o.version += 1;
        self.status(&o, OrderEvent::Transition, cancel_request_id)?;
        self.ctx.outcome(stage.label());
        self.put(before, &o);
        Ok(())
    }

    pub(crate) fn inventory(
        &mut self,
        o: &Order,
        line: &Line,
        action: InventoryAction,
    ) -> Result<(), Reject> {
        let verb = match &action {
            InventoryAction::Reserve { .. } => "reserve",
            InventoryAction::Release { .. } => "release",
            InventoryAction::Commit { .. } => "commit",
            _ => "admin",
        };
        let cmd = InventoryCommand {
            request_id: format!("{}/{verb}/{}", o.order_id, line.product_id),
            product_id: line.product_id.clone(),
            requested_at: self.time(),
            command: action,
        };
        let bytes = self.saga.codecs.inventory.encode(&cmd).map_err(retry)?;
        self.ctx.send_by_key(
            &self.saga.topics.inventory,
            line.product_id.as_bytes(),
            bytes,
        );
        Ok(())
    }

    pub(crate) fn coupon(
        &mut self,
        o: &Order,
        coupon_id: &str,
        action: CouponAction,
    ) -> Result<(), Reject> {
        let verb = match &action {
            CouponAction::Redeem { .. } => "redeem",
            _ => "release-coupon",
        };
        let cmd = CouponCommand {
            request_id: format!("{}/{verb}", o.order_id),
            coupon_id: coupon_id.to_string(),
            requested_at: self.time(),
            command: action,
        };
        let bytes = self.saga.codecs.coupons.encode(&cmd).map_err(retry)?;
        self.ctx
            .send_by_key(&self.saga.topics.coupons, coupon_id.as_bytes(), bytes);
        Ok(())
    }

    /// Sends a Reserve for every line in `from` (`Asked` at create for an
    /// order without a coupon, `Waiting` once its coupon is redeemed).
    /// Returns the order with those lines asked.
    pub(crate) fn ask_stock(&mut self, mut o: Order, from: LineStock) -> Result<Order, Reject> {
        for i in 0..o.lines.len() {
            if o.lines[i].stock == from {
                let line = o.lines[i].clone();
                let action = InventoryAction::Reserve {
                    order_id: o.order_id.clone(),
                    quantity: line.quantity,
                };
                self.inventory(&o, &line, action)?;
                o.lines[i].stock = LineStock::Asked;
            }
        }
        Ok(o)
    }

    /// Gives back whatever the order asked for or holds: every line not
    /// refused or already released, and the coupon. Returns the order with
    /// those marked as releasing.
    pub(crate) fn release_all(&mut self, mut o: Order, why: &str) -> Result<Order, Reject> {
        for i in 0..o.lines.len() {
            if matches!(
                o.lines[i].stock,
                LineStock::Asked | LineStock::Reserved | LineStock::Sold
            ) {
                let line = o.lines[i].clone();
                let action = InventoryAction::Release {
                    order_id: o.order_id.clone(),
                    reason: why.to_string(),
                };
                self.inventory(&o, &line, action)?;
                o.lines[i].stock = LineStock::Releasing;
            }
        }
        if let (Some(c), Some(coupon_id)) = (o.coupon, o.coupon_id.clone()) {
            if matches!(c, CouponUse::Asked | CouponUse::Redeemed { .. }) {
                let action = CouponAction::Release {
                    order_id: o.order_id.clone(),
                };
                self.coupon(&o, &coupon_id, action)?;
                o.coupon = Some(CouponUse::Releasing);
            }
        }
        Ok(o)
    }

    /// Asks for the charge and waits for it.
    pub(crate) fn request_payment(&mut self, before: &Order, mut o: Order) -> Result<(), Reject> {
        o.payable = o.total - o.discount().min(o.total);
        if o.payable == 0 {
            // Nothing to charge (free, or fully discounted): sold at once.
            let o = self.sell(o)?;
            return self.transition(Some(before), o, Stage::Paid, None);
        }
        let payment_id = charge_id(&o.order_id);
        o.payment_id = Some(payment_id.clone());
        o.charge = Some(PaymentStep::Asked);
        o.charge_asked_at = Some(self.at);
        let request = PaymentRequest {
            payment_id,
            order_id: o.order_id.clone(),
            user_id: o.user_id.clone(),
            kind: PaymentKind::Charge,
            amount: Money(o.payable),
            currency: o.currency.clone(),
            requested_at: self.time(),
            refund_of: None,
        };
        let bytes = self.saga.codecs.payments.encode(&request).map_err(retry)?;
        self.ctx
            .send_by_key(&self.saga.topics.payments, o.order_id.as_bytes(), bytes);
        self.transition(Some(before), o, Stage::PaymentPending, None)
    }

    /// Sells every held line (inventory Commit). Returns the order with its
    /// lines marked sold.
    pub(crate) fn sell(&mut self, mut o: Order) -> Result<Order, Reject> {
        for i in 0..o.lines.len() {
            let line = o.lines[i].clone();
            let action = InventoryAction::Commit {
                order_id: o.order_id.clone(),
            };
            self.inventory(&o, &line, action)?;
            o.lines[i].stock = LineStock::Sold;
        }
        Ok(o)
    }
}

impl OrderSaga {
    fn create(&self, out: &mut Out<'_, '_, '_>, c: OrderCreate) -> Result<(), Reject> {
        let placeholder = out.ctx.state().order(&c.order_id).cloned();
        if let Some(order) = placeholder.as_ref().filter(|o| !o.awaiting_create) {
            // A repeated order-create: the order has its saga already. The
            // same order again is an upstream retry; another order under
            // its id is dead-lettered: dropped as a retry it would be lost,
            // and its sender would read the first order's states as its own.
            return match repeat_of(order, &c) {
                Repeat::Retry | Repeat::RetryUnchecked => {
                    out.ctx.already_decided();
                    Ok(())
                }
                Repeat::Reused => Err(Reject::Poison {
                    reason: ORDER_ID_REUSED,
                    message: reuse_message(order, &c),
                }),
            };
        }
        // A placeholder (cancels read before any order-create) has no
        // fingerprint: this order-create is the order, and gets its saga.
        // Cancels read before the order (refused as unknown) stay answered.
        let answered = placeholder
            .as_ref()
            .map(|p| p.cancels.clone())
            .unwrap_or_default();
        let total = total_of(&c).unwrap_or(0);
        let mut o = Order {
            order_id: c.order_id.clone(),
            user_id: c.user_id.clone(),
            currency: c.currency.clone(),
            lines: c
                .items
                .iter()
                .map(|i| Line {
                    product_id: i.product_id.clone(),
                    quantity: i.quantity,
                    unit_price: i.unit_price.0,
                    stock: if c.coupon_id.is_some() {
                        LineStock::Waiting
                    } else {
                        LineStock::Asked
                    },
                })
                .collect(),
            coupon_id: c.coupon_id.clone(),
            coupon: c.coupon_id.as_ref().map(|_| CouponUse::Asked),
            stage: Stage::Created,
            version: 0,
            total,
            payable: total,
            payment_id: None,
            created_at: out.at,
            reason: None,
            cancels: answered,
            charge: None,
            charge_asked_at: None,
            refund_id: None,
            refund: None,
            cancelling: None,
            awaiting_create: false,
            fingerprint: Some(fingerprint(&c)),
        };
        if let Some(why) = invalid(&self.rules, &c) {
            // Nothing was asked, so nothing needs releasing.
            o.lines
                .iter_mut()
                .for_each(|l| l.stock = LineStock::Refused);
            o.coupon = o.coupon.map(|_| CouponUse::Refused);
            o.reason = Some(why);
            return out.transition(placeholder.as_ref(), o, Stage::Rejected, None);
        }
        // With a coupon, its lines wait for the redemption (see
        // `LineStock::Waiting`); without one they are asked now.
        let o = out.ask_stock(o, LineStock::Asked)?;
        if let Some(coupon_id) = o.coupon_id.clone() {
            let action = CouponAction::Redeem {
                order_id: o.order_id.clone(),
                user_id: o.user_id.clone(),
            };
            out.coupon(&o, &coupon_id, action)?;
        }
        out.transition(placeholder.as_ref(), o, Stage::Created, None)
    }

    fn cancel(&self, out: &mut Out<'_, '_, '_>, k: OrderCancel) -> Result<(), Reject> {
        let known = out.ctx.state().order(&k.order_id).cloned();
        let Some(before) = known.clone().filter(|o| !o.awaiting_create) else {
            if known
                .as_ref()
                .is_some_and(|p| p.cancels.contains(&k.request_id))
            {
                out.ctx.already_decided();
                return Ok(());
            }
            // An order the saga has not seen (maybe not yet: order-cancel and
            // order-create are different topics). The refusal is remembered
            // in a placeholder, so a retried cancel is not answered twice;
            // an order-create that comes later replaces it.
            let mut unknown = Order {
                order_id: k.order_id.clone(),
                user_id: k.user_id.clone(),
                // ISO 4217's code for "no currency": the order has none.
                currency: "XXX".into(),
                lines: Vec::new(),
                coupon_id: None,
                coupon: None,
                stage: Stage::Rejected,
                version: 0,
                total: 0,
                payable: 0,
                payment_id: None,
                created_at: out.at,
                reason: Some("unknown order".into()),
                cancels: Vec::new(),
                charge: None,
                charge_asked_at: None,
                refund_id: None,
                refund: None,
                cancelling: None,
                awaiting_create: true,
                fingerprint: None,
            };
            if let Some(p) = &known {
                unknown.cancels = p.cancels.clone();
                unknown.created_at = p.created_at;
            }
            unknown.cancels.push(k.request_id.clone());
            out.ctx.outcome("cancel_refused");
            out.status(&unknown, OrderEvent::CancelRefused, Some(k.request_id))?;
            out.put(known.as_ref(), &unknown);
            return Ok(());
        };
        if before.cancels.contains(&k.request_id) {
            out.ctx.already_decided();
            return Ok(());
        }
        let mut o = before.clone();
        o.cancels.push(k.request_id.clone());
        let why = k
            .reason
            .clone()
            .unwrap_or_else(|| "cancelled by the buyer".into());
        let refusal = if k.user_id != o.user_id {
            Some("the order belongs to another user".to_string())
        } else if o.cancelling.is_some() {
            Some("a cancel of this order is already in progress".to_string())
        } else if o.stage == Stage::Paid && o.refund.is_some() {
            Some("the order's payment was already refunded".to_string())
        } else if o.stage.is_terminal() && o.stage != Stage::Paid {
            Some(format!("the order is already {}", o.stage.label()))
        } else {
            None
        };
        if let Some(why) = refusal {
            // Answered, never applied: state and version stay; the request
            // id is remembered so a retry gets no second answer.
            let mut answer = o.clone();
            answer.reason = Some(why);
            out.status(&answer, OrderEvent::CancelRefused, Some(k.request_id))?;
            out.ctx.outcome("cancel_refused");
            out.put(Some(&before), &o);
            return Ok(());
        }
        // Nothing to wait for: before payment, or paid with nothing charged
        // (fully discounted) — no money to give back, and a refund of 0
        // would break payment-request's contract.
        let uncharged = o.stage == Stage::Paid && o.payment_id.is_none();
        match o.stage {
            _ if o.stage == Stage::Created || uncharged => {
                let mut o = out.release_all(o, &why)?;
                o.reason = Some(why);
                out.transition(Some(&before), o, Stage::Cancelled, Some(k.request_id))
            }
            // The charge is on its way: the cancel completes when it resolves.
            Stage::PaymentPending => {
                o.cancelling = Some(Cancelling {
                    request_id: k.request_id,
                    reason: why,
                });
                out.ctx.outcome("cancel_waits_for_payment");
                out.put(Some(&before), &o);
                Ok(())
            }
            // Paid: give the money back first; stock and coupon follow the refund.
            _ => {
                o.cancelling = Some(Cancelling {
                    request_id: k.request_id,
                    reason: why,
                });
                let o = out.request_refund(o)?;
                out.ctx.outcome("refund_requested");
                out.put(Some(&before), &o);
                Ok(())
            }
        }
    }

    fn reply(&self, out: &mut Out<'_, '_, '_>, r: OrderReply) -> Result<(), Reject> {
        let Some(before) = out
            .ctx
            .state()
            .order(&r.order_id)
            .filter(|o| !o.awaiting_create)
            .cloned()
        else {
            // Valid data about an order this partition never saw (a reply
            // from a test or a foreign producer): nothing to act on.
            out.ctx.outcome("reply_for_unknown_order");
            return Ok(());
        };
        let mut o = before.clone();
        let mut failure: Option<String> = None;
        let changed = match &r.reply {
            Reply::Stock(s) => {
                let Some(i) = o.lines.iter().position(|l| l.product_id == s.product_id) else {
                    out.ctx.outcome("reply_unmatched");
                    return Ok(());
                };
                let line = &mut o.lines[i];
                let next = match (line.stock, s.outcome) {
                    (LineStock::Asked, StockOutcome::Reserved) => Some(LineStock::Reserved),
                    (LineStock::Asked, StockOutcome::InsufficientStock) => {
                        failure = Some(format!(
                            "out of stock: product {} (asked {}, available {})",
                            s.product_id, s.quantity, s.available
                        ));
                        Some(LineStock::Refused)
                    }
                    (LineStock::Asked, StockOutcome::UnknownProduct) => {
                        failure = Some(format!("unknown product {}", s.product_id));
                        Some(LineStock::Refused)
                    }
                    (LineStock::Releasing, StockOutcome::Released | StockOutcome::NotReserved) => {
                        Some(LineStock::Released)
                    }
                    // A repeat, or the answer to a Reserve overtaken by our
                    // own Release (which follows it on the same partition).
                    _ => None,
                };
                next.map(|n| line.stock = n).is_some()
            }
            Reply::Coupon(c) => {
                let next = match (o.coupon, c.outcome) {
                    (Some(CouponUse::Asked), CouponReplyOutcome::Redeemed) => {
                        let off = c.discount.map_or(0, |d| d.apply(Money(o.total)).0);
                        Some(CouponUse::Redeemed { off })
                    }
                    (Some(CouponUse::Asked), CouponReplyOutcome::RedeemRejected) => {
                        failure = Some(format!(
                            "coupon {} cannot be used: {}",
                            c.coupon_id,
                            c.reason.as_deref().unwrap_or("refused")
                        ));
                        Some(CouponUse::Refused)
                    }
                    (
                        Some(CouponUse::Releasing),
                        CouponReplyOutcome::Released | CouponReplyOutcome::NotRedeemed,
                    ) => Some(CouponUse::Released),
                    _ => None,
                };
                let changed = next.is_some();
                if next.is_some() {
                    o.coupon = next;
                }
                changed
            }
            Reply::Payment(p) => return self.payment_reply(out, before, p.clone()),
        };
        if !changed {
            out.ctx.outcome("reply_repeat");
            return Ok(());
        }
        if o.stage != Stage::Created {
            // A late answer to a finished order (its releases are on their way).
            out.put(Some(&before), &o);
            return Ok(());
        }
        if let Some(why) = failure {
            let mut o = out.release_all(o, &why)?;
            o.reason = Some(why);
            return out.transition(Some(&before), o, Stage::Rejected, None);
        }
        let o = if matches!(o.coupon, Some(CouponUse::Redeemed { .. })) {
            // The coupon is held: now the stock it was waiting for.
            out.ask_stock(o, LineStock::Waiting)?
        } else {
            o
        };
        if o.all_held() {
            return out.request_payment(&before, o);
        }
        out.put(Some(&before), &o);
        Ok(())
    }
}

impl Processor for OrderSaga {
    type Input = SagaInput;
    type State = OrderBook;

    fn process(
        &mut self,
        ctx: &mut Context<'_, OrderBook>,
        input: Incoming<SagaInput>,
    ) -> Result<(), Reject> {
        if let SagaInput::Reply(_) = &input.message {
            let clock = self.reply_clocks.entry(input.partition).or_default();
            clock.time = clock.time.max(input.timestamp);
            clock.advanced = true;
        }
        let mut out = Out {
            saga: self,
            ctx,
            at: input.timestamp,
        };
        match input.message {
            SagaInput::Create(c) => self.create(&mut out, c),
            SagaInput::Cancel(k) => self.cancel(&mut out, k),
            SagaInput::Reply(r) => self.reply(&mut out, r),
        }
    }

    fn tick_interval(&self) -> Option<std::time::Duration> {
        // Expiry is checked often enough to be late by a small fraction of
        // the timeout, never more than a second.
        Some((self.rules.payment_timeout / 10).clamp(
            std::time::Duration::from_millis(50),
            std::time::Duration::from_secs(1),
        ))
    }

    fn tick(&mut self, ctx: &mut Context<'_, OrderBook>, now: Millis) -> Result<(), Reject> {
        let partition = ctx.partition();
        let replies_at = self.reply_clocks.entry(partition).or_default().time_at(now);
        let timeout = self.rules.payment_timeout.as_millis() as i64;
        // A charge's deadline counts from the first tick that saw it asked,
        // in wall time: the record that led to it may be old when a lagging
        // saga reaches it, and the answer cannot come before the request
        // exists. After a restart the count starts again (later, never
        // early). Kept in memory: a deadline is a heuristic, not state.
        let asked = self.charges_seen.entry(partition).or_default();
        let mut pending = std::collections::HashSet::new();
        let mut due = Vec::new();
        for o in ctx.state().open() {
            if o.stage != Stage::PaymentPending || o.charge != Some(PaymentStep::Asked) {
                continue;
            }
            pending.insert(o.order_id.clone());
            let seen = *asked.entry(o.order_id.clone()).or_insert(now);
            if replies_at >= seen.saturating_add(timeout) {
                due.push(o.clone());
            }
        }
        asked.retain(|id, _| pending.contains(id));
        let mut out = Out {
            saga: self,
            ctx,
            at: now,
        };
        self.expire_payments(&mut out, due)
    }

    fn observe(&mut self, states: &mut dyn Iterator<Item = (i32, &OrderBook)>) {
        if let Some(g) = &self.gauges {
            g.observe(states);
        }
    }
}
