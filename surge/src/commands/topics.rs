//! `surge topics apply`: make the cluster match config/topics.toml (and
//! `drop`: delete a scratch run's prefixed copy of them).

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use surge_core::Settings;
use surge_kafka::{topics, ClientFactory};

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create missing topics; set segment.ms and delete.retention.ms on
    /// existing ones; report other drift (exit 2 when there is drift).
    Apply,
    /// Show the declared topics after overrides, without contacting Kafka.
    Plan,
    /// Delete the declared topics of a scratch run: only under a non-empty
    /// `topics.name_prefix` (SURGE_TOPICS__NAME_PREFIX), and only with --yes.
    Drop {
        /// Confirms the deletion.
        #[arg(long)]
        yes: bool,
    },
}

pub async fn run(cmd: TopicsCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    let specs = topics::load(&settings.topics.file, &settings.topics)?;
    match cmd {
        TopicsCommand::Plan => {
            for s in &specs {
                println!(
                    "{:<32} partitions {:<3} rf {} min.isr {} {} retention {}{}",
                    s.name,
                    s.partitions,
                    s.replication_factor,
                    s.min_insync_replicas,
                    s.cleanup_policy.as_kafka(),
                    s.retention
                        .map_or("forever".into(), |d| humantime::format_duration(d)
                            .to_string()),
                    s.segment.map_or(String::new(), |d| format!(
                        " segment {}",
                        humantime::format_duration(d)
                    ))
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TopicsCommand::Drop { yes } => {
            if settings.topics.name_prefix.is_empty() {
                anyhow::bail!(
                    "topics drop deletes a scratch run's topics: set topics.name_prefix \
                     (SURGE_TOPICS__NAME_PREFIX); it never deletes the unprefixed ones"
                );
            }
            if !yes {
                anyhow::bail!(
                    "topics drop would delete {} topics under {:?}: add --yes",
                    specs.len(),
                    settings.topics.name_prefix
                );
            }
            let admin = ClientFactory::new(settings.kafka.clone()).admin()?;
            // With the declared topics go the markers `surge dlq replay`
            // creates beside each dead-letter topic (absent if it never ran).
            let n = surge_core::Names::from_settings(settings);
            let markers: Vec<String> = surge_core::names::PIPELINES
                .iter()
                .map(|p| crate::commands::dlq::marker_topic(&n.dlq(p)))
                .collect();
            let names: Vec<&str> = specs
                .iter()
                .map(|s| s.name.as_str())
                .chain(markers.iter().map(String::as_str))
                .collect();
            let opts = rdkafka::admin::AdminOptions::new()
                .operation_timeout(Some(Duration::from_secs(30)));
            let mut failed = 0;
            for result in admin.delete_topics(&names, &opts).await? {
                match result {
                    Ok(t) => println!("deleted   {t}"),
                    Err((t, rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                        println!("absent    {t}")
                    }
                    Err((t, e)) => {
                        failed += 1;
                        println!("FAILED    {t}: {e}");
                    }
                }
            }
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        TopicsCommand::Apply => {
            let admin = ClientFactory::new(settings.kafka.clone()).admin()?;
            let report = topics::apply(&admin, &specs, Duration::from_secs(30)).await?;
            for t in &report.created {
                println!("created   {t}");
            }
            for t in &report.unchanged {
                println!("ok        {t}");
            }
            for a in &report.altered {
                println!("altered   {a}");
            }
            for d in &report.drift {
                println!("DRIFT     {d}");
            }
            println!(
                "{} created, {} unchanged, {} drift, {} configs set",
                report.created.len(),
                report.unchanged.len(),
                report.drift.len(),
                report.altered.len()
            );
            Ok(if report.drift.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
    }
}
