//! What every handler shares.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use surge_core::shutdown::Shutdown;

use crate::faults::FaultKnobs;
use crate::ledger::Ledger;
use crate::metrics::SimMetrics;

pub struct Sim {
    pub ledger: Ledger,
    pub faults: FaultKnobs,
    pub metrics: SimMetrics,
    /// How long a key is remembered from its first use.
    pub key_retention: Duration,
    /// Bearer token for /admin; `None` leaves /admin open.
    pub admin_token: Option<String>,
    /// Raised once the ledger's schema exists; until then payments get 503.
    pub ready: AtomicBool,
    /// Cuts an injected hang short, so a stop is never held up by one.
    pub shutdown: Shutdown,
}

impl Sim {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}
