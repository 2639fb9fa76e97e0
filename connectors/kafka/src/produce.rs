//! Producing a stream of records in order with a bounded number in flight:
//! one key's records keep their order (idempotent producer, enqueued
//! strictly in sequence), and a full local queue waits for deliveries
//! instead of failing.

use std::collections::VecDeque;

use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

/// Most records awaiting acknowledgement before `send` waits for the oldest.
const MAX_IN_FLIGHT: usize = 50_000;

/// Sends records one by one, in order, keeping deliveries in flight; the
/// caller may pause between sends (pacing) without blocking a thread.
pub struct OrderedSender<'p> {
    producer: &'p FutureProducer,
    topic: &'p str,
    inflight: VecDeque<DeliveryFuture>,
    acked: usize,
}

impl<'p> OrderedSender<'p> {
    pub fn new(producer: &'p FutureProducer, topic: &'p str) -> Self {
        Self {
            producer,
            topic,
            inflight: VecDeque::new(),
            acked: 0,
        }
    }

    /// Records acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked
    }

    /// Enqueues one record; waits for older deliveries only when the local
    /// queue or the in-flight window is full. A failed delivery is returned.
    pub async fn send(&mut self, key: &str, payload: &[u8]) -> KafkaResult<()> {
        self.send_at(key, payload, None).await
    }

    /// [`Self::send`] with the record's log timestamp (ms since the epoch)
    /// set by the caller instead of the producer's clock.
    pub async fn send_at(
        &mut self,
        key: &str,
        payload: &[u8],
        timestamp: Option<i64>,
    ) -> KafkaResult<()> {
        let mut record = FutureRecord::to(self.topic).key(key).payload(payload);
        if let Some(ms) = timestamp {
            record = record.timestamp(ms);
        }
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    self.inflight.push_back(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.settle_oldest().await?;
                }
                Err((e, _)) => return Err(e),
            }
        }
        while self.inflight.len() > MAX_IN_FLIGHT {
            self.settle_oldest().await?;
        }
        Ok(())
    }

    /// Waits for every record in flight; returns the total acknowledged.
    pub async fn finish(mut self) -> KafkaResult<usize> {
        while !self.inflight.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(self.acked)
    }

    /// Acknowledgements that already arrived, without waiting.
    pub fn settle_ready(&mut self) -> KafkaResult<()> {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let mut cx = Context::from_waker(Waker::noop());
        while let Some(front) = self.inflight.front_mut() {
            match std::pin::Pin::new(front).poll(&mut cx) {
                Poll::Ready(result) => {
                    self.inflight.pop_front();
                    result
                        .map_err(|_| KafkaError::Canceled)?
                        .map_err(|(e, _)| e)?;
                    self.acked += 1;
                }
                Poll::Pending => break,
            }
        }
        Ok(())
    }

    async fn settle_oldest(&mut self) -> KafkaResult<()> {
        let Some(d) = self.inflight.pop_front() else {
            return Ok(());
        };
        d.await
            .map_err(|_| KafkaError::Canceled)?
            .map_err(|(e, _)| e)?;
        self.acked += 1;
        Ok(())
    }
}

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
    let mut sender = OrderedSender::new(producer, topic);
    let mut reported = 0;
    for (key, payload) in records {
        sender.send(&key, &payload).await?;
        if sender.acked() != reported {
            reported = sender.acked();
            on_sent(reported);
        }
    }
    let total = sender.finish().await?;
    if total != reported {
        on_sent(total);
    }
    Ok(total)
}
