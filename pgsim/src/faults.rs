//! The fault knobs: the current [`PgSimFaults`] (changed at run time by
//! PUT /admin/faults), their validation, and the per-request [`Plan`]
//! sampled from them. Each fault is drawn independently per request; what
//! a plan means is applied by `process`, never here.

use std::sync::RwLock;
use std::time::Duration;

use rand::Rng;
use surge_core::settings::PgSimFaults;

use crate::idempotency::takeover_after;

/// The faults every new request samples from.
pub struct FaultKnobs {
    current: RwLock<PgSimFaults>,
}

impl FaultKnobs {
    pub fn new(faults: PgSimFaults) -> Self {
        Self {
            current: RwLock::new(faults),
        }
    }

    pub fn current(&self) -> PgSimFaults {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Merges `changes` (a full or partial JSON object with the settings'
    /// field names) into the current faults; nothing changes unless the
    /// result is valid. Answers the new faults.
    pub fn update(&self, changes: serde_json::Value) -> Result<PgSimFaults, String> {
        let serde_json::Value::Object(changes) = changes else {
            return Err("expected a JSON object of fault settings".into());
        };
        let mut guard = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut merged = serde_json::to_value(&*guard).map_err(|e| e.to_string())?;
        if let serde_json::Value::Object(fields) = &mut merged {
            fields.extend(changes);
        }
        // deny_unknown_fields on the settings struct refuses a misspelt knob.
        let next: PgSimFaults = serde_json::from_value(merged).map_err(|e| e.to_string())?;
        validate(&next)?;
        *guard = next.clone();
        Ok(next)
    }
}

/// Ratios are probabilities (0..=1), latencies are not negative, and a
/// decline needs a code to decline with.
pub fn validate(f: &PgSimFaults) -> Result<(), String> {
    for (name, ratio) in [
        ("decline_ratio", f.decline_ratio),
        ("error_before_ratio", f.error_before_ratio),
        ("error_after_ratio", f.error_after_ratio),
        ("timeout_after_ratio", f.timeout_after_ratio),
        ("conflict_ratio", f.conflict_ratio),
    ] {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(format!("{name} must be between 0 and 1, got {ratio}"));
        }
    }
    for (name, value) in [
        ("latency_median_ms", f.latency_median_ms),
        ("latency_sigma", f.latency_sigma),
    ] {
        if !value.is_finite() || value < 0.0 {
            return Err(format!("{name} must be a number >= 0, got {value}"));
        }
    }
    if f.decline_ratio > 0.0 && f.decline_codes.is_empty() {
        return Err("decline_codes must not be empty while decline_ratio > 0".into());
    }
    if let Some(bad) = f
        .decline_codes
        .iter()
        .find(|c| c.is_empty() || c.len() > 64 || !c.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(format!(
            "decline code {bad:?} must be 1 to 64 printable ASCII characters without spaces"
        ));
    }
    Ok(())
}

/// What happens to one charge or refund, in the order it is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// 409 as if another request with the key were in flight; nothing done.
    pub conflict: bool,
    /// Slept before anything else happens.
    pub latency: Duration,
    /// 500 before anything is done; the key is released.
    pub error_before: bool,
    /// The decline code of a charge refused by `decline_ratio` (never for refunds).
    pub decline: Option<String>,
    /// 500 although the payment was applied and its answer stored.
    pub error_after: bool,
    /// The answer is held back for `hang` after the payment was applied.
    pub timeout_after: bool,
}

impl Plan {
    pub fn sample(f: &PgSimFaults, is_charge: bool, rng: &mut impl Rng) -> Plan {
        let mut hit = |ratio: f64| ratio > 0.0 && rng.random::<f64>() < ratio;
        let conflict = hit(f.conflict_ratio);
        let error_before = hit(f.error_before_ratio);
        let declined = is_charge && hit(f.decline_ratio);
        let error_after = hit(f.error_after_ratio);
        let timeout_after = hit(f.timeout_after_ratio);
        let decline = declined.then(|| {
            if f.decline_codes.is_empty() {
                "card_declined".to_string()
            } else {
                f.decline_codes[rng.random_range(0..f.decline_codes.len())].clone()
            }
        });
        Plan {
            conflict,
            latency: latency(f, rng),
            error_before,
            decline,
            error_after,
            timeout_after,
        }
    }
}

/// A log-normal sample with the configured median and sigma. Capped at
/// half the claim takeover age, so a live request never looks abandoned.
fn latency(f: &PgSimFaults, rng: &mut impl Rng) -> Duration {
    if f.latency_median_ms <= 0.0 {
        return Duration::ZERO;
    }
    let z = if f.latency_sigma > 0.0 {
        // Box–Muller: u1 in (0, 1] keeps ln finite.
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    } else {
        0.0
    };
    let ms = f.latency_median_ms * (f.latency_sigma * z).exp();
    let cap = takeover_after(f.hang) / 2;
    Duration::try_from_secs_f64(ms / 1000.0).map_or(cap, |d| d.min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn partial_updates_merge_and_bad_ones_change_nothing() {
        let knobs = FaultKnobs::new(PgSimFaults::default());
        let next = knobs
            .update(serde_json::json!({ "decline_ratio": 0.25, "hang": "2s" }))
            .unwrap();
        assert_eq!(next.decline_ratio, 0.25);
        assert_eq!(next.hang, Duration::from_secs(2));
        assert_eq!(next.decline_codes, PgSimFaults::default().decline_codes);
        for bad in [
            serde_json::json!({ "decline_ratio": 1.5 }),
            serde_json::json!({ "latency_median_ms": -1 }),
            serde_json::json!({ "no_such_knob": 1 }),
            serde_json::json!({ "hang": "soon" }),
            serde_json::json!({ "decline_codes": [] }),
            serde_json::json!([1, 2]),
        ] {
            assert!(knobs.update(bad.clone()).is_err(), "{bad}");
        }
        assert_eq!(knobs.current(), next);
    }

    #[test]
    fn defaults_are_valid_and_fault_free() {
        let f = PgSimFaults::default();
        validate(&f).unwrap();
        let plan = Plan::sample(&f, true, &mut StdRng::seed_from_u64(1));
        assert_eq!(
            plan,
            Plan {
                conflict: false,
                latency: Duration::ZERO,
                error_before: false,
                decline: None,
                error_after: false,
                timeout_after: false,
            }
        );
    }

    #[test]
    fn ratios_of_one_always_hit_and_refunds_are_never_declined() {
        let f = PgSimFaults {
            decline_ratio: 1.0,
            error_before_ratio: 1.0,
            error_after_ratio: 1.0,
            timeout_after_ratio: 1.0,
            conflict_ratio: 1.0,
            decline_codes: vec!["x".into()],
            ..PgSimFaults::default()
        };
        let mut rng = StdRng::seed_from_u64(7);
        let charge = Plan::sample(&f, true, &mut rng);
        assert!(
            charge.conflict && charge.error_before && charge.error_after && charge.timeout_after
        );
        assert_eq!(charge.decline.as_deref(), Some("x"));
        assert_eq!(Plan::sample(&f, false, &mut rng).decline, None);
    }

    #[test]
    fn latency_has_the_configured_median_and_is_exact_without_sigma() {
        let exact = PgSimFaults {
            latency_median_ms: 300.0,
            ..PgSimFaults::default()
        };
        let mut rng = StdRng::seed_from_u64(3);
        assert_eq!(latency(&exact, &mut rng), Duration::from_millis(300));
        let spread = PgSimFaults {
            latency_sigma: 0.8,
            ..exact
        };
        let mut samples: Vec<Duration> = (0..2001).map(|_| latency(&spread, &mut rng)).collect();
        samples.sort();
        let median = samples[1000].as_secs_f64() * 1000.0;
        assert!((250.0..360.0).contains(&median), "median {median} ms");
        assert!(samples
            .iter()
            .all(|d| *d <= takeover_after(spread.hang) / 2));
    }
}
