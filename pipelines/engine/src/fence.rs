//! Is a fence real? A pipeline is fenced when its producer epoch or its
//! static group membership has moved on. A real zombie — another live
//! process with the same instance took over — must stop writing and exit.
//! But a broker outage fences too: the session expires while the
//! coordinator is away, and librdkafka's rejoin after it can be answered
//! FENCED_INSTANCE_ID or UNKNOWN_MEMBER_ID with nobody else involved. Then
//! exiting only hands the problem to a supervisor; recovering in place is
//! what a restart would do, minus the restart.
//!
//! First witness: the transaction coordinator. A successor initialises its
//! producer (bumping the epoch of our transactional.id) before it joins the
//! group, so if anyone took our identity, our producer is fenced. A probe
//! transaction — one record to the changelog, always aborted, so no
//! read_committed reader ever sees it — tells. Producer still ours: the
//! fence was false, recover.
//!
//! But the producer can be fenced falsely too: after a broker restart,
//! messages that timed out need an epoch bump, and librdkafka's bump can
//! come back PRODUCER_FENCED with nobody else involved. Second witness:
//! this process itself (`freeze.rs`). The zombie a fence exists for is a
//! process that stopped running while the world moved on; one that kept
//! running and finds its producer fenced recovers. (The group cannot
//! witness: a static member that rejoins in a stable group takes over the
//! old member's entry, client.id included, so the member list does not say
//! which process holds an instance.) A live duplicate with the same
//! instance — a misconfiguration — fences us again, and the bound below
//! ends that.
//!
//! At most [`MAX_RECOVERIES`] per [`WINDOW`]: something that keeps fencing
//! us must end in an exit an operator sees. Exactly-once never depends on
//! this judgement: epochs and the group generation refuse a zombie's
//! commit whatever it believes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer};

use crate::freeze;
use crate::producer::{await_deliveries, fatally_fenced, TxnProducer};
use crate::spec::PipelineSpec;
use crate::txn::{self, TxnAction};

/// Recoveries allowed within [`WINDOW`] before a fence is taken as real.
pub(crate) const MAX_RECOVERIES: usize = 3;
pub(crate) const WINDOW: Duration = Duration::from_secs(600);
/// How long the probe may wait out a broker that is still away.
const PROBE_DEADLINE: Duration = Duration::from_secs(120);
/// A freeze that ended this recently explains a fenced producer.
const FREEZE_MEMORY: Duration = Duration::from_secs(300);
/// The probe record's key (aborted; never read).
pub(crate) const PROBE_KEY: &[u8] = b"surge.fence-probe";

pub(crate) struct FenceJudge {
    pipeline: String,
    changelog: String,
    call_timeout: Duration,
    recoveries: VecDeque<Instant>,
}

/// What the probe found.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// The coordinator accepted our epoch: nobody initialised our identity since.
    Ours,
    /// A newer producer holds our transactional.id.
    Fenced(String),
    /// No answer (broker away) until the deadline or shutdown.
    Unknown(String),
}

impl FenceJudge {
    pub fn new(spec: &PipelineSpec) -> Self {
        freeze::watch();
        Self {
            pipeline: spec.name.clone(),
            changelog: spec.changelog_topic.clone(),
            call_timeout: spec
                .settings
                .transaction_call_timeout
                .min(Duration::from_secs(10)),
            recoveries: VecDeque::new(),
        }
    }

    /// Whether to recover in place from the fence described by `why`,
    /// judged with the producer that was current when it happened.
    pub fn recover(&mut self, why: &str, producer: &TxnProducer, shutdown: &AtomicBool) -> bool {
        while self
            .recoveries
            .front()
            .is_some_and(|t| t.elapsed() > WINDOW)
        {
            self.recoveries.pop_front();
        }
        if self.recoveries.len() >= MAX_RECOVERIES {
            tracing::error!(message = "fenced again after recovering: something keeps taking this instance's identity; stopping", pipeline = %self.pipeline, recoveries = self.recoveries.len(), why);
            return false;
        }
        tracing::warn!(message = "fenced; asking the transaction coordinator whether another process holds this identity", pipeline = %self.pipeline, why);
        match self.probe(producer, shutdown) {
            Probe::Ours => {
                self.recoveries.push_back(Instant::now());
                true
            }
            Probe::Fenced(e) => match freeze::frozen_within(FREEZE_MEMORY) {
                Some(gap) => {
                    tracing::error!(message = "another process holds this identity: this one is a zombie (it was frozen for a while); stopping", pipeline = %self.pipeline, frozen_seconds = gap.as_secs_f64(), error = %e);
                    false
                }
                None if !freeze::watching() => {
                    tracing::error!(message = "the producer was fenced and nothing can tell whether this process was frozen; stopping as fenced", pipeline = %self.pipeline, error = %e);
                    false
                }
                None => {
                    tracing::warn!(message = "the producer was fenced but this process never stopped running (an epoch bump after a broker outage); recovering", pipeline = %self.pipeline, error = %e);
                    self.recoveries.push_back(Instant::now());
                    true
                }
            },
            Probe::Unknown(e) => {
                tracing::error!(message = "could not tell whether the fence is real; stopping as fenced", pipeline = %self.pipeline, error = %e);
                false
            }
        }
    }

    /// One record in a transaction (the open one, if any), then abort.
    fn probe(&self, producer: &TxnProducer, shutdown: &AtomicBool) -> Probe {
        let deadline = Instant::now() + PROBE_DEADLINE;
        let mut attempt = 0u32;
        let mut last = String::new();
        while Instant::now() < deadline && !shutdown.load(Ordering::Relaxed) {
            if let Some(fence) = fatally_fenced(producer) {
                return Probe::Fenced(fence);
            }
            match self.probe_once(producer) {
                Ok(()) => return Probe::Ours,
                Err(e) => {
                    let action = txn::classify(&e);
                    if action == TxnAction::Fenced {
                        return Probe::Fenced(e.to_string());
                    }
                    if matches!(&e, KafkaError::Transaction(t) if t.is_fatal()) {
                        // Unusable for another reason: no evidence either way.
                        return Probe::Unknown(e.to_string());
                    }
                    last = e.to_string();
                    std::thread::sleep(txn::backoff(attempt));
                    attempt += 1;
                }
            }
        }
        Probe::Unknown(if last.is_empty() {
            "stopped while probing".into()
        } else {
            last
        })
    }

    fn probe_once(&self, producer: &TxnProducer) -> Result<(), KafkaError> {
        // End what the fence left: an open transaction, or one in an
        // abortable error state (refused offsets). None open is fine.
        if let Err(e) = producer.abort_transaction(self.call_timeout) {
            if e.rdkafka_error_code() != Some(RDKafkaErrorCode::State) {
                return Err(e);
            }
        }
        producer.begin_transaction()?;
        let record = BaseRecord::<[u8], [u8]>::to(&self.changelog)
            .partition(0)
            .key(PROBE_KEY);
        producer.send(record).map_err(|(e, _)| e)?;
        await_deliveries(producer, self.call_timeout);
        producer.flush(self.call_timeout)?;
        producer.abort_transaction(self.call_timeout)
    }
}
