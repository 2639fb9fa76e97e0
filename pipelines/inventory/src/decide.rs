//! The inventory rules: given a command and the partition's book, decide and
//! emit. Admin commands are decided once per request id; the saga's
//! Reserve, Release and Commit are idempotent per (order, product): a repeat
//! is answered as the first one was and changes nothing. A decision depends
//! only on the book, the command and the record's timestamp, so a replay
//! after an abort decides, and writes, exactly the same.

use chrono::{DateTime, Utc};
use surge_engine::{Context, Incoming, Processor, Reject};
use surge_schemas::inventory::{
    InventoryAction, InventoryCommand, InventoryEvent, InventoryOutcome,
};
use surge_schemas::order::{OrderReply, Reply, StockOutcome, StockReply};
use surge_schemas::TopicCodec;

use crate::ledger::{
    id_hash, InventoryBook, InventoryChange, Reservation, ReservationStatus, Stock,
};

/// inventory-commands → inventory-result, plus a stock reply on
/// order-replies for every saga command.
pub struct InventoryProcessor {
    events: TopicCodec<InventoryEvent>,
    replies: TopicCodec<OrderReply>,
    /// The resolved name of inventory-result.
    events_topic: String,
    /// The resolved name of order-replies.
    replies_topic: String,
}

impl InventoryProcessor {
    pub fn new(
        events: TopicCodec<InventoryEvent>,
        replies: TopicCodec<OrderReply>,
        events_topic: String,
        replies_topic: String,
    ) -> Self {
        Self {
            events,
            replies,
            events_topic,
            replies_topic,
        }
    }
}

/// A decision before it is stamped with where its command came from.
#[derive(Debug)]
struct Verdict {
    outcome: InventoryOutcome,
    /// Units asked by a Reserve (as first asked), held by a Release or
    /// Commit; 0 for admin commands and NOT_RESERVED.
    quantity: i32,
    reason: Option<String>,
    change: Option<InventoryChange>,
}

impl Verdict {
    fn answer(outcome: InventoryOutcome, quantity: i32, reason: Option<String>) -> Self {
        Verdict {
            outcome,
            quantity,
            reason,
            change: None,
        }
    }

    fn admin(outcome: InventoryOutcome, reason: Option<String>, change: InventoryChange) -> Self {
        Verdict {
            outcome,
            quantity: 0,
            reason,
            change: Some(change),
        }
    }

    fn moved(
        outcome: InventoryOutcome,
        order: u128,
        product: &str,
        now: Reservation,
        previous: Option<Reservation>,
        reason: Option<String>,
    ) -> Self {
        let quantity = now.quantity;
        Verdict {
            outcome,
            quantity,
            reason,
            change: Some(InventoryChange::Reservation {
                order,
                product: product.to_string(),
                now,
                previous,
            }),
        }
    }
}

fn not_reserved(order_id: &str, product: &str, held: Option<Reservation>) -> Verdict {
    let why = match held.map(|r| r.status) {
        None => format!("order {order_id} holds no reservation of product {product}"),
        Some(ReservationStatus::Released) => {
            format!("the reservation of order {order_id} on product {product} was released")
        }
        Some(ReservationStatus::Insufficient) => format!(
            "the reservation of order {order_id} on product {product} was refused (insufficient stock)"
        ),
        Some(ReservationStatus::UnknownProduct) => format!(
            "the reservation of order {order_id} on product {product} was refused (unknown product)"
        ),
        // Callers release or commit a held reservation; never answered here.
        Some(ReservationStatus::Reserved | ReservationStatus::Sold) => {
            format!("order {order_id} holds product {product}")
        }
    };
    Verdict::answer(InventoryOutcome::NotReserved, 0, Some(why))
}

/// The rules, as a pure function of the book and the command.
fn judge(book: &InventoryBook, cmd: &InventoryCommand, request: u128) -> Verdict {
    use InventoryOutcome as O;
    use ReservationStatus as S;
    let product = cmd.product_id.as_str();
    let stock = book.stock(product);
    match &cmd.command {
        InventoryAction::CreateProduct { stock: units } => {
            let invalid = |why: String| {
                Verdict::admin(O::Invalid, Some(why), InventoryChange::Decided { request })
            };
            if let Some(s) = stock {
                return invalid(format!(
                    "product {product} already exists with {} units created; adjust its stock instead",
                    s.created
                ));
            }
            if *units < 0 {
                return invalid(format!("stock {units} is negative"));
            }
            Verdict::admin(
                O::Created,
                None,
                InventoryChange::Created {
                    request,
                    product: product.to_string(),
                    stock: *units,
                },
            )
        }
        InventoryAction::AdjustStock { delta, .. } => {
            let Some(s) = stock else {
                return Verdict::admin(
                    O::UnknownProduct,
                    None,
                    InventoryChange::Decided { request },
                );
            };
            let invalid = |why: String| {
                Verdict::admin(O::Invalid, Some(why), InventoryChange::Decided { request })
            };
            match (
                s.available.checked_add(*delta),
                s.created.checked_add(*delta),
            ) {
                (Some(available), Some(_)) if available >= 0 => Verdict::admin(
                    O::Adjusted,
                    None,
                    InventoryChange::Adjusted {
                        request,
                        product: product.to_string(),
                        delta: *delta,
                    },
                ),
                (Some(available), Some(_)) => invalid(format!(
                    "available {} {delta:+} = {available} would be below 0",
                    s.available
                )),
                _ => invalid(format!("created {} {delta:+} overflows 64 bits", s.created)),
            }
        }
        InventoryAction::Reserve { order_id, quantity } => {
            let order = id_hash(order_id);
            let q = *quantity;
            if let Some(held) = book.reservation(order, product) {
                // A repeat: answered as the first time, nothing changes.
                return match held.status {
                    S::Reserved | S::Sold | S::Released => {
                        Verdict::answer(O::Reserved, held.quantity, None)
                    }
                    S::Insufficient => Verdict::answer(
                        O::InsufficientStock,
                        held.quantity,
                        Some(format!(
                            "asked {} units of product {product}; refused when first asked, fewer were available",
                            held.quantity
                        )),
                    ),
                    S::UnknownProduct => Verdict::answer(O::UnknownProduct, held.quantity, None),
                };
            }
            match stock {
                None => Verdict::moved(
                    O::UnknownProduct,
                    order,
                    product,
                    Reservation::new(S::UnknownProduct, q),
                    None,
                    None,
                ),
                Some(s) if s.available >= i64::from(q) => Verdict::moved(
                    O::Reserved,
                    order,
                    product,
                    Reservation::new(S::Reserved, q),
                    None,
                    None,
                ),
                Some(s) => Verdict::moved(
                    O::InsufficientStock,
                    order,
                    product,
                    Reservation::new(S::Insufficient, q),
                    None,
                    Some(format!(
                        "asked {q} units of product {product}, {} available",
                        s.available
                    )),
                ),
            }
        }
        InventoryAction::Release { order_id, .. } => {
            let order = id_hash(order_id);
            match book.reservation(order, product) {
                Some(
                    held @ Reservation {
                        status: S::Reserved | S::Sold,
                        quantity,
                    },
                ) => Verdict::moved(
                    O::Released,
                    order,
                    product,
                    Reservation::new(S::Released, quantity),
                    Some(held),
                    None,
                ),
                Some(Reservation {
                    status: S::Released,
                    quantity,
                }) => Verdict::answer(O::Released, quantity, None),
                other => not_reserved(order_id, product, other),
            }
        }
        InventoryAction::Commit { order_id } => {
            let order = id_hash(order_id);
            match book.reservation(order, product) {
                Some(
                    held @ Reservation {
                        status: S::Reserved,
                        quantity,
                    },
                ) => Verdict::moved(
                    O::Committed,
                    order,
                    product,
                    Reservation::new(S::Sold, quantity),
                    Some(held),
                    None,
                ),
                Some(Reservation {
                    status: S::Sold,
                    quantity,
                }) => Verdict::answer(O::Committed, quantity, None),
                other => not_reserved(order_id, product, other),
            }
        }
    }
}

/// The saga's view of an outcome of one of its commands.
fn stock_outcome(outcome: InventoryOutcome) -> Option<StockOutcome> {
    use InventoryOutcome as O;
    Some(match outcome {
        O::Reserved => StockOutcome::Reserved,
        O::InsufficientStock => StockOutcome::InsufficientStock,
        O::UnknownProduct => StockOutcome::UnknownProduct,
        O::Released => StockOutcome::Released,
        O::Committed => StockOutcome::Committed,
        O::NotReserved => StockOutcome::NotReserved,
        O::Created | O::Adjusted | O::Invalid => return None,
    })
}

/// The metric label of an outcome (its symbol, lowercase).
fn label(outcome: InventoryOutcome) -> &'static str {
    use InventoryOutcome as O;
    match outcome {
        O::Created => "created",
        O::Adjusted => "adjusted",
        O::Reserved => "reserved",
        O::InsufficientStock => "insufficient_stock",
        O::Released => "released",
        O::Committed => "committed",
        O::UnknownProduct => "unknown_product",
        O::Invalid => "invalid",
        O::NotReserved => "not_reserved",
    }
}

impl Processor for InventoryProcessor {
    type Input = InventoryCommand;
    type State = InventoryBook;

    fn process(
        &mut self,
        ctx: &mut Context<'_, InventoryBook>,
        input: Incoming<InventoryCommand>,
    ) -> Result<(), Reject> {
        let cmd = input.message;
        if let InventoryAction::Reserve { quantity, .. } = &cmd.command {
            // The decoder refuses these; a command built in process must too.
            if *quantity < 1 {
                return Err(Reject::Poison {
                    reason: "contract_violation",
                    message: format!("Reserve.quantity {quantity} is below 1"),
                });
            }
        }
        let request = id_hash(&cmd.request_id);
        let order_id = cmd.command.order_id().map(str::to_string);
        if order_id.is_none() && ctx.state().already_decided(request) {
            // An upstream retry of an admin request already decided.
            ctx.already_decided();
            return Ok(());
        }
        let verdict = judge(ctx.state(), &cmd, request);
        if let Some(change) = verdict.change {
            // Undone by the engine's savepoint if encoding below fails.
            ctx.apply(change);
        }
        let stock: Stock = ctx
            .state()
            .stock(&cmd.product_id)
            .copied()
            .unwrap_or_default();
        // The record's log time: a replay stamps the same instant.
        let at: DateTime<Utc> =
            DateTime::from_timestamp_millis(input.timestamp).unwrap_or_default();
        let event = InventoryEvent {
            request_id: cmd.request_id,
            product_id: cmd.product_id,
            order_id,
            outcome: verdict.outcome,
            quantity: verdict.quantity,
            available: stock.available,
            reserved: stock.reserved,
            sold: stock.sold,
            created: stock.created,
            reason: verdict.reason,
            source_partition: input.partition,
            source_offset: input.offset,
            decided_at: at,
        };
        let payload = self
            .events
            .encode(&event)
            .map_err(|e| Reject::Retry(e.to_string()))?;
        let reply = match (&event.order_id, stock_outcome(verdict.outcome)) {
            (Some(order_id), Some(outcome)) => {
                let reply = OrderReply {
                    order_id: order_id.clone(),
                    reply: Reply::Stock(StockReply {
                        product_id: event.product_id.clone(),
                        outcome,
                        quantity: verdict.quantity,
                        available: stock.available,
                    }),
                    replied_at: at,
                };
                let bytes = self
                    .replies
                    .encode(&reply)
                    .map_err(|e| Reject::Retry(e.to_string()))?;
                Some((reply.order_id, bytes))
            }
            _ => None,
        };
        ctx.emit(&self.events_topic, event.product_id.into_bytes(), payload);
        if let Some((order_id, bytes)) = reply {
            ctx.send_by_key(&self.replies_topic, order_id.into_bytes(), bytes);
        }
        ctx.outcome(label(verdict.outcome));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
