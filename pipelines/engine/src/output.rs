//! Records a decision sends, and how the engine chooses their partition.

use std::collections::HashMap;

/// Where an output record goes within its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The partition number being decided: an output co-partitioned with the
    /// input (results, replies to the same key) keeps per-key order.
    Here,
    /// The partition murmur2 of the key selects, as Java clients and the
    /// gateway partition: a command for another pipeline's key lands where
    /// that pipeline owns it.
    ByKey,
    /// This exact partition (forwarding a misrouted record to its owner).
    Partition(i32),
}

/// One record to send inside the open transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The resolved topic name; must be one of the spec's declared outputs.
    pub topic: String,
    pub route: Route,
    pub key: Vec<u8>,
    /// `None` is a tombstone.
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Output {
    pub fn new(topic: &str, route: Route, key: Vec<u8>, payload: Vec<u8>) -> Self {
        Self {
            topic: topic.to_string(),
            route,
            key,
            payload: Some(payload),
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, key: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((key.to_string(), value.into()));
        self
    }
}

/// Partition counts of the topics a pipeline writes, looked up once at start.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    partitions: HashMap<String, i32>,
}

/// An output the engine cannot place: a bug in the processor or a topic
/// set up wrong, never the data's fault.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("output topic {0:?} is not declared in the pipeline spec")]
    Undeclared(String),
    #[error("output topic {topic:?} has {partitions} partitions: partition {here} cannot send to the same partition there")]
    TooFewPartitions {
        topic: String,
        partitions: i32,
        here: i32,
    },
}

impl Routes {
    pub fn new(partitions: HashMap<String, i32>) -> Self {
        Self { partitions }
    }

    pub fn partitions(&self, topic: &str) -> Option<i32> {
        self.partitions.get(topic).copied()
    }

    /// The partition `output` goes to when decided at partition `here`.
    pub fn partition(&self, output: &Output, here: i32) -> Result<i32, RouteError> {
        let n = self
            .partitions(&output.topic)
            .ok_or_else(|| RouteError::Undeclared(output.topic.clone()))?;
        Ok(match output.route {
            Route::Here if here >= n => {
                return Err(RouteError::TooFewPartitions {
                    topic: output.topic.clone(),
                    partitions: n,
                    here,
                })
            }
            Route::Here => here,
            Route::ByKey => surge_kafka::partition_for(&output.key, n),
            Route::Partition(p) => p,
        })
    }
}
