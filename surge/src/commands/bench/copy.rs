//! The ceiling: an at-least-once consume→produce copy of the request records
//! (no state, no transactions, auto-committed offsets), what any Kafka
//! service does at the least. The pipeline does the same I/O plus decoding,
//! deciding, a changelog and transactions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::Message;
use surge_kafka::ClientFactory;

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
    let consumer: BaseConsumer = cfg.create()?;
    consumer.subscribe(&[from])?;
    let producer: ThreadedProducer<_> =
        factory.idempotent_producer_config("bench-copy").create()?;
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
