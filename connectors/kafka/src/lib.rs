//! Kafka plumbing shared by every pipeline, sink and tool: client configs
//! built from settings (with the raw librdkafka escape hatch), and the
//! declarative topic set with its reconciler. Pipelines never build a
//! ClientConfig by hand: security settings must reach every client.

pub mod client;
pub mod groups;
pub mod partitioner;
pub mod produce;
pub mod reader;
pub mod topics;

pub use client::ClientFactory;
pub use partitioner::partition_for;
pub use produce::{produce_in_order, OrderedSender};
pub use reader::{QuietEofContext, Record, TopicReader};
pub use topics::{ApplyReport, Drift, TopicSpec, TopicsError};
