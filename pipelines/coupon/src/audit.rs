//! The coupon invariants of DESIGN.md (1–4), checked from the outside: from
//! coupon-issue in log order (what was asked, and in which order) and the
//! committed decisions on coupon-result. Used by `surge verify` and by the
//! tests, so both prove the same thing.
//!
//! "Log order" is the order commands were DECIDED in, which is the log order
//! of the partition that owns the coupon (murmur2 of the couponId in the
//! value, `surge_kafka::partition_for`). A producer with another partitioner
//! or key (librdkafka's default CRC32, `couponId:userId`, no key) can put a
//! coupon's command on another partition; the engine decides nothing there,
//! it forwards the record unchanged (plus header `surge.forwarded.from` =
//! "<partition>:<offset>") to the owner, where the copy is decided at the
//! copy's position. So the replay skips every record on a non-owner
//! partition and counts the copy, which is in the log like any command.
//! Replaying all partitions in (partition, offset) order instead would meet
//! an original before its copy whenever it sits on a lower partition than
//! the owner, and take a position the command was never decided at.

use std::collections::{BTreeMap, HashMap, HashSet};

use surge_schemas::coupon::{CouponAction, CouponCommand, CouponDecision, Outcome};

/// One command as it sits in the input log.
pub struct Logged<'a> {
    pub partition: i32,
    pub offset: i64,
    pub command: &'a CouponCommand,
}

/// What the audit found.
#[derive(Debug, Default)]
pub struct Audit {
    pub requests: usize,
    pub decisions: usize,
    pub by_outcome: BTreeMap<&'static str, usize>,
    pub coupons: usize,
    /// Human-readable violations, each with its first examples; empty = all invariants hold.
    pub violations: Vec<String>,
}

impl Audit {
    pub fn holds(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Checks invariants 1–4. `log` must be in log order within each partition;
/// `partitions` is coupon-issue's partition count, which decides the
/// partition that owns each coupon (see the module doc: only records on the
/// owner are replayed for first-come-first-served).
pub fn audit(log: &[Logged<'_>], partitions: i32, decisions: &[CouponDecision]) -> Audit {
    let mut report = Audit {
        decisions: decisions.len(),
        ..Audit::default()
    };
    for d in decisions {
        *report.by_outcome.entry(d.outcome.symbol()).or_default() += 1;
    }

    // 1. Exactly one decision per distinct request: a request id within
    // its coupon (the same id for another coupon is another request).
    let requested: HashSet<RequestKey<'_>> = log.iter().map(|l| key_of(l.command)).collect();
    report.requests = requested.len();
    let mut per_request: HashMap<RequestKey<'_>, usize> = HashMap::new();
    let mut outcome_of: HashMap<RequestKey<'_>, Outcome> = HashMap::new();
    for d in decisions {
        let k = (d.coupon_id.as_str(), d.request_id.as_str());
        *per_request.entry(k).or_default() += 1;
        outcome_of.entry(k).or_insert(d.outcome);
    }
    let named = |k: &RequestKey<'_>| format!("{} of {}", k.1, k.0);
    let missing: Vec<String> = requested
        .iter()
        .filter(|r| !per_request.contains_key(*r))
        .map(named)
        .collect();
    if !missing.is_empty() {
        report.violations.push(format!(
            "1. {} request(s) without a decision, e.g. {:?}",
            missing.len(),
            first(&missing)
        ));
    }
    let doubled: Vec<String> = per_request
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(r, n)| format!("{} ×{n}", named(r)))
        .collect();
    if !doubled.is_empty() {
        report.violations.push(format!(
            "1. {} request(s) with more than one decision, e.g. {:?}",
            doubled.len(),
            first(&doubled)
        ));
    }
    let unknown: Vec<String> = per_request
        .keys()
        .filter(|r| !requested.contains(*r))
        .map(named)
        .collect();
    if !unknown.is_empty() {
        report.violations.push(format!(
            "1. {} decision(s) for requests never sent, e.g. {:?}",
            unknown.len(),
            first(&unknown)
        ));
    }

    // Replay the log's FCFS semantics: per coupon, the stock in force and
    // the first distinct users, in the order they were decided (the owner
    // partition's log order), that should have been ISSUED.
    let mut seen = HashSet::new();
    let mut expected: BTreeMap<&str, Expected<'_>> = BTreeMap::new();
    for l in log {
        let c = l.command;
        if l.partition != surge_kafka::partition_for(c.coupon_id.as_bytes(), partitions) {
            continue; // misrouted: decided where its forwarded copy sits
        }
        if !seen.insert(key_of(c)) {
            continue; // a retry: no second decision
        }
        match &c.command {
            CouponAction::Create { stock, .. } => {
                // A create the pipeline refused (negative stock, a bad
                // window or discount, an id already taken) makes no coupon:
                // the audit takes the pipeline's word for which, as for
                // NOT_ACTIVE below, and replays the stock of those it took.
                if outcome_of.get(&key_of(c)) != Some(&Outcome::Created) {
                    continue;
                }
                expected
                    .entry(c.coupon_id.as_str())
                    .or_insert_with(|| Expected {
                        stock: *stock,
                        ..Default::default()
                    });
            }
            CouponAction::AdjustStock { delta, .. } => {
                if let Some(e) = expected.get_mut(c.coupon_id.as_str()) {
                    // Refused past a 64-bit count or below what was issued.
                    match e.stock.checked_add(*delta) {
                        Some(stock) if stock >= e.winners.len() as i64 => e.stock = stock,
                        _ => {}
                    }
                }
            }
            // Redemptions use units already issued; they change no FCFS decision.
            CouponAction::Redeem { .. } | CouponAction::Release { .. } => {}
            CouponAction::Issue { user_id } => {
                let Some(e) = expected.get_mut(c.coupon_id.as_str()) else {
                    continue;
                };
                // NOT_ACTIVE requests are judged by the pipeline with the
                // window; the audit takes the pipeline's word for those.
                if outcome_of.get(&key_of(c)) == Some(&Outcome::NotActive) {
                    continue;
                }
                if e.asked.insert(user_id.as_str()) && (e.winners.len() as i64) < e.stock {
                    e.winners.push(user_id.as_str());
                }
            }
        }
    }
    report.coupons = expected.len();

    let mut issued: BTreeMap<&str, Vec<(i64, &str)>> = BTreeMap::new();
    for d in decisions.iter().filter(|d| d.outcome == Outcome::Issued) {
        issued
            .entry(d.coupon_id.as_str())
            .or_default()
            .push((d.sequence.unwrap_or(-1), d.user_id.as_deref().unwrap_or("")));
    }
    for (coupon, e) in &expected {
        let mut got = issued.remove(coupon).unwrap_or_default();
        got.sort();
        // 2. ISSUED <= stock; = stock when enough distinct users asked.
        if got.len() as i64 > e.stock {
            report.violations.push(format!(
                "2. {coupon}: oversold, {} ISSUED for stock {}",
                got.len(),
                e.stock
            ));
        }
        if e.asked.len() as i64 >= e.stock && (got.len() as i64) < e.stock {
            report.violations.push(format!(
                "2. {coupon}: leaked stock, {} ISSUED for stock {} with {} distinct users asking",
                got.len(),
                e.stock,
                e.asked.len()
            ));
        }
        // 3. At most one ISSUED per (coupon, user).
        let mut users = HashSet::new();
        let twice: Vec<&str> = got
            .iter()
            .filter(|(_, u)| !users.insert(*u))
            .map(|(_, u)| *u)
            .collect();
        if !twice.is_empty() {
            report.violations.push(format!(
                "3. {coupon}: {} user(s) ISSUED twice, e.g. {:?}",
                twice.len(),
                first(&twice)
            ));
        }
        // 4. FCFS: ISSUED = the first distinct users in log order, sequences in that order.
        let want: Vec<(i64, &str)> = e
            .winners
            .iter()
            .enumerate()
            .map(|(i, u)| (i as i64 + 1, *u))
            .collect();
        if got != want {
            let at = got
                .iter()
                .zip(&want)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(want.len()));
            report.violations.push(format!(
                "4. {coupon}: ISSUED is not the first distinct users in log order; first difference at sequence {}: got {:?}, expected {:?}",
                at + 1,
                got.get(at),
                want.get(at)
            ));
        }
    }
    for (coupon, got) in issued {
        report.violations.push(format!(
            "2. {coupon}: {} ISSUED for a coupon never created",
            got.len()
        ));
    }
    report
}

/// What names a request: (coupon id, request id).
type RequestKey<'a> = (&'a str, &'a str);

fn key_of(c: &CouponCommand) -> RequestKey<'_> {
    (c.coupon_id.as_str(), c.request_id.as_str())
}

#[derive(Default)]
struct Expected<'a> {
    stock: i64,
    asked: HashSet<&'a str>,
    winners: Vec<&'a str>,
}

fn first<T: std::fmt::Debug + Clone>(items: &[T]) -> Vec<T> {
    items.iter().take(5).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use surge_schemas::coupon::CouponAction;

    const PARTITIONS: i32 = 6;

    fn command(request: &str, coupon: &str, action: CouponAction) -> CouponCommand {
        CouponCommand {
            request_id: request.into(),
            coupon_id: coupon.into(),
            requested_at: surge_schemas::now(),
            command: action,
        }
    }

    fn decision(c: &CouponCommand, outcome: Outcome, sequence: Option<i64>) -> CouponDecision {
        let user_id = match &c.command {
            CouponAction::Issue { user_id } => Some(user_id.clone()),
            _ => None,
        };
        CouponDecision {
            request_id: c.request_id.clone(),
            coupon_id: c.coupon_id.clone(),
            user_id,
            outcome,
            sequence,
            stock: 1,
            issued: sequence.unwrap_or(0),
            remaining: 1 - sequence.unwrap_or(0),
            reason: None,
            source_partition: 0,
            source_offset: 0,
            requested_at: c.requested_at,
            decided_at: c.requested_at,
            order_id: None,
            discount: None,
        }
    }

    /// A record on a partition before its coupon's owner, forwarded there
    /// and decided at its copy's position, wins the unit: the audit agrees.
    /// Replaying in (partition, offset) order would meet the original before
    /// the coupon exists and expect the later user to win.
    #[test]
    fn fcfs_counts_a_forwarded_copy_where_it_was_decided() {
        let coupon = (0..)
            .map(|i| format!("c{i}"))
            .find(|c| surge_kafka::partition_for(c.as_bytes(), PARTITIONS) >= 2)
            .unwrap();
        let owner = surge_kafka::partition_for(coupon.as_bytes(), PARTITIONS);
        let create = command(
            "create",
            &coupon,
            CouponAction::Create {
                stock: 1,
                active_from: None,
                active_until: None,
                discount: None,
            },
        );
        let early = command(
            "early",
            &coupon,
            CouponAction::Issue {
                user_id: "u-early".into(),
            },
        );
        let late = command(
            "late",
            &coupon,
            CouponAction::Issue {
                user_id: "u-late".into(),
            },
        );
        let above = command(
            "above",
            &coupon,
            CouponAction::Issue {
                user_id: "u-above".into(),
            },
        );
        // (partition, offset, command): early misrouted below the owner,
        // above misrouted after it; both copied to the owner.
        let log = [
            (0, 0, &early),
            (owner, 0, &create),
            (owner, 1, &early),
            (owner, 2, &late),
            (owner, 3, &above),
            (owner + 1, 0, &above),
        ];
        let logged: Vec<Logged<'_>> = log
            .iter()
            .map(|(partition, offset, command)| Logged {
                partition: *partition,
                offset: *offset,
                command,
            })
            .collect();
        let decided_at_the_copy = [
            decision(&create, Outcome::Created, None),
            decision(&early, Outcome::Issued, Some(1)),
            decision(&late, Outcome::SoldOut, None),
            decision(&above, Outcome::SoldOut, None),
        ];
        let report = audit(&logged, PARTITIONS, &decided_at_the_copy);
        assert!(report.holds(), "{:?}", report.violations);
        assert_eq!(report.requests, 4);

        // Issuing to the later user instead breaks FCFS.
        let wrong = [
            decision(&create, Outcome::Created, None),
            decision(&early, Outcome::SoldOut, None),
            decision(&late, Outcome::Issued, Some(1)),
            decision(&above, Outcome::SoldOut, None),
        ];
        let report = audit(&logged, PARTITIONS, &wrong);
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        assert!(
            report.violations[0].starts_with("4. "),
            "{:?}",
            report.violations
        );
    }

    /// A create the pipeline refused makes no coupon: requests for it are
    /// UNKNOWN_COUPON and that holds; a unit issued for it anyway does not.
    #[test]
    fn a_refused_create_makes_no_coupon_to_oversell() {
        let create = command(
            "create",
            "neg",
            CouponAction::Create {
                stock: -1,
                active_from: None,
                active_until: None,
                discount: None,
            },
        );
        let ask = command(
            "ask",
            "neg",
            CouponAction::Issue {
                user_id: "u1".into(),
            },
        );
        let partition = surge_kafka::partition_for(b"neg", PARTITIONS);
        let logged = [(0, &create), (1, &ask)].map(|(offset, command)| Logged {
            partition,
            offset,
            command,
        });
        let refused = [
            decision(&create, Outcome::Invalid, None),
            decision(&ask, Outcome::UnknownCoupon, None),
        ];
        let report = audit(&logged, PARTITIONS, &refused);
        assert!(report.holds(), "{:?}", report.violations);
        assert_eq!(report.coupons, 0);

        let issued_anyway = [
            decision(&create, Outcome::Invalid, None),
            decision(&ask, Outcome::Issued, Some(1)),
        ];
        let report = audit(&logged, PARTITIONS, &issued_anyway);
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        assert!(
            report.violations[0].contains("never created"),
            "{:?}",
            report.violations
        );
    }
}
