//! The one place that decides what a failed transaction call means.
//!
//! librdkafka tells us, per error, whether it is retriable, whether the
//! transaction must be aborted, or whether the producer is unusable (fatal;
//! a fenced producer is fatal). At offset commit, the group can say two
//! different things: ILLEGAL_GENERATION means a rebalance moved the
//! generation on while we kept our membership (abort, rewind, carry on with
//! whatever we still own); UNKNOWN_MEMBER_ID or FENCED_INSTANCE_ID mean we
//! are no longer a member at all: our partitions moved on while we were
//! stalled, we are a zombie and must stop writing.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// What the engine does about a failed transaction call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnAction {
    /// Call again after a capped backoff.
    Retry,
    /// Abort, rewind to the committed offsets, discard uncommitted state.
    Abort,
    /// The call timed out: the transaction's fate is unknown to us. Recreate
    /// the producer (its init fences the old epoch and aborts the stray
    /// transaction), then rewind and discard as for an abort.
    Recreate,
    /// This instance was fenced by a newer one (same transactional.id or
    /// group generation moved on): stop writing and exit non-zero.
    Fenced,
    /// The producer is unusable: exit non-zero so a supervisor restarts us.
    Fatal,
}

pub fn classify(error: &KafkaError) -> TxnAction {
    let code = error.rdkafka_error_code();
    if matches!(
        code,
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::FencedInstanceId
                | RDKafkaErrorCode::UnknownMemberId
        )
    ) {
        return TxnAction::Fenced;
    }
    if code == Some(RDKafkaErrorCode::IllegalGeneration) {
        return TxnAction::Abort;
    }
    if let KafkaError::Transaction(e) = error {
        if e.is_fatal() {
            return TxnAction::Fatal;
        }
        if e.txn_requires_abort() {
            return TxnAction::Abort;
        }
        if matches!(
            code,
            Some(RDKafkaErrorCode::OperationTimedOut) | Some(RDKafkaErrorCode::RequestTimedOut)
        ) {
            return TxnAction::Recreate;
        }
        if e.is_retriable() {
            return TxnAction::Retry;
        }
        return TxnAction::Abort;
    }
    match code {
        Some(RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut) => {
            TxnAction::Recreate
        }
        Some(RDKafkaErrorCode::Fatal) => TxnAction::Fatal,
        _ => TxnAction::Abort,
    }
}

/// Capped exponential backoff for retriable calls: 50 ms doubling to 2 s.
pub fn backoff(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_millis((50u64 << attempt.min(6)).min(2000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fencing_and_timeouts_are_not_plain_aborts() {
        assert_eq!(
            classify(&KafkaError::MessageProduction(
                RDKafkaErrorCode::ProducerFenced
            )),
            TxnAction::Fenced
        );
        assert_eq!(
            classify(&KafkaError::MessageProduction(RDKafkaErrorCode::Fenced)),
            TxnAction::Fenced
        );
        assert_eq!(
            classify(&KafkaError::MessageProduction(
                RDKafkaErrorCode::UnknownMemberId
            )),
            TxnAction::Fenced
        );
        assert_eq!(
            classify(&KafkaError::MessageProduction(
                RDKafkaErrorCode::IllegalGeneration
            )),
            TxnAction::Abort,
            "a rebalance, not a zombie"
        );
        assert_eq!(
            classify(&KafkaError::MessageProduction(
                RDKafkaErrorCode::OperationTimedOut
            )),
            TxnAction::Recreate
        );
        assert_eq!(
            classify(&KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut
            )),
            TxnAction::Abort
        );
    }

    #[test]
    fn backoff_is_capped() {
        assert_eq!(backoff(0).as_millis(), 50);
        assert_eq!(backoff(3).as_millis(), 400);
        assert_eq!(backoff(30).as_millis(), 2000);
    }
}
