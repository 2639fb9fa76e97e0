//! The coupon rules: given a command and the partition's coupon book,
//! decide and emit. First come, first served means the partition's log
//! order: the engine feeds commands in that order, and the decision depends
//! only on the book and the command, so a replay after an abort decides the
//! same way.

use surge_engine::{Incoming, Outbox, Processor, Reject, StateTxn};
use surge_schemas::coupon::{CouponAction, CouponCommand, CouponDecision, Outcome};
use surge_schemas::TopicCodec;

use crate::ledger::{id_hash, CouponBook, CouponChange, Terms};

/// coupon-issue → coupon-result.
pub struct CouponProcessor {
    results: TopicCodec<CouponDecision>,
}

impl CouponProcessor {
    pub fn new(results: TopicCodec<CouponDecision>) -> Self {
        Self { results }
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
}

impl Verdict {
    fn rejected(
        outcome: Outcome,
        request: u128,
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
        }
    }
}

/// The rules, as a pure function of the book and the command.
fn judge(book: &CouponBook, cmd: &CouponCommand, request: u128) -> Verdict {
    let coupon = cmd.coupon_id.as_str();
    let at = cmd.requested_at.timestamp_millis();
    match &cmd.command {
        CouponAction::Issue { user_id } => {
            let Some(ledger) = book.coupon(coupon) else {
                return Verdict::rejected(Outcome::UnknownCoupon, request, book, coupon, None);
            };
            let terms = *ledger.terms().expect("a known coupon has terms");
            if let Some(from) = terms.active_from.filter(|from| at < *from) {
                let reason = format!("requested at {at} ms, coupon active from {from} ms");
                return Verdict::rejected(Outcome::NotActive, request, book, coupon, Some(reason));
            }
            if let Some(until) = terms.active_until.filter(|until| at >= *until) {
                let reason = format!("requested at {at} ms, coupon active until {until} ms");
                return Verdict::rejected(Outcome::NotActive, request, book, coupon, Some(reason));
            }
            let user = id_hash(user_id);
            if ledger.holds(user) {
                return Verdict::rejected(Outcome::Duplicate, request, book, coupon, None);
            }
            if ledger.issued() >= terms.stock {
                return Verdict::rejected(Outcome::SoldOut, request, book, coupon, None);
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
            }
        }
        CouponAction::Create {
            stock,
            active_from,
            active_until,
        } => {
            let invalid =
                |why: String| Verdict::rejected(Outcome::Invalid, request, book, coupon, Some(why));
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
            }
        }
        CouponAction::AdjustStock { delta, .. } => {
            let Some(ledger) = book.coupon(coupon) else {
                return Verdict::rejected(Outcome::UnknownCoupon, request, book, coupon, None);
            };
            let previous = *ledger.terms().expect("a known coupon has terms");
            let stock = previous.stock.saturating_add(*delta);
            if stock < ledger.issued() {
                let why = format!(
                    "stock {} {delta:+} = {stock} would be below the {} already issued",
                    previous.stock,
                    ledger.issued()
                );
                return Verdict::rejected(Outcome::Invalid, request, book, coupon, Some(why));
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
            }
        }
    }
}

impl Processor for CouponProcessor {
    type Input = CouponCommand;
    type State = CouponBook;

    fn process(
        &mut self,
        book: &mut StateTxn<'_, CouponBook>,
        input: Incoming<CouponCommand>,
        out: &mut Outbox,
    ) -> Result<(), Reject> {
        let cmd = input.message;
        let request = id_hash(&cmd.request_id);
        if book.get().already_decided(request) {
            // An upstream retry of a request already decided: no second decision.
            out.already_decided();
            return Ok(());
        }
        let verdict = judge(book.get(), &cmd, request);
        let stock = verdict.terms.map_or(0, |t| t.stock);
        let decision = CouponDecision {
            request_id: cmd.request_id,
            coupon_id: cmd.coupon_id,
            user_id: match cmd.command {
                CouponAction::Issue { user_id } => Some(user_id),
                _ => None,
            },
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
        book.apply(verdict.change);
        out.emit(decision.coupon_id.into_bytes(), payload);
        out.outcome(verdict.outcome.symbol());
        Ok(())
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
                let v = judge(book, c, id_hash(&c.request_id));
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
        let outcomes: Vec<Outcome> = run(&mut book, &[again, shrink, grow])
            .into_iter()
            .map(|o| o.0)
            .collect();
        assert_eq!(
            outcomes,
            vec![Outcome::Invalid, Outcome::Invalid, Outcome::Adjusted]
        );
        assert_eq!(book.coupon("c").unwrap().terms().unwrap().stock, 8);
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
