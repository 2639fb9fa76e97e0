//! Watching a result topic as a data team's read_committed consumer would:
//! how many records became visible, when the first and the last did, and
//! (for decisions) how long after the request each one became visible.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use surge_kafka::{ClientFactory, QuietEofContext};
use surge_schemas::coupon::CouponDecision;
use surge_schemas::TopicCodec;

use super::sandbox::Sandbox;

/// What the watcher saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub records: usize,
    /// Earliest producer timestamp of an output record (ms since the epoch):
    /// when the processor started emitting, whenever the watcher connected.
    pub first_produced_ms: Option<i64>,
    /// Wall clock (ms since the epoch) when the last record became visible
    /// to this read_committed consumer.
    pub last_visible_ms: Option<i64>,
    /// Receive time − requestedAt of each decision (when decoding).
    pub latencies_ms: Vec<f64>,
    /// When each of those was requested, decided (the decision's producer
    /// timestamp: when the pipeline handed it to its producer) and received
    /// (ms since the epoch). Decided − requested is the wait for the
    /// pipeline; received − decided is the transaction's commit and the
    /// reader's fetch.
    pub requested_ms: Vec<i64>,
    pub decided_ms: Vec<i64>,
    pub received_ms: Vec<i64>,
}

impl Seen {
    /// Output records per second over [`Self::span_seconds`].
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.span_seconds()
    }

    /// From the start of processing (the first output record's producer
    /// timestamp) to the moment the last output record was visible. A
    /// producer timestamp alone would stop the clock when a record is
    /// handed to the client, before it is sent, acknowledged and (for a
    /// transaction) committed; visibility is what a reader gets. Same
    /// machine, same clock. At least a millisecond.
    pub fn span_seconds(&self) -> f64 {
        match (self.first_produced_ms, self.last_visible_ms) {
            (Some(a), Some(b)) => (b - a).max(1) as f64 / 1000.0,
            _ => f64::INFINITY,
        }
    }
}

/// Decisions to time: those of coupons starting with `coupons`.
pub struct Timed {
    pub codec: TopicCodec<CouponDecision>,
    pub runtime: tokio::runtime::Handle,
    pub coupons: String,
}

/// Reads `topic` from the beginning until `want` records were seen or
/// `timeout` passed. With `timed`, only decisions of those coupons count,
/// each with its latency (now − requestedAt). Blocking: run it on its own thread.
pub fn watch(
    factory: &ClientFactory,
    topic: &str,
    partitions: i32,
    want: usize,
    timeout: Duration,
    timed: Option<Timed>,
    progress: &str,
) -> Result<Seen, KafkaError> {
    let cfg =
        factory.read_committed_consumer_config("bench-watch", &format!("{topic}-bench-watch"));
    let consumer: BaseConsumer<QuietEofContext> = cfg.create_with_context(QuietEofContext)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        // Timed runs only care about what comes next: start at the current
        // end, so the backlog is neither read nor decoded.
        let from = if timed.is_some() {
            let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
            Offset::Offset(high)
        } else {
            Offset::Beginning
        };
        tpl.add_partition_offset(topic, p, from)?;
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
    let mut seen = Seen::default();
    // Timed decisions are kept raw and decoded after the run: decoding
    // (the Avro value tree, ~1 µs each) would otherwise take CPU from the
    // pipeline under test on a small machine. This run's decisions are
    // told apart by their ids, which all carry the sale's prefix.
    let mut raw: Vec<(Vec<u8>, i64, chrono::DateTime<chrono::Utc>)> = Vec::new();
    let mut reported = Instant::now();
    while seen.records < want && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                // Visible now: taken before anything else is done with it.
                let received = chrono::Utc::now();
                if let Some(t) = &timed {
                    let Some(bytes) = m.payload() else { continue };
                    if !contains(bytes, t.coupons.as_bytes()) {
                        continue;
                    }
                    raw.push((
                        bytes.to_vec(),
                        m.timestamp().to_millis().unwrap_or(0),
                        received,
                    ));
                }
                seen.last_visible_ms = Some(received.timestamp_millis());
                if let Some(ts) = m.timestamp().to_millis() {
                    seen.first_produced_ms = Some(seen.first_produced_ms.map_or(ts, |f| f.min(ts)));
                }
                seen.records += 1;
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => tracing::warn!(message = "watch", error = %e),
        }
        if reported.elapsed() >= Duration::from_secs(2) {
            eprintln!("[bench]   {progress}: {}/{want} visible", seen.records);
            reported = Instant::now();
        }
    }
    if let Some(t) = &timed {
        for (bytes, decided, received) in raw {
            // A record whose payload only happened to hold the prefix, or
            // that does not decode, is not one of this run's decisions.
            let Ok(d) = t.runtime.block_on(t.codec.decode(Some(&bytes))) else {
                continue;
            };
            if !d.coupon_id.starts_with(&t.coupons) {
                continue;
            }
            let ms = (received - d.requested_at).num_microseconds().unwrap_or(0) as f64 / 1000.0;
            seen.latencies_ms.push(ms);
            seen.requested_ms.push(d.requested_at.timestamp_millis());
            seen.decided_ms.push(decided);
            seen.received_ms.push(received.timestamp_millis());
        }
    }
    Ok(seen)
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// [`watch`] from the beginning of `topic`, off the async workers (the
/// consumer blocks).
pub async fn count(
    sandbox: &Sandbox,
    topic: &str,
    want: usize,
    progress: &'static str,
) -> anyhow::Result<Seen> {
    let (f, topic, partitions) = (
        sandbox.factory.clone(),
        topic.to_string(),
        sandbox.partitions,
    );
    Ok(tokio::task::spawn_blocking(move || {
        watch(
            &f,
            &topic,
            partitions,
            want,
            Duration::from_secs(900),
            None,
            progress,
        )
    })
    .await??)
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_sale_prefix_anywhere_in_a_payload() {
        assert!(super::contains(
            b"\x00\x01\x02\x03\x04\x1cbench-1a2b-c7",
            b"bench-1a2b"
        ));
        assert!(!super::contains(b"\x00\x1cbench-1a2c-c7", b"bench-1a2b"));
        assert!(!super::contains(b"bench", b"bench-1a2b"));
    }
}
