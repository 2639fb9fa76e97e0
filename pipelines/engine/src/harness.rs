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
    /// Offsets at the last commit: a rewind returns to them, so a record
    /// decided again keeps its offset, as it does in Kafka.
    committed_offset: HashMap<(usize, i32), i64>,
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
            committed_offset: HashMap::new(),
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
        self.committed_offset = self.next_offset.clone();
    }

    /// Aborts: every change since the last commit is undone, nothing sent
    /// since then is kept, and the inputs rewind to their committed offsets.
    /// The records fed since the commit are dropped (the engine would read
    /// them again: [`Harness::abort_and_replay`] does that).
    pub fn abort(&mut self) {
        for task in self.tasks.values_mut() {
            task.revert_all();
        }
        self.pending.clear();
        self.fed.clear();
        self.next_offset = self.committed_offset.clone();
    }

    /// Aborts and decides every record fed since the last commit again, in
    /// the same order, as the engine does after a rewind.
    pub fn abort_and_replay(&mut self) -> Vec<Sent>
    where
        P::Input: Clone,
    {
        let fed = std::mem::take(&mut self.fed);
        self.abort();
        self.replay(fed)
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

    /// A crash and a restart: every partition's state is rebuilt from the
    /// committed changelog, and the records fed since the last commit are
    /// read again from the committed offsets and decided again. Returns what
    /// that replay sent.
    pub fn crash_and_restore(&mut self) -> Vec<Sent>
    where
        P::Input: Clone,
    {
        let fed = std::mem::take(&mut self.fed);
        self.restart();
        self.replay(fed)
    }

    /// A restart from the committed changelog with the uncommitted records
    /// dropped: the test feeds whatever comes next itself.
    pub fn restart(&mut self) {
        self.abort();
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        for p in partitions {
            let state = self.restored(p);
            self.tasks.insert(p, Task::new(state));
        }
    }

    fn replay(&mut self, fed: Vec<Fed<P::Input>>) -> Vec<Sent>
    where
        P::Input: Clone,
    {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Context;
    use crate::PartitionState;

    /// A counter per partition; changes are +n.
    #[derive(Debug, Default, Clone, PartialEq)]
    struct Count(i64);

    impl PartitionState for Count {
        type Change = i64;
        fn apply(&mut self, c: &i64) {
            self.0 += c;
        }
        fn revert(&mut self, c: &i64) {
            self.0 -= c;
        }
        fn changelog_records(&self, _: &i64, out: &mut Vec<ChangelogRecord>) {
            out.push((b"n".to_vec(), Some(self.0.to_be_bytes().to_vec())));
        }
        fn restore(&mut self, _: &[u8], v: Option<&[u8]>) -> Result<(), String> {
            let v = v.ok_or("tombstone")?;
            self.0 = i64::from_be_bytes(v.try_into().map_err(|_| "8 bytes")?);
            Ok(())
        }
        fn approx_bytes(&self) -> usize {
            8
        }
    }

    /// Adds its input, sends it by key; a negative input is found poisonous
    /// only after it changed the state and sent something.
    struct Adder;

    impl Processor for Adder {
        type Input = i64;
        type State = Count;
        fn process(
            &mut self,
            ctx: &mut Context<'_, Count>,
            input: Incoming<i64>,
        ) -> Result<(), Reject> {
            ctx.apply(input.message);
            ctx.send_by_key("out", input.message.to_string(), vec![1]);
            if input.message < 0 {
                return Err(Reject::Poison {
                    reason: "negative",
                    message: "found late".into(),
                });
            }
            Ok(())
        }
        fn tick(&mut self, ctx: &mut Context<'_, Count>, now: Millis) -> Result<(), Reject> {
            if ctx.state().0 > 0 && now >= 100 {
                ctx.apply(-ctx.state().0);
                ctx.emit("out", "reset", vec![0]);
            }
            Ok(())
        }
    }

    fn harness() -> Harness<Adder> {
        Harness::new(Adder, &[("in", 3)], &[("out", 5)])
    }

    #[test]
    fn a_record_rejected_after_it_changed_state_leaves_no_trace() {
        let mut h = harness();
        h.feed_at(0, 1, 5, 0).unwrap();
        assert!(h.feed_at(0, 1, -2, 0).is_err());
        assert_eq!(
            h.state(1),
            &Count(5),
            "the rejected record's change is undone"
        );
        assert_eq!(h.pending().len(), 1, "and what it sent is dropped");
        assert_eq!(h.dead_letters(), &[(0, 1, "negative".to_string())]);
        h.commit();
        h.assert_restore_law();
    }

    #[test]
    fn outputs_by_key_use_the_java_partitioner_and_here_stays_put() {
        let mut h = harness();
        let sent = h.feed_at(0, 2, 7, 0).unwrap();
        assert_eq!(sent[0].partition, surge_kafka::partition_for(b"7", 5));
        let ticked = h.tick(100).unwrap();
        assert_eq!(ticked.len(), 1);
        assert_eq!(
            ticked[0].partition, 2,
            "Route::Here is the partition being decided"
        );
        assert_eq!(h.state(2), &Count(0));
    }

    #[test]
    fn abort_rewinds_offsets_and_crash_replays_what_was_not_committed() {
        let mut h = harness();
        h.feed_at(0, 0, 1, 0).unwrap();
        h.commit();
        h.feed_at(0, 0, 2, 0).unwrap();
        h.feed_at(0, 0, 3, 0).unwrap();
        let replayed = h.crash_and_restore();
        assert_eq!(replayed.len(), 2);
        assert_eq!(h.state(0), &Count(6));
        h.abort();
        assert_eq!(h.state(0), &Count(1), "abort returns to the last commit");
        h.commit();
        h.assert_restore_law();
    }
}
