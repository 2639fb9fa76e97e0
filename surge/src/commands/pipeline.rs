//! `surge pipeline <name>`: run one exactly-once pipeline until SIGTERM/SIGINT.
//!
//! Exit codes: 0 after a clean shutdown (open transaction committed or
//! aborted, group left); 3 when fenced by another instance (a zombie must
//! stop); 1 on a fatal error (a supervisor should restart it).

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use surge_core::service::run_blocking_loop;
use surge_core::settings::PipelineSettings;
use surge_core::shutdown::Shutdown;
use surge_core::Settings;
use surge_engine::{run_pipeline, ExitReason, PipelineMetrics, PipelineSpec};
use surge_kafka::ClientFactory;
use surge_schemas::coupon::{CouponCommand, CouponDecision};
use surge_schemas::{Registry, TopicCodec};

#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// Which pipeline.
    #[arg(value_enum)]
    name: PipelineName,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PipelineName {
    /// coupon-issue → coupon-result (first come, first served).
    Coupon,
}

/// Topic and group names of a pipeline, with the settings' topic prefix.
pub fn coupon_spec(settings: &Settings) -> PipelineSpec {
    spec(
        settings,
        "coupon",
        "coupon-issue",
        "coupon-result",
        settings.pipelines.coupon.clone(),
    )
}

fn spec(
    settings: &Settings,
    name: &str,
    input: &str,
    output: &str,
    pipeline: PipelineSettings,
) -> PipelineSpec {
    let prefix = &settings.topics.name_prefix;
    PipelineSpec {
        name: name.to_string(),
        input_topic: format!("{prefix}{input}"),
        output_topic: format!("{prefix}{output}"),
        changelog_topic: format!("{prefix}{name}-pipeline-changelog"),
        dlq_topic: format!("{prefix}{name}-pipeline-dlq"),
        group_id: pipeline
            .group_id
            .clone()
            .unwrap_or_else(|| format!("{prefix}surge-{name}")),
        settings: pipeline,
    }
}

pub async fn run(args: PipelineArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    match args.name {
        PipelineName::Coupon => run_coupon(settings).await,
    }
}

async fn run_coupon(settings: &Settings) -> anyhow::Result<ExitCode> {
    let spec = coupon_spec(settings);
    let registry = Registry::new(&settings.registry.url);
    let commands = TopicCodec::<CouponCommand>::connect(&registry)
        .await
        .context("registry: coupon-issue schema")?;
    let results = TopicCodec::<CouponDecision>::connect(&registry)
        .await
        .context("registry: coupon-result schema")?;
    let processor = surge_coupon::CouponProcessor::new(results);
    let metrics = PipelineMetrics::new("coupon");

    // The loop blocks (librdkafka transaction calls): a thread of its own.
    let factory = ClientFactory::new(settings.kafka.clone());
    let runtime = tokio::runtime::Handle::current();
    let listen = spec.settings.metrics_listen;
    let exit = run_blocking_loop(
        "coupon-pipeline",
        listen,
        metrics.registry.clone(),
        metrics.last_poll.clone(),
        Shutdown::on_signals(),
        move |stop| run_pipeline(spec, factory, processor, commands, runtime, stop, metrics),
    )
    .await
    .with_context(|| format!("serving metrics on {listen}"))?;
    Ok(match exit {
        ExitReason::Shutdown => ExitCode::SUCCESS,
        ExitReason::Fenced(why) => {
            eprintln!("surge: fenced, stopping: {why}");
            ExitCode::from(3)
        }
        ExitReason::Fatal(why) => {
            eprintln!("surge: fatal: {why}");
            ExitCode::FAILURE
        }
    })
}
