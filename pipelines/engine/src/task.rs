//! A task: one partition number of a pipeline — the same partition of every
//! co-partitioned input topic — with its state and the journal of changes
//! the open transaction has made to it.
//!
//! Each decision runs against a savepoint: if the processor rejects the
//! record (poison found late, a contract violation, a retry), every change
//! it made since the savepoint is reverted and nothing it sent is kept, so a
//! rejected record leaves no trace but its dead letter.

use crate::output::{Output, Route};
use std::collections::HashMap;

use crate::processor::{ChangelogRecord, Millis, PartitionState, Processor, Reject};

/// State and open journal of one partition number.
pub(crate) struct Task<S: PartitionState> {
    pub state: S,
    /// Changes of the open transaction, in order (reverted in reverse on abort).
    pub journal: Vec<S::Change>,
}

impl<S: PartitionState> Task<S> {
    pub fn new(state: S) -> Self {
        Self {
            state,
            journal: Vec::new(),
        }
    }

    /// The changelog records of the open transaction: the last value per key
    /// (compaction would keep only that anyway), in first-touched order.
    pub fn changelog(&self) -> Vec<ChangelogRecord> {
        let mut records = Vec::new();
        for change in &self.journal {
            self.state.changelog_records(change, &mut records);
        }
        coalesce(records)
    }

    /// Undoes every change of the open transaction.
    pub fn revert_all(&mut self) {
        self.revert_to(0);
    }

    /// Undoes the changes made after `savepoint` (a journal length).
    pub fn revert_to(&mut self, savepoint: usize) {
        while self.journal.len() > savepoint {
            let change = self.journal.pop().expect("journal longer than savepoint");
            self.state.revert(&change);
        }
    }

    /// Runs one decision (`f` is the processor's `process` or `tick`)
    /// against a savepoint: its effects are returned only if it succeeded,
    /// and its state changes survive only then.
    pub fn decide<P>(
        &mut self,
        processor: &mut P,
        partition: i32,
        f: impl FnOnce(&mut P, &mut Context<'_, S>) -> Result<(), Reject>,
    ) -> Result<Effects, Reject>
    where
        P: Processor<State = S>,
    {
        let savepoint = self.journal.len();
        let mut effects = Effects::default();
        let result = {
            let mut ctx = Context {
                state: &mut self.state,
                journal: &mut self.journal,
                effects: &mut effects,
                partition,
            };
            f(processor, &mut ctx)
        };
        match result {
            Ok(()) => Ok(effects),
            Err(reject) => {
                self.revert_to(savepoint);
                Err(reject)
            }
        }
    }
}

/// What one decision sends and counts, kept apart until it succeeded.
#[derive(Debug, Default)]
pub struct Effects {
    pub outputs: Vec<Output>,
    pub outcomes: Vec<&'static str>,
    pub duplicates: u64,
}

/// What a processor sees while it decides: the partition's state (read it
/// with [`Context::state`], change it with [`Context::apply`]) and the
/// outbox of the decision.
pub struct Context<'a, S: PartitionState> {
    state: &'a mut S,
    journal: &'a mut Vec<S::Change>,
    effects: &'a mut Effects,
    partition: i32,
}

impl<'a, S: PartitionState> Context<'a, S> {
    /// The current state of this partition.
    pub fn state(&self) -> &S {
        self.state
    }

    /// Applies `change` now; it becomes durable only with the transaction.
    pub fn apply(&mut self, change: S::Change) {
        self.state.apply(&change);
        self.journal.push(change);
    }

    /// The partition number being decided.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Sends `payload` to `topic` at this partition number (per-key order
    /// carries through from the input to a co-partitioned output).
    pub fn emit(&mut self, topic: &str, key: impl Into<Vec<u8>>, payload: Vec<u8>) {
        self.send(Output::new(topic, Route::Here, key.into(), payload));
    }

    /// Sends `payload` to the partition of `topic` that owns `key` under the
    /// murmur2 partitioner, where a Java client or the gateway would put it.
    pub fn send_by_key(&mut self, topic: &str, key: impl Into<Vec<u8>>, payload: Vec<u8>) {
        self.send(Output::new(topic, Route::ByKey, key.into(), payload));
    }

    /// Sends a fully specified record (headers, route).
    pub fn send(&mut self, output: Output) {
        self.effects.outputs.push(output);
    }

    /// Counts this decision under `outcome` (a low-cardinality label).
    pub fn outcome(&mut self, outcome: &'static str) {
        self.effects.outcomes.push(outcome);
    }

    /// Notes an input that was already decided (a repeated request id):
    /// counted apart from decisions.
    pub fn already_decided(&mut self) {
        self.effects.duplicates += 1;
    }
}

/// The engine's clock for ticks. Wall time in a pipeline; a value a test
/// sets in the harness.
pub(crate) fn wall_clock() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Keeps the last value per key, in the order keys were first written.
pub(crate) fn coalesce(records: Vec<ChangelogRecord>) -> Vec<ChangelogRecord> {
    let mut order: Vec<Vec<u8>> = Vec::new();
    let mut last: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
    for (key, value) in records {
        if last.insert(key.clone(), value).is_none() {
            order.push(key);
        }
    }
    order
        .into_iter()
        .map(|k| {
            let v = last.remove(&k).expect("recorded key");
            (k, v)
        })
        .collect()
}
