//! Dead-letter records: the original bytes, untouched, with headers saying
//! where they came from and why they could not be processed. Written inside
//! the same transaction as the input offset, so a poison record is moved
//! exactly once and never blocks its partition.

use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::Message;

pub const SOURCE_TOPIC: &str = "surge.dlq.source.topic";
pub const SOURCE_PARTITION: &str = "surge.dlq.source.partition";
pub const SOURCE_OFFSET: &str = "surge.dlq.source.offset";
pub const REASON: &str = "surge.dlq.reason";
pub const MESSAGE: &str = "surge.dlq.message";
pub const PIPELINE: &str = "surge.dlq.pipeline";

/// Headers for the dead-letter copy of `msg`: the original headers first, then ours.
pub fn headers(
    msg: &BorrowedMessage<'_>,
    pipeline: &str,
    reason: &str,
    message: &str,
) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    if let Some(original) = msg.headers() {
        for h in original.iter() {
            out = out.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    for (key, value) in [
        (SOURCE_TOPIC, msg.topic()),
        (SOURCE_PARTITION, partition.as_str()),
        (SOURCE_OFFSET, offset.as_str()),
        (REASON, reason),
        (MESSAGE, message),
        (PIPELINE, pipeline),
    ] {
        out = out.insert(Header {
            key,
            value: Some(value),
        });
    }
    out
}
