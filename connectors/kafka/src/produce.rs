//! Producing a stream of records in order with a bounded number in flight:
//! one key's records keep their order (idempotent producer, enqueued
//! strictly in sequence), and a full local queue waits for deliveries
//! instead of failing.

use std::collections::VecDeque;

use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

/// Sends every (key, payload) to `topic` in order and waits for all
/// deliveries; `on_sent` is told the running count of acknowledged records.
pub async fn produce_in_order<I>(
    producer: &FutureProducer,
    topic: &str,
    records: I,
    mut on_sent: impl FnMut(usize),
) -> KafkaResult<usize>
where
    I: IntoIterator<Item = (String, Vec<u8>)>,
{
    let mut inflight = VecDeque::new();
    let mut acked = 0usize;
    for (key, payload) in records {
        let mut record = FutureRecord::to(topic).key(&key).payload(&payload);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    inflight.push_back(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    let Some(d) = inflight.pop_front() else {
                        continue;
                    };
                    d.await
                        .map_err(|_| KafkaError::Canceled)?
                        .map_err(|(e, _)| e)?;
                    acked += 1;
                    on_sent(acked);
                }
                Err((e, _)) => return Err(e),
            }
        }
        // Keep the window bounded even when the queue is roomy.
        while inflight.len() > 50_000 {
            let d = inflight.pop_front().expect("non-empty");
            d.await
                .map_err(|_| KafkaError::Canceled)?
                .map_err(|(e, _)| e)?;
            acked += 1;
            on_sent(acked);
        }
    }
    for d in inflight {
        d.await
            .map_err(|_| KafkaError::Canceled)?
            .map_err(|(e, _)| e)?;
        acked += 1;
        on_sent(acked);
    }
    Ok(acked)
}
