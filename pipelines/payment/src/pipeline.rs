//! The payment pipeline: payment-request → the provider → order-replies.
//!
//! The call to the provider cannot join a Kafka transaction, so the
//! pipeline splits the work at it:
//!
//! 1. **intent recorded** — a request becomes a pending attempt in the
//!    partition's state, committed with the request's offset. Nothing is
//!    called yet.
//! 2. **request sent** — once the intent is committed (seen in `observe`),
//!    a task resolves it outside the loop: calls under the attempt's own
//!    idempotency key, retried on unknown outcomes (see `resolve`). Calls
//!    run concurrently, at most `max_in_flight`, and no transaction ever
//!    waits on one, so a slow provider costs latency, not throughput, and
//!    never times a transaction out.
//! 3. **answer received** — the definite answer waits in memory for the
//!    partition's next tick.
//! 4. **result committed** — the tick marks the attempt resolved and sends
//!    the reply, in one transaction.
//!
//! A crash after 1 finds the pending attempt on restore and calls again
//! (same key: the provider answers from memory, or applies the call for the
//! first time if it never saw it); a crash after 3 loses only the answer
//! held in memory, which the repeat call gets back; a repeated request for
//! an attempt resolved in 4 is answered from state without a call. So no
//! step can charge twice or lose a charge.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use surge_engine::{Context, Incoming, Millis, Processor, Reject};
use surge_payment_gateway::PaymentGateway;
use surge_schemas::order::{
    OrderReply, PaymentKind, PaymentOutcome, PaymentReply, PaymentRequest, Reply,
};
use surge_schemas::{Money, TopicCodec};
use tokio::sync::Semaphore;

use crate::attempts::{Attempt, AttemptChange, Kind, PaymentBook, Resolution};
use crate::hold::{Hold, Step};
use crate::metrics::PaymentMetrics;
use crate::resolve::{self, RetryPolicy};

/// Answers received, by partition, waiting for that partition's tick.
type Answers = Arc<Mutex<HashMap<i32, Vec<(String, Resolution)>>>>;

pub struct PaymentPipeline<G: PaymentGateway> {
    gateway: Arc<G>,
    runtime: tokio::runtime::Handle,
    policy: RetryPolicy,
    limit: Arc<Semaphore>,
    replies: TopicCodec<OrderReply>,
    replies_topic: String,
    /// Attempts with a task resolving them.
    in_flight: HashSet<String>,
    /// Pending attempts whose intent is committed (from the last observe).
    committed: HashMap<String, i32>,
    answers: Answers,
    metrics: PaymentMetrics,
    hold: Hold,
    /// Test hook: the attempt whose committed result stops the pipeline.
    held_result: Option<String>,
}

impl<G: PaymentGateway> PaymentPipeline<G> {
    pub fn new(
        gateway: G,
        runtime: tokio::runtime::Handle,
        policy: RetryPolicy,
        max_in_flight: usize,
        replies: TopicCodec<OrderReply>,
        replies_topic: String,
        metrics: PaymentMetrics,
    ) -> Self {
        Self {
            gateway: Arc::new(gateway),
            runtime,
            policy,
            limit: Arc::new(Semaphore::new(max_in_flight.max(1))),
            replies,
            replies_topic,
            in_flight: HashSet::new(),
            committed: HashMap::new(),
            answers: Arc::default(),
            metrics,
            hold: Hold::from_env(),
            held_result: None,
        }
    }

    /// Starts resolving `a` unless a task already is.
    fn launch(&mut self, partition: i32, a: &Attempt) {
        if !self.in_flight.insert(a.payment_id.clone()) {
            return;
        }
        let gateway = self.gateway.clone();
        let limit = self.limit.clone();
        let policy = self.policy.clone();
        let metrics = self.metrics.clone();
        let answers = self.answers.clone();
        let hold = self.hold.clone();
        let attempt = a.clone();
        metrics.in_flight.inc();
        self.runtime.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("never closed");
            if hold.at(Step::RequestSent, attempt.kind) {
                // Test hook: the call goes out, its answer is never used.
                let g = gateway.clone();
                let (a, p, m) = (attempt.clone(), policy.clone(), metrics.clone());
                tokio::spawn(async move {
                    resolve::resolve(&*g, &a, &p, &m, resolve::wall_clock).await
                });
                hold.stop(Step::RequestSent).await;
            }
            let answer =
                resolve::resolve(&*gateway, &attempt, &policy, &metrics, resolve::wall_clock).await;
            if hold.at(Step::AnswerReceived, attempt.kind) {
                hold.stop(Step::AnswerReceived).await;
            }
            metrics.in_flight.dec();
            answers
                .lock()
                .expect("answers lock")
                .entry(partition)
                .or_default()
                .push((attempt.payment_id, answer));
        });
    }

    fn reply(
        &self,
        ctx: &mut Context<'_, PaymentBook>,
        a: &Attempt,
        r: &Resolution,
        at: Millis,
    ) -> Result<(), Reject> {
        let reply = OrderReply {
            order_id: a.order_id.clone(),
            reply: Reply::Payment(PaymentReply {
                payment_id: a.payment_id.clone(),
                kind: match a.kind {
                    Kind::Charge => PaymentKind::Charge,
                    Kind::Refund => PaymentKind::Refund,
                },
                outcome: if r.approved {
                    PaymentOutcome::Approved
                } else {
                    PaymentOutcome::Declined
                },
                code: r.code.clone(),
                provider_ref: r.provider_ref.clone(),
                amount: Money(a.amount),
                currency: a.currency.clone(),
            }),
            replied_at: chrono::DateTime::from_timestamp_millis(at).unwrap_or_default(),
        };
        let bytes = self
            .replies
            .encode(&reply)
            .map_err(|e| Reject::Retry(e.to_string()))?;
        ctx.send_by_key(&self.replies_topic, a.order_id.as_bytes(), bytes);
        Ok(())
    }
}

fn attempt_of(r: &PaymentRequest) -> Attempt {
    Attempt {
        payment_id: r.payment_id.clone(),
        order_id: r.order_id.clone(),
        user_id: r.user_id.clone(),
        kind: match r.kind {
            PaymentKind::Charge => Kind::Charge,
            PaymentKind::Refund => Kind::Refund,
        },
        amount: r.amount.0,
        currency: r.currency.clone(),
        requested_at: r.requested_at.timestamp_millis(),
        refund_of: r.refund_of.clone(),
        resolution: None,
    }
}

impl<G: PaymentGateway> Processor for PaymentPipeline<G> {
    type Input = PaymentRequest;
    type State = PaymentBook;

    fn process(
        &mut self,
        ctx: &mut Context<'_, PaymentBook>,
        input: Incoming<PaymentRequest>,
    ) -> Result<(), Reject> {
        let request = input.message;
        let attempt = attempt_of(&request);
        match ctx.state().attempt(&request.payment_id).cloned() {
            Some(known) if known.order_id != attempt.order_id || known.kind != attempt.kind => {
                // One key, two different payments: calling would make the
                // provider refuse (or worse, replay the other's answer).
                Err(Reject::Poison {
                    reason: "payment_id_reused",
                    message: format!(
                        "payment id {} already names a {:?} of order {}",
                        known.payment_id, known.kind, known.order_id
                    ),
                })
            }
            Some(known) => {
                match &known.resolution {
                    // A repeated request is answered as the first one was.
                    Some(r) => {
                        self.reply(ctx, &known, r, input.timestamp)?;
                        ctx.outcome("answered_again");
                    }
                    None => ctx.already_decided(),
                }
                Ok(())
            }
            None => {
                ctx.apply(AttemptChange {
                    before: None,
                    after: Box::new(attempt),
                });
                ctx.outcome("intent_recorded");
                Ok(())
            }
        }
    }

    fn tick_interval(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_millis(20))
    }

    fn tick(&mut self, ctx: &mut Context<'_, PaymentBook>, now: Millis) -> Result<(), Reject> {
        let partition = ctx.partition();
        let answers = self
            .answers
            .lock()
            .expect("answers lock")
            .remove(&partition)
            .unwrap_or_default();
        for (id, resolution) in answers {
            // Whatever happens to this transaction, a new task is needed if
            // the attempt is still pending afterwards (an abort reverts it).
            self.in_flight.remove(&id);
            let Some(before) = ctx.state().attempt(&id).cloned() else {
                continue;
            };
            if before.resolution.is_some() {
                continue;
            }
            let mut after = before.clone();
            after.resolution = Some(resolution.clone());
            self.reply(ctx, &after, &resolution, now)?;
            ctx.outcome(if resolution.approved {
                "approved"
            } else {
                "declined"
            });
            if self.hold.armed(Step::ResultCommitted) == Some(after.kind) {
                self.held_result = Some(id.clone());
            }
            ctx.apply(AttemptChange {
                before: Some(Box::new(before)),
                after: Box::new(after),
            });
        }
        // Committed intents without a task (after a restore, or after an
        // abort undid a resolution) get one.
        let orphans: Vec<Attempt> = ctx
            .state()
            .pending()
            .filter(|a| {
                self.committed.get(&a.payment_id) == Some(&partition)
                    && !self.in_flight.contains(&a.payment_id)
            })
            .cloned()
            .collect();
        for a in &orphans {
            self.launch(partition, a);
        }
        Ok(())
    }

    fn observe(&mut self, states: &mut dyn Iterator<Item = (i32, &PaymentBook)>) {
        self.committed.clear();
        let mut pending = 0;
        let mut resolved_held = false;
        let mut launch = Vec::new();
        for (partition, book) in states {
            pending += book.pending_count();
            if let Some(id) = &self.held_result {
                resolved_held |= book.attempt(id).is_some_and(|a| a.resolution.is_some());
            }
            for a in book.pending() {
                self.committed.insert(a.payment_id.clone(), partition);
                if !self.in_flight.contains(&a.payment_id) {
                    launch.push((partition, a.clone()));
                }
            }
        }
        self.metrics.pending.set(pending as i64);
        if !launch.is_empty() && self.hold.at_any(Step::IntentRecorded, &launch) {
            self.hold.block(Step::IntentRecorded);
        }
        if resolved_held {
            self.hold.block(Step::ResultCommitted);
        }
        for (partition, a) in launch {
            self.launch(partition, &a);
        }
    }
}
