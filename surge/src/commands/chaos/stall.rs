//! When verify gives up with records undecided: where each pipeline's
//! inputs stand, so that a stall can be told apart at a glance — a member
//! that owns partitions and does not move (committed < last stable), an
//! open or hanging transaction that read_committed readers cannot pass
//! (last stable < high watermark, on inputs or outputs), or partitions
//! nobody owns.

use std::fmt::Write;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use surge_core::Settings;
use surge_engine::PipelineSpec;
use surge_kafka::{groups, ClientFactory};

use crate::commands::pipeline::{coupon_spec, inventory_spec, order_spec, payment_spec};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The report, one block per pipeline (blocking: Kafka calls).
pub fn report(settings: &Settings, with_orders: bool) -> String {
    let factory = ClientFactory::new(settings.kafka.clone());
    let mut specs = vec![coupon_spec(settings)];
    if with_orders {
        specs.extend([
            inventory_spec(settings),
            order_spec(settings),
            payment_spec(settings),
        ]);
    }
    let mut out = String::from("where the pipelines stand (partitions that lag or are blocked):\n");
    for spec in &specs {
        if let Err(e) = pipeline(&factory, spec, &mut out) {
            let _ = writeln!(out, "  {}: cannot tell: {e}", spec.name);
        }
    }
    out
}

fn pipeline(factory: &ClientFactory, spec: &PipelineSpec, out: &mut String) -> anyhow::Result<()> {
    let group = groups::describe(factory, &spec.group_id, TIMEOUT)?;
    let members: Vec<String> = group
        .members
        .iter()
        .map(|m| {
            format!(
                "{} {:?}",
                m.client_id,
                m.assignment.iter().map(|(_, p)| p).collect::<Vec<_>>()
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "  {} (group {}, {}): {}",
        spec.name,
        spec.group_id,
        group.state,
        if members.is_empty() {
            "no members".to_string()
        } else {
            members.join("; ")
        }
    );
    let committed_reader: BaseConsumer = factory
        .read_committed_consumer_config("stall-report", &spec.group_id)
        .create()?;
    let mut uncommitted = factory.plain_config("stall-report");
    uncommitted.set("isolation.level", "read_uncommitted");
    let raw_reader: BaseConsumer = uncommitted.create()?;
    for (i, topic) in spec.inputs.iter().chain(&spec.outputs).enumerate() {
        let is_input = i < spec.inputs.len();
        let md = committed_reader.fetch_metadata(Some(topic), TIMEOUT)?;
        let partitions = md.topics().first().map_or(0, |t| t.partitions().len()) as i32;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let committed = if is_input {
            Some(committed_reader.committed_offsets(tpl, TIMEOUT)?)
        } else {
            None
        };
        for p in 0..partitions {
            let (_, stable) = committed_reader.fetch_watermarks(topic, p, TIMEOUT)?;
            let (_, high) = raw_reader.fetch_watermarks(topic, p, TIMEOUT)?;
            let position =
                committed
                    .as_ref()
                    .and_then(|c| match c.find_partition(topic, p)?.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => Some(0),
                    });
            let lagging = position.is_some_and(|pos| pos < stable);
            let blocked = stable < high;
            if !lagging && !blocked {
                continue;
            }
            let owner = group
                .owner_of(topic, p)
                .map_or("nobody".to_string(), |m| m.client_id.clone());
            let _ = writeln!(
                out,
                "    {topic}[{p}]: {}last stable {stable}, high watermark {high}{}{}",
                position.map_or(String::new(), |pos| format!("committed {pos}, ")),
                if is_input {
                    format!(", owner {owner}")
                } else {
                    String::new()
                },
                if blocked {
                    " — an open transaction holds read_committed readers back"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}
