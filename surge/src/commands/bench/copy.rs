//! The ceiling: an at-least-once consume→produce copy of the request records
//! (no state, no transactions, auto-committed offsets), what any Kafka
//! service does at the least. The pipeline does the same I/O plus decoding,
//! deciding, a changelog and transactions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Statistics};
use surge_kafka::ClientFactory;

/// Tells when the idempotent producer has its producer id (from librdkafka's
/// statistics): until then it holds every record it is given, ≈0.5 s on
/// librdkafka 2.10+ in some runs, and records copied meanwhile would carry
/// timestamps from before the stall — counting a client's start-up against
/// the ceiling (the pipeline's producer has its id before it consumes).
#[derive(Default)]
struct ProducerId {
    assigned: AtomicBool,
}

impl ClientContext for ProducerId {
    fn stats(&self, statistics: Statistics) {
        if statistics
            .eos
            .is_some_and(|eos| eos.idemp_state == "Assigned")
        {
            self.assigned.store(true, Ordering::Relaxed);
        }
    }
}

impl ProducerContext for ProducerId {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// Copies `from` to `to` until `stop`; blocking.
pub fn run(
    factory: &ClientFactory,
    from: &str,
    to: &str,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut cfg =
        factory.read_committed_consumer_config("bench-copy", &format!("{from}-bench-copy"));
    cfg.set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "true");
    let producer: ThreadedProducer<ProducerId> = factory
        .idempotent_producer_config("bench-copy")
        .set("statistics.interval.ms", "50")
        .create_with_context(ProducerId::default())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !producer.context().assigned.load(Ordering::Relaxed) {
        if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
            anyhow::bail!("the copy's producer got no producer id within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let consumer: BaseConsumer = cfg.create()?;
    consumer.subscribe(&[from])?;
    while !stop.load(Ordering::Relaxed) {
        let Some(polled) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = polled?;
        let mut record = BaseRecord::to(to).partition(m.partition());
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        if let Some(p) = m.payload() {
            record = record.payload(p);
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    // Queue full: let deliveries drain.
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}
