//! The engine's contract in process, with no broker: feed decoded records,
//! see what a decision sends and how the state changes, commit, abort,
//! replay, tick with a clock the test sets, and rebuild state from the
//! changelog a run committed.
//!
//! It runs a processor the way the engine does — a savepoint per record, a
//! journal per partition reverted on abort, changelog records coalesced per
//! key at commit, outputs routed with the same partitioner — so a
//! pipeline's rules are tested fast against the same semantics the
//! real-broker tests check for the loop itself.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;

use crate::output::{Output, Routes};
use crate::processor::{ChangelogRecord, Incoming, Millis, Processor, Reject};
use crate::task::{Effects, Task};

/// A record a decision sent, with the partition the engine chose for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub topic: String,
    pub partition: i32,
    pub key: Vec<u8>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// One input fed since the last commit (replayed after an abort).
struct Fed<T> {
    input: usize,
    partition: i32,
    message: T,
    timestamp: Millis,
}

/// A pipeline run in process.
pub struct Harness<P: Processor> {
    processor: P,
    inputs: Vec<(String, i32)>,
    routes: Routes,
    tasks: BTreeMap<i32, Task<P::State>>,
    next_offset: HashMap<(usize, i32), i64>,
    pending: Vec<Sent>,
    committed: Vec<Sent>,
    changelog: BTreeMap<i32, Vec<ChangelogRecord>>,
    fed: Vec<Fed<P::Input>>,
    dead_letters: Vec<(usize, i32, String)>,
    outcomes: Vec<&'static str>,
}

impl<P: Processor> Harness<P> {
    /// `inputs` and `outputs` are (topic, partition count). The inputs are
    /// co-partitioned: they must have equal counts, as the engine checks.
    pub fn new(processor: P, inputs: &[(&str, i32)], outputs: &[(&str, i32)]) -> Self {
        let n = inputs.first().map(|i| i.1).unwrap_or(1);
        assert!(
            inputs.iter().all(|i| i.1 == n),
            "co-partitioned inputs need equal partition counts"
        );
        let mut counts: HashMap<String, i32> = HashMap::new();
        for (t, c) in inputs.iter().chain(outputs) {
            counts.insert(t.to_string(), *c);
        }
        Self {
            processor,
            inputs: inputs.iter().map(|(t, c)| (t.to_string(), *c)).collect(),
            routes: Routes::new(counts),
            tasks: (0..n)
                .map(|p| (p, Task::new(P::State::default())))
                .collect(),
            next_offset: HashMap::new(),
            pending: Vec::new(),
            committed: Vec::new(),
            changelog: BTreeMap::new(),
            fed: Vec::new(),
            dead_letters: Vec::new(),
            outcomes: Vec::new(),
        }
    }

    /// The partition of input `input` that owns `key` (murmur2, as the engine
    /// routes and forwards).
    pub fn partition_of(&self, input: usize, key: &str) -> i32 {
        surge_kafka::partition_for(key.as_bytes(), self.inputs[input].1)
    }

    /// Decides `message` on input `input` at the partition owning `key`.
    /// Returns what the decision sent; a rejected record sends nothing and
    /// changes nothing (a poison one is kept as a dead letter).
    pub fn feed(
        &mut self,
        input: usize,
        key: &str,
        message: P::Input,
        timestamp: Millis,
    ) -> Result<Vec<Sent>, Reject>
    where
        P::Input: Clone,
    {
        let partition = self.partition_of(input, key);
        self.feed_at(input, partition, message, timestamp)
    }

    /// As [`Harness::feed`], at an explicit partition.
    pub fn feed_at(
        &mut self,
        input: usize,
        partition: i32,
        message: P::Input,
        timestamp: Millis,
    ) -> Result<Vec<Sent>, Reject>
    where
        P::Input: Clone,
    {
        self.fed.push(Fed {
            input,
            partition,
            message: message.clone(),
            timestamp,
        });
        self.decide(input, partition, message, timestamp)
    }

    fn decide(
        &mut self,
        input: usize,
        partition: i32,
        message: P::Input,
        timestamp: Millis,
    ) -> Result<Vec<Sent>, Reject> {
        let offset = {
            let o = self.next_offset.entry((input, partition)).or_insert(0);
            *o += 1;
            *o - 1
        };
        let task = self.tasks.get_mut(&partition).expect("partition in range");
        let incoming = Incoming {
            message,
            input,
            partition,
            offset,
            timestamp,
        };
        match task.decide(&mut self.processor, partition, |p, ctx| {
            p.process(ctx, incoming)
        }) {
            Ok(effects) => Ok(self.route(partition, effects)),
            Err(reject) => {
                if let Reject::Poison { reason, .. } = &reject {
                    self.dead_letters
                        .push((input, partition, reason.to_string()));
                }
                Err(reject)
            }
        }
    }

    /// Runs the processor's tick on every partition at `now`.
    pub fn tick(&mut self, now: Millis) -> Result<Vec<Sent>, Reject> {
        let mut sent = Vec::new();
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        for partition in partitions {
            let task = self.tasks.get_mut(&partition).expect("task");
            let effects = task.decide(&mut self.processor, partition, |p, ctx| p.tick(ctx, now))?;
            sent.extend(self.route(partition, effects));
        }
        Ok(sent)
    }

    fn route(&mut self, partition: i32, effects: Effects) -> Vec<Sent> {
        self.outcomes.extend(effects.outcomes);
        let sent: Vec<Sent> = effects
            .outputs
            .into_iter()
            .map(|o: Output| Sent {
                partition: self
                    .routes
                    .partition(&o, partition)
                    .unwrap_or_else(|e| panic!("{e}")),
                topic: o.topic,
                key: o.key,
                payload: o.payload,
                headers: o.headers,
            })
            .collect();
        self.pending.extend(sent.iter().cloned());
        sent
    }

    /// Commits: the open transaction's outputs become visible, its changes
    /// go to the changelog (last value per key, as the engine writes them).
    pub fn commit(&mut self) {
        for (p, task) in self.tasks.iter_mut() {
            self.changelog
                .entry(*p)
                .or_default()
                .extend(task.changelog());
            task.journal.clear();
        }
        self.committed.append(&mut self.pending);
        self.fed.clear();
    }

    /// Aborts: every change since the last commit is undone and nothing sent
    /// since then is kept.
    pub fn abort(&mut self) {
        for task in self.tasks.values_mut() {
            task.revert_all();
        }
        self.pending.clear();
    }

    /// Aborts and decides every record fed since the last commit again, in
    /// the same order, as the engine does after a rewind.
    pub fn abort_and_replay(&mut self) -> Vec<Sent>
    where
        P::Input: Clone,
    {
        self.abort();
        let fed = std::mem::take(&mut self.fed);
        let mut sent = Vec::new();
        for f in fed {
            let (input, partition, timestamp) = (f.input, f.partition, f.timestamp);
            let message = f.message.clone();
            self.fed.push(f);
            if let Ok(s) = self.decide(input, partition, message, timestamp) {
                sent.extend(s);
            }
        }
        sent
    }

    pub fn state(&self, partition: i32) -> &P::State {
        &self.tasks[&partition].state
    }

    pub fn processor(&self) -> &P {
        &self.processor
    }

    /// Outputs of committed transactions, in order.
    pub fn committed(&self) -> &[Sent] {
        &self.committed
    }

    /// Committed outputs on `topic`.
    pub fn committed_on<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = &'a Sent> + 'a {
        self.committed.iter().filter(move |s| s.topic == topic)
    }

    /// Outputs of the open transaction.
    pub fn pending(&self) -> &[Sent] {
        &self.pending
    }

    /// Outcome labels counted so far (committed or not).
    pub fn outcomes(&self) -> &[&'static str] {
        &self.outcomes
    }

    /// (input, partition, reason) of every record rejected as poison.
    pub fn dead_letters(&self) -> &[(usize, i32, String)] {
        &self.dead_letters
    }

    /// The committed changelog of `partition`, in log order.
    pub fn changelog(&self, partition: i32) -> &[ChangelogRecord] {
        self.changelog
            .get(&partition)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// State rebuilt from the committed changelog, as a restarted instance
    /// restores it.
    pub fn restored(&self, partition: i32) -> P::State {
        crate::laws::restore_from(self.changelog(partition))
    }

    /// Replaces every partition's state by its restore from the changelog
    /// (a crash after the last commit, then a restart).
    pub fn crash_and_restore(&mut self) {
        self.abort();
        self.fed.clear();
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        for p in partitions {
            let state = self.restored(p);
            self.tasks.insert(p, Task::new(state));
        }
    }

    /// Checks the state laws on the committed run: every partition's state
    /// equals its restore from the changelog. Call after [`Harness::commit`].
    pub fn assert_restore_law(&self)
    where
        P::State: PartialEq + Debug,
    {
        for (p, task) in &self.tasks {
            assert!(
                task.journal.is_empty(),
                "assert_restore_law after commit: partition {p} has uncommitted changes"
            );
            crate::laws::assert_restore_rebuilds(&task.state, self.changelog(*p));
        }
    }
}
