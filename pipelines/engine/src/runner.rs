//! The consume-process-produce loop.
//!
//! One transaction spans a batch of input records across all assigned
//! partitions of every input: their outputs on every topic, their dead
//! letters and forwards, their coalesced changelog records and their input
//! offsets (with the group metadata, KIP-447) commit or abort together. A
//! batch closes after `max_batch_records` inputs or `commit_interval`,
//! whichever comes first — or early, once `min_commit_interval` old, when a
//! poll finds the input drained: a pipeline that keeps up commits what it has
//! instead of holding requests for the rest of the interval, and a backlog
//! still commits full batches. An idle pipeline has no open transaction.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use surge_kafka::{groups, ClientFactory};

use crate::core::Core;
use crate::fence::FenceJudge;
use crate::metrics::PipelineMetrics;
use crate::output::Routes;
use crate::processor::{Inputs, Processor};
use crate::producer::new_producer;
use crate::rebalance::EngineContext;
use crate::spec::PipelineSpec;
use crate::txn::{self, TxnAction};

/// Why the loop stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// Asked to stop; the open transaction was committed or aborted.
    Shutdown,
    /// Another instance took over our identity or our partitions: a zombie must not write.
    Fenced(String),
    /// The producer or consumer is unusable, or the topics are not what the
    /// pipeline needs; a supervisor should restart us (after a fix).
    Fatal(String),
}

type Ctx<P, I> = EngineContext<P, I>;

/// Runs `processor` over `inputs` until shutdown or a fatal condition.
/// Blocks the calling thread: call it from a dedicated thread, never from an
/// async worker.
pub fn run_pipeline<P: Processor, I: Inputs<Message = P::Input>>(
    spec: PipelineSpec,
    factory: ClientFactory,
    processor: P,
    inputs: I,
    runtime: tokio::runtime::Handle,
    shutdown: Arc<AtomicBool>,
    metrics: PipelineMetrics,
) -> ExitReason {
    // The producer is initialised before we join the group: init_transactions
    // fences our previous incarnation and aborts its open transaction, so the
    // changelog's committed end is final before we restore from it.
    let producer = match new_producer(&factory, &spec, &shutdown) {
        Ok(p) => p,
        Err(exit) => return exit,
    };
    let routes = match look_up_topics(&factory, &spec) {
        Ok(r) => r,
        Err(why) => return ExitReason::Fatal(why),
    };
    let core = Arc::new(Mutex::new(Core {
        spec: spec.clone(),
        factory: factory.clone(),
        producer,
        processor,
        inputs,
        runtime,
        routes,
        tasks: HashMap::new(),
        batch: None,
        touched: BTreeSet::new(),
        metrics: metrics.clone(),
        exit: None,
        shutdown: shutdown.clone(),
        last_tick: Instant::now(),
    }));
    let mut fences = FenceJudge::new(&spec);
    loop {
        let exit = run_member(&core, &spec, &factory, &metrics, &shutdown);
        let ExitReason::Fenced(why) = &exit else {
            return exit;
        };
        let mut c = core.lock().expect("core lock");
        if shutdown.load(Ordering::Relaxed) || !fences.recover(why, &c.producer, &shutdown) {
            return exit;
        }
        // Same as a restart of the process: a new producer epoch aborts
        // whatever the old one left open, the state of every partition is
        // dropped (restored again on assignment), and a new consumer joins
        // with our identity.
        c.forget_partitions();
        match new_producer(&factory, &spec, &shutdown) {
            Ok(p) => c.producer = p,
            Err(exit) => return exit,
        }
        metrics.fence_recoveries.inc();
        tracing::warn!(message = "recovered in place from a fence: rejoining the group", pipeline = %spec.name);
    }
}

/// Per-partition fetch size of the input consumer unless the operator set
/// one (`[kafka.librdkafka]`).
const MAX_PARTITION_FETCH_BYTES: &str = "8388608";

/// One membership of the group: a consumer joins, and the loop runs until
/// shutdown, a fence or a fatal condition.
fn run_member<P: Processor, I: Inputs<Message = P::Input>>(
    core: &Arc<Mutex<Core<P, I>>>,
    spec: &PipelineSpec,
    factory: &ClientFactory,
    metrics: &PipelineMetrics,
    shutdown: &Arc<AtomicBool>,
) -> ExitReason {
    let mut cfg = factory.read_committed_consumer_config(&spec.name, &spec.group_id);
    // Static membership (KIP-345): a restarted instance takes its own place
    // in the group at once instead of waiting out its dead predecessor's
    // session, and a second live process with the same identity is fenced.
    // The client.id names instance and process, so that a fenced member can
    // ask the coordinator whether another process holds its identity.
    let base_client_id = format!("{}-{}", factory.settings().client_id, spec.name);
    cfg.set("group.instance.id", spec.transactional_id())
        .set(
            "client.id",
            groups::member_client_id(
                &base_client_id,
                &spec.settings.instance_id,
                std::process::id(),
            ),
        )
        .set("statistics.interval.ms", "5000");
    if cfg.get("partition.assignment.strategy").is_none() {
        // One input: cooperative-sticky moves only what must move. Several
        // co-partitioned inputs: range gives partition p of every topic with
        // the same partition count to the same member (it is the assignor
        // Kafka's co-partitioning rule was written for); it is eager, so a
        // rebalance revokes everything once.
        let strategy = if spec.inputs.len() > 1 {
            "range"
        } else {
            "cooperative-sticky"
        };
        cfg.set("partition.assignment.strategy", strategy);
    }
    if cfg.get("max.partition.fetch.bytes").is_none() {
        // A hot sale is one partition: librdkafka's 1 MiB per partition and
        // fetch (~10,000 requests) made the hot backlog wait on fetch round
        // trips (measured: 140k-144k decisions/s hot, 180k/s with 8 MiB; the
        // prefetch stays bounded by queued.max.messages.kbytes).
        cfg.set("max.partition.fetch.bytes", MAX_PARTITION_FETCH_BYTES);
    }
    // Static members do not leave the group on shutdown: their partitions
    // move after the session times out. librdkafka's 45 s default is far too
    // long for a flash sale; 10 s unless the operator chose otherwise.
    if cfg.get("session.timeout.ms").is_none() {
        cfg.set("session.timeout.ms", "10000");
    }
    let context = EngineContext {
        core: core.clone(),
        metrics: metrics.clone(),
        inputs: spec.inputs.clone(),
    };
    let consumer: BaseConsumer<Ctx<P, I>> = match cfg.create_with_context(context) {
        Ok(c) => c,
        Err(e) => return ExitReason::Fatal(format!("creating the consumer: {e}")),
    };
    let topics: Vec<&str> = spec.inputs.iter().map(String::as_str).collect();
    if let Err(e) = consumer.subscribe(&topics) {
        return ExitReason::Fatal(format!("subscribing to {topics:?}: {e}"));
    }
    tracing::info!(
        message = "pipeline started",
        pipeline = %spec.name,
        inputs = ?spec.inputs,
        outputs = ?spec.outputs,
        group = %spec.group_id,
        transactional_id = %spec.transactional_id()
    );

    let early = spec.settings.min_commit_interval;
    let exit = loop {
        if shutdown.load(Ordering::Relaxed) {
            let mut c = core.lock().expect("core lock");
            c.commit_or_abort(&consumer);
            break c.exit.clone().unwrap_or(ExitReason::Shutdown);
        }
        // Poll with the lock released: rebalance callbacks run inside poll.
        let timeout = {
            let c = core.lock().expect("core lock");
            match &c.batch {
                // Wait for more input until the batch may close early; from
                // then on only look (a poll that finds nothing commits it).
                Some(b) => early.saturating_sub(b.started.elapsed()),
                // Idle: wake up in time for the processor's next tick.
                None => c
                    .processor
                    .tick_interval()
                    .map_or(Duration::from_millis(100), |t| {
                        t.min(Duration::from_millis(100))
                    }),
            }
        };
        let polled = consumer.poll(timeout);
        metrics.last_poll.set(unix_seconds());
        let mut c = core.lock().expect("core lock");
        if let Some(exit) = c.exit.clone() {
            break exit;
        }
        let drained = matches!(polled, None | Some(Err(KafkaError::PartitionEOF(_))));
        match polled {
            Some(Ok(msg)) => c.handle(&consumer, &msg),
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            // A fatal consumer error ends the loop: fenced by a static member
            // with our identity (or no longer a member) means zombie → exit 3.
            Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                let exit = match txn::classify(&e) {
                    TxnAction::Fenced => ExitReason::Fenced(format!("consumer: {e}")),
                    _ => ExitReason::Fatal(format!("consumer: {e}")),
                };
                tracing::error!(message = "fatal consumer error; stopping", pipeline = %c.spec.name, error = %e, fenced = matches!(exit, ExitReason::Fenced(_)));
                c.batch = None;
                c.exit = Some(exit.clone());
                break exit;
            }
            Some(Err(e)) => tracing::warn!(message = "consumer error", error = %e),
        }
        if c.exit.is_none() {
            c.tick_if_due(&consumer);
        }
        if c.exit.is_none() {
            c.commit_if_due(&consumer, drained);
        }
        if let Some(exit) = c.exit.clone() {
            break exit;
        }
    };
    if exit == ExitReason::Shutdown {
        // Leaving the group revokes our partitions (the callback commits
        // nothing: no transaction is open) so others take over at once.
        let _ = consumer.unsubscribe();
        let _ = consumer.poll(Duration::from_millis(100));
    }
    tracing::info!(message = "pipeline stopped", pipeline = %spec.name, reason = ?exit);
    exit
}

/// Partition counts of every topic the pipeline touches, with the checks
/// that make co-partitioning hold: inputs have equal counts, and the
/// changelog has one partition per task.
fn look_up_topics(factory: &ClientFactory, spec: &PipelineSpec) -> Result<Routes, String> {
    let admin: BaseConsumer = factory
        .read_committed_consumer_config(&spec.name, &spec.group_id)
        .create()
        .map_err(|e| format!("creating a metadata client: {e}"))?;
    let mut counts = HashMap::new();
    let all = spec
        .inputs
        .iter()
        .chain(&spec.outputs)
        .chain([&spec.changelog_topic, &spec.dlq_topic]);
    for topic in all {
        if counts.contains_key(topic) {
            continue;
        }
        let n = partition_count(&admin, topic)?;
        counts.insert(topic.clone(), n);
    }
    let first = counts[&spec.inputs[0]];
    for t in &spec.inputs {
        if counts[t] != first {
            let all: Vec<String> = spec
                .inputs
                .iter()
                .map(|t| format!("{t}={}", counts[t]))
                .collect();
            return Err(format!(
                "the inputs of pipeline {} must have equal partition counts (they are co-partitioned by key), found {}",
                spec.name,
                all.join(", ")
            ));
        }
    }
    if counts[&spec.changelog_topic] != first {
        return Err(format!(
            "changelog {} has {} partitions, the inputs {first}: one changelog partition per input partition",
            spec.changelog_topic, counts[&spec.changelog_topic]
        ));
    }
    Ok(Routes::new(counts))
}

fn partition_count(client: &BaseConsumer, topic: &str) -> Result<i32, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let result = client
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| e.to_string())
            .and_then(|md| {
                let t = md
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic)
                    .ok_or_else(|| "absent from metadata".to_string())?;
                if let Some(e) = t.error() {
                    return Err(format!("{e:?}"));
                }
                Ok(t.partitions().len() as i32)
            });
        match result {
            Ok(n) if n > 0 => return Ok(n),
            Ok(_) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500));
            }
            Ok(_) => {
                return Err(format!(
                    "topic {topic} does not exist; run `surge topics apply`"
                ))
            }
            Err(e) => {
                return Err(format!(
                    "topic {topic}: {e} (does it exist? `surge topics apply` creates every topic)"
                ))
            }
        }
    }
}

fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
