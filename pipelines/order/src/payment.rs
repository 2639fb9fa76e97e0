//! The saga's payment half: the charge's answer, refunds, cancels that wait
//! for a payment, and payment expiry.
//!
//! One charge per order (`charge_id`) and at most one refund (`refund_id`),
//! both ids fixed by the order id, so every replay asks the provider under
//! the same idempotency keys. A payment answer is fenced by where the order
//! stands when it arrives, never by when it was asked: an approval for an
//! order that expired meanwhile is refunded, and never brings it back.

use surge_engine::Reject;
use surge_schemas::order::{OrderEvent, PaymentKind, PaymentOutcome, PaymentReply, PaymentRequest};
use surge_schemas::Money;

use crate::book::{Order, PaymentStep, Stage};
use crate::saga::{retry, OrderSaga, Out};

/// The payment id of an order's charge: fixed by the order id alone, so
/// every retry of the request — and any replay of the saga — carries the
/// same idempotency key to the payment provider.
pub fn charge_id(order_id: &str) -> String {
    let h = xxhash_rust::xxh3::xxh3_128(format!("charge:{order_id}").as_bytes());
    format!("pay_{h:032x}")
}

/// The id (and idempotency key) of the refund of an order's charge.
pub fn refund_id(order_id: &str) -> String {
    let h = xxhash_rust::xxh3::xxh3_128(format!("refund:{order_id}").as_bytes());
    format!("ref_{h:032x}")
}

impl Out<'_, '_, '_> {
    /// Asks for the whole charge back. Returns the order marked refunding.
    pub(crate) fn request_refund(&mut self, mut o: Order) -> Result<Order, Reject> {
        let id = refund_id(&o.order_id);
        let request = PaymentRequest {
            payment_id: id.clone(),
            order_id: o.order_id.clone(),
            user_id: o.user_id.clone(),
            kind: PaymentKind::Refund,
            amount: Money(o.payable),
            currency: o.currency.clone(),
            requested_at: self.time(),
            refund_of: o.payment_id.clone(),
        };
        let bytes = self.saga.codecs.payments.encode(&request).map_err(retry)?;
        self.ctx
            .send_by_key(&self.saga.topics.payments, o.order_id.as_bytes(), bytes);
        o.refund_id = Some(id);
        o.refund = Some(PaymentStep::Asked);
        Ok(o)
    }

    /// Ends a cancel that waited for the payment: everything released,
    /// CANCELLED, answering the cancel request.
    fn finish_cancel(&mut self, before: &Order, mut o: Order) -> Result<(), Reject> {
        let cancel = o.cancelling.take();
        let why = cancel
            .as_ref()
            .map_or_else(|| "cancelled".to_string(), |c| c.reason.clone());
        let mut o = self.release_all(o, &why)?;
        o.reason = Some(why);
        self.transition(
            Some(before),
            o,
            Stage::Cancelled,
            cancel.map(|c| c.request_id),
        )
    }
}

impl OrderSaga {
    pub(crate) fn payment_reply(
        &self,
        out: &mut Out<'_, '_, '_>,
        before: Order,
        p: PaymentReply,
    ) -> Result<(), Reject> {
        let approved = p.outcome == PaymentOutcome::Approved;
        let step = if approved {
            PaymentStep::Approved
        } else {
            PaymentStep::Declined
        };
        let mut o = before.clone();
        match p.kind {
            PaymentKind::Charge => {
                if o.payment_id.as_deref() != Some(p.payment_id.as_str()) {
                    out.ctx.outcome("reply_unmatched");
                    return Ok(());
                }
                if o.charge != Some(PaymentStep::Asked) {
                    out.ctx.outcome("reply_repeat");
                    return Ok(());
                }
                o.charge = Some(step);
                match (o.stage, approved, o.cancelling.is_some()) {
                    (Stage::PaymentPending, true, false) => {
                        let o = out.sell(o)?;
                        out.transition(Some(&before), o, Stage::Paid, None)
                    }
                    (Stage::PaymentPending, false, false) => {
                        let why = format!(
                            "payment declined: {}",
                            p.code.as_deref().unwrap_or("no code")
                        );
                        let mut o = out.release_all(o, &why)?;
                        o.reason = Some(why);
                        out.transition(Some(&before), o, Stage::PaymentFailed, None)
                    }
                    // Cancelled while the charge was in flight: it went
                    // through, so it is given back before the cancel ends.
                    (Stage::PaymentPending, true, true) => {
                        let o = out.request_refund(o)?;
                        out.ctx.outcome("refund_requested");
                        out.put(Some(&before), &o);
                        Ok(())
                    }
                    (Stage::PaymentPending, false, true) => out.finish_cancel(&before, o),
                    // The order expired (or was cancelled) before the charge
                    // resolved: a late approval is refunded, the order stays.
                    (_, true, _) => {
                        let o = out.request_refund(o)?;
                        out.ctx.outcome("late_charge_refund_requested");
                        out.put(Some(&before), &o);
                        Ok(())
                    }
                    (_, false, _) => {
                        out.ctx.outcome("late_charge_declined");
                        out.put(Some(&before), &o);
                        Ok(())
                    }
                }
            }
            PaymentKind::Refund => {
                if o.refund_id.as_deref() != Some(p.payment_id.as_str()) {
                    out.ctx.outcome("reply_unmatched");
                    return Ok(());
                }
                if o.refund != Some(PaymentStep::Asked) {
                    out.ctx.outcome("reply_repeat");
                    return Ok(());
                }
                o.refund = Some(step);
                match (o.stage, approved) {
                    // A cancel of a paid order, or of one whose charge went
                    // through while it was cancelled: money back, so stock
                    // (sold or held) and coupon go back too.
                    (Stage::Paid | Stage::PaymentPending, true) => out.finish_cancel(&before, o),
                    (_, true) => {
                        out.status(&o, OrderEvent::LateChargeRefunded, None)?;
                        out.ctx.outcome("late_charge_refunded");
                        out.put(Some(&before), &o);
                        Ok(())
                    }
                    // The provider refused the refund: the money stays with
                    // us, so the order stays paid and the cancel is refused.
                    (Stage::Paid | Stage::PaymentPending, false) => {
                        let cancel = o.cancelling.take();
                        let why = format!(
                            "the refund was declined: {}",
                            p.code.as_deref().unwrap_or("no code")
                        );
                        let mut answer = o.clone();
                        answer.reason = Some(why.clone());
                        if o.stage == Stage::PaymentPending {
                            let mut paid = out.sell(o)?;
                            paid.reason = Some(why);
                            out.transition(Some(&before), paid.clone(), Stage::Paid, None)?;
                            answer.stage = Stage::Paid;
                            answer.version = paid.version + 1;
                        } else {
                            out.put(Some(&before), &o);
                        }
                        out.status(
                            &answer,
                            OrderEvent::CancelRefused,
                            cancel.map(|c| c.request_id),
                        )?;
                        out.ctx.outcome("cancel_refused");
                        Ok(())
                    }
                    // A net charge the provider will not give back: the
                    // audit reports it; only an operator can act.
                    (_, false) => {
                        out.ctx.outcome("late_refund_declined");
                        out.put(Some(&before), &o);
                        Ok(())
                    }
                }
            }
        }
    }

    /// Cancels the orders in `due`, whose charge has not resolved in time
    /// (see `OrderSaga::tick`). The charge may still go through; its answer
    /// then finds the order cancelled and asks for a refund.
    pub(crate) fn expire_payments(
        &self,
        out: &mut Out<'_, '_, '_>,
        due: Vec<Order>,
    ) -> Result<(), Reject> {
        for before in due {
            let mut o = before.clone();
            let why = format!(
                "payment not resolved within {}",
                humantime_secs(self.rules.payment_timeout)
            );
            let cancel = o.cancelling.take();
            let mut released = out.release_all(o.clone(), &why)?;
            released.reason = Some(why);
            o = released;
            out.ctx.outcome("payment_expired");
            out.transition(
                Some(&before),
                o,
                Stage::Cancelled,
                cancel.map(|c| c.request_id),
            )?;
        }
        Ok(())
    }
}

fn humantime_secs(d: std::time::Duration) -> String {
    format!("{} s", d.as_secs_f64())
}
