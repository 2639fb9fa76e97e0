//! The transactional producer: creating and initialising it (waiting for
//! the broker), sending one record of the open transaction, and calling a
//! transaction API with retries. Every call here blocks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use surge_kafka::ClientFactory;

use crate::failure::{Failure, Reason};
use crate::runner::ExitReason;
use crate::spec::PipelineSpec;
use crate::txn::{self, TxnAction};

/// Threaded: its own thread serves delivery reports, which
/// abort_transaction waits for (a BaseProducer nobody polls would make every
/// abort run into its timeout).
pub(crate) type TxnProducer = ThreadedProducer<DefaultProducerContext>;

/// A transactional producer, initialised: its init_transactions bumps the
/// epoch of our transactional.id, which fences any older incarnation and
/// aborts what it left open. Used at start and whenever the producer is
/// replaced. The broker may be away (a restart, a rolling upgrade,
/// everything booting at once): a timed-out or retriable init is called
/// again — librdkafka resumes it — until it succeeds or we are asked to stop,
/// instead of exiting into the outage.
pub(crate) fn new_producer(
    factory: &ClientFactory,
    spec: &PipelineSpec,
    shutdown: &AtomicBool,
) -> Result<TxnProducer, ExitReason> {
    let what = "initialising the transactional producer";
    let cfg = factory.transactional_producer_config(&spec.name, &spec.transactional_id());
    let producer: TxnProducer = cfg.create().map_err(|e| exit_for(&e, what))?;
    // Short attempts, so that a stop request is seen within seconds.
    let attempt_timeout = spec
        .settings
        .transaction_call_timeout
        .min(Duration::from_secs(5));
    let mut attempt = 0;
    loop {
        match producer.init_transactions(attempt_timeout) {
            Ok(()) => return Ok(producer),
            Err(e) if matches!(txn::classify(&e), TxnAction::Retry | TxnAction::Recreate) => {
                if shutdown.load(Ordering::Relaxed) {
                    return Err(ExitReason::Shutdown);
                }
                tracing::warn!(message = "transactional producer not initialised yet; retrying", pipeline = %spec.name, attempt, error = %e);
                std::thread::sleep(txn::backoff(attempt));
                attempt += 1;
            }
            Err(e) => return Err(exit_for(&e, what)),
        }
    }
}

/// Whether the producer's fatal error is a fence: librdkafka answers every
/// call after a fatal error with a generic ERR__FATAL, and only the
/// client's stored fatal error says it was a newer epoch of our
/// transactional.id. Recreating the producer then would fence the process
/// that legitimately took over.
pub(crate) fn fatally_fenced(producer: &TxnProducer) -> Option<String> {
    let (code, reason) = producer.client().fatal_error()?;
    matches!(
        code,
        RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::InvalidProducerEpoch
    )
    .then_some(reason)
}

/// Fenced stays fenced (exit 3); anything else is fatal (exit 1).
pub(crate) fn exit_for(e: &KafkaError, what: &str) -> ExitReason {
    match txn::classify(e) {
        TxnAction::Fenced => ExitReason::Fenced(format!("{what}: {e}")),
        _ => ExitReason::Fatal(format!("{what}: {e}")),
    }
}

/// Produces one record of the open transaction, waiting out a full queue.
pub(crate) fn send<K, V>(
    producer: &TxnProducer,
    mut record: BaseRecord<'_, K, V>,
) -> Result<(), Failure>
where
    K: rdkafka::message::ToBytes + ?Sized,
    V: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                // The producer thread drains the queue; wait a little.
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => {
                return Err(Failure::new(
                    txn::classify(&e),
                    Reason::Produce,
                    e.to_string(),
                ))
            }
        }
    }
}

/// Waits (1 ms steps, up to `timeout`) until every record produced is
/// acknowledged. rust-rdkafka's `flush`, which its `commit_transaction`
/// runs first, polls the event queue for up to 100 ms while anything is in
/// flight; here the ThreadedProducer's own thread takes the delivery
/// reports off that queue, so the poll sleeps its full 100 ms — one per
/// commit (found by `surge bench`). Afterwards that flush finds nothing in
/// flight and returns at once.
pub(crate) fn await_deliveries(producer: &TxnProducer, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Calls a transaction API, retrying what librdkafka calls retriable with
/// capped backoff; past 8 attempts the producer is replaced.
pub(crate) fn with_retries(
    reason: Reason,
    mut call: impl FnMut() -> Result<(), KafkaError>,
) -> Result<(), Failure> {
    let mut attempt = 0;
    loop {
        match call() {
            Ok(()) => return Ok(()),
            Err(e) => match txn::classify(&e) {
                TxnAction::Retry if attempt < 8 => {
                    tracing::info!(message = "retrying transaction call", call = reason.label(), attempt, error = %e);
                    std::thread::sleep(txn::backoff(attempt));
                    attempt += 1;
                }
                TxnAction::Retry => {
                    return Err(Failure::new(TxnAction::Recreate, reason, e.to_string()))
                }
                action => return Err(Failure::new(action, reason, e.to_string())),
            },
        }
    }
}
