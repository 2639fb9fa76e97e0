//! When records become visible to a data team's read_committed consumer,
//! one per key: the order scenario waits for its setup (a decision per
//! coupon command, an event per product) and times each order's first
//! terminal order-status with it.
//!
//! The watcher starts at the end offsets it fetched before the caller
//! produces anything (`ready` fires once they are fetched), so a record
//! produced afterwards is always in view and the backlog is never read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use surge_kafka::QuietEofContext;
use surge_schemas::{Contract, Registry, TopicCodec};

use super::sandbox::Sandbox;
use super::say;

/// A record picked by the watcher and the wall clock (ms since the epoch)
/// at which it became visible.
pub struct Visible<T> {
    pub at_ms: i64,
    pub record: T,
}

/// What a watcher found: the first record of each picked key.
pub type Picked<T> = HashMap<String, Visible<T>>;

/// A running watcher. Dropped before [`Watcher::finish`] (a failed run),
/// it stops polling at once instead of running out its timeout on a thread
/// the runtime would wait for at exit.
pub struct Watcher<T> {
    handle: Option<tokio::task::JoinHandle<anyhow::Result<Picked<T>>>>,
    stop: Arc<AtomicBool>,
}

impl<T> Watcher<T> {
    /// Waits until it has seen what it wants or timed out.
    pub async fn finish(mut self) -> anyhow::Result<Picked<T>> {
        match self.handle.take() {
            Some(h) => h.await?,
            None => anyhow::bail!("the watcher was already finished"),
        }
    }
}

impl<T> Drop for Watcher<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Watches `T`'s topic of `sandbox` from its current end, off the async
/// workers, until `want` distinct keys were picked or `timeout` passed.
/// `pick` names the key a record counts for (`None`: not counted); only
/// the first record of a key is kept. Returns once the watcher has fetched
/// its start offsets.
pub async fn watch<T, F>(
    sandbox: &Sandbox,
    want: usize,
    timeout: Duration,
    label: &'static str,
    pick: F,
) -> anyhow::Result<Watcher<T>>
where
    T: Contract + Send + 'static,
    F: FnMut(&T) -> Option<String> + Send + 'static,
{
    let codec = TopicCodec::<T>::connect(
        &Registry::new(&sandbox.settings.registry.url),
        &sandbox.names.subject(T::TOPIC),
    )
    .await
    .with_context(|| format!("registry: {} schema", T::TOPIC))?;
    let partitions = sandbox.partitions_of(T::TOPIC)?;
    let (factory, topic) = (sandbox.factory.clone(), sandbox.topic(T::TOPIC));
    let (ready, started) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let handle = tokio::task::spawn_blocking(move || {
        let cfg =
            factory.read_committed_consumer_config("bench-watch", &format!("{topic}-bench-watch"));
        let consumer: BaseConsumer<QuietEofContext> = cfg.create_with_context(QuietEofContext)?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            let (_, high) = consumer.fetch_watermarks(&topic, p, Duration::from_secs(10))?;
            tpl.add_partition_offset(&topic, p, Offset::Offset(high))?;
        }
        consumer.assign(&tpl)?;
        let _ = ready.send(());
        follow(
            &consumer, &runtime, &codec, want, timeout, &stopped, label, pick,
        )
    });
    match started.await {
        Ok(()) => Ok(Watcher {
            handle: Some(handle),
            stop,
        }),
        // The watcher failed before it was positioned: its error says why.
        Err(_) => Err(handle.await?.err().unwrap_or_else(|| {
            anyhow::anyhow!("the {label} watcher stopped before it was positioned")
        })),
    }
}

#[allow(clippy::too_many_arguments)]
fn follow<T: Contract, F: FnMut(&T) -> Option<String>>(
    consumer: &BaseConsumer<QuietEofContext>,
    runtime: &tokio::runtime::Handle,
    codec: &TopicCodec<T>,
    want: usize,
    timeout: Duration,
    stop: &AtomicBool,
    label: &str,
    mut pick: F,
) -> anyhow::Result<Picked<T>> {
    let deadline = Instant::now() + timeout;
    let mut reported = Instant::now();
    let mut seen = HashMap::with_capacity(want);
    while seen.len() < want && Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                // Visible now: taken before decoding, which is the watcher's cost.
                let at_ms = chrono::Utc::now().timestamp_millis();
                let Some(Ok(record)) = m.payload().map(|b| runtime.block_on(codec.decode(Some(b))))
                else {
                    continue;
                };
                if let Some(key) = pick(&record) {
                    seen.entry(key).or_insert(Visible { at_ms, record });
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => tracing::warn!(message = "watch", error = %e),
        }
        if reported.elapsed() >= Duration::from_secs(2) {
            say(format!("  {label}: {}/{want} visible", seen.len()));
            reported = Instant::now();
        }
    }
    Ok(seen)
}
