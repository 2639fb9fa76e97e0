//! Why a transaction failed, as types: the action decides what the engine
//! does (see [`crate::txn::classify`]), the reason is what operators see as
//! the `reason` label of `surge_pipeline_transactions_aborted_total`.

use crate::txn::TxnAction;

/// The step of the transaction that failed, or what else ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// A record could not be decided yet (registry outage, a processor's
    /// `Reject::Retry`): abort, wait a little, decide the batch again.
    Retry,
    /// Fault injection (`inject_abort_ratio`).
    Injected,
    /// The group took our partitions while a transaction was open.
    AssignmentLost,
    Begin,
    Produce,
    Offsets,
    SendOffsets,
    Commit,
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::Retry => "retry",
            Reason::Injected => "injected",
            Reason::AssignmentLost => "assignment_lost",
            Reason::Begin => "begin",
            Reason::Produce => "produce",
            Reason::Offsets => "offsets",
            Reason::SendOffsets => "send_offsets",
            Reason::Commit => "commit",
        }
    }

    /// Every label value, so the counter can be pre-registered at 0.
    pub const ALL: [Reason; 8] = [
        Reason::Retry,
        Reason::Injected,
        Reason::AssignmentLost,
        Reason::Begin,
        Reason::Produce,
        Reason::Offsets,
        Reason::SendOffsets,
        Reason::Commit,
    ];

    /// Retrying at once would spin (the registry is still down): pause first.
    pub fn pauses(self) -> bool {
        self == Reason::Retry
    }
}

/// A failed step of the open transaction and what to do about it.
#[derive(Debug)]
pub(crate) struct Failure {
    pub action: TxnAction,
    pub reason: Reason,
    pub detail: String,
}

impl Failure {
    pub fn new(action: TxnAction, reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            action,
            reason,
            detail: detail.into(),
        }
    }

    /// A record that may decode later or a processor asking for a retry.
    pub fn retry(detail: impl Into<String>) -> Self {
        Self::new(TxnAction::Abort, Reason::Retry, detail)
    }
}
