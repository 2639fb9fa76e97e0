//! `surge pipeline <name>`: run one exactly-once pipeline until SIGTERM/SIGINT.
//!
//! Exit codes: 0 after a clean shutdown (open transaction committed or
//! aborted, group left); 3 when fenced by another instance (a zombie must
//! stop); 1 on a fatal error (a supervisor should restart it).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, ValueEnum};
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
    spec(settings, "coupon", "coupon-issue", "coupon-result", settings.pipelines.coupon.clone())
}

fn spec(settings: &Settings, name: &str, input: &str, output: &str, pipeline: PipelineSettings) -> PipelineSpec {
    let prefix = &settings.topics.name_prefix;
    PipelineSpec {
        name: name.to_string(),
        input_topic: format!("{prefix}{input}"),
        output_topic: format!("{prefix}{output}"),
        changelog_topic: format!("{prefix}{name}-pipeline-changelog"),
        dlq_topic: format!("{prefix}{name}-pipeline-dlq"),
        group_id: pipeline.group_id.clone().unwrap_or_else(|| format!("{prefix}surge-{name}")),
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
    let commands = TopicCodec::<CouponCommand>::connect(&registry).await.context("registry: coupon-issue schema")?;
    let results = TopicCodec::<CouponDecision>::connect(&registry).await.context("registry: coupon-result schema")?;
    let processor = surge_coupon::CouponProcessor::new(results);
    let metrics = PipelineMetrics::new("coupon");

    let shutdown = Shutdown::on_signals();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (stop, shutdown) = (stop.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.wait().await;
            stop.store(true, Ordering::Relaxed);
        });
    }

    let last_poll = metrics.last_poll.clone();
    let health = move || {
        let age = chrono::Utc::now().timestamp() - last_poll.get();
        if last_poll.get() == 0 {
            Err("starting: not polling yet".to_string())
        } else if age > 30 {
            Err(format!("loop stalled: last poll {age} s ago"))
        } else {
            Ok(format!("polling (last {age} s ago)"))
        }
    };
    let (addr, _server) = surge_core::telemetry::serve(spec.settings.metrics_listen, metrics.registry.clone(), Arc::new(health), shutdown.clone())
        .await
        .with_context(|| format!("serving metrics on {}", spec.settings.metrics_listen))?;
    tracing::info!(message = "metrics and health", address = %addr);

    // The loop blocks (librdkafka transaction calls): a thread of its own.
    let factory = ClientFactory::new(settings.kafka.clone());
    let runtime = tokio::runtime::Handle::current();
    let thread = std::thread::Builder::new()
        .name("coupon-pipeline".into())
        .spawn(move || run_pipeline(spec, factory, processor, commands, runtime, stop, metrics))?;
    let exit = tokio::task::spawn_blocking(move || thread.join()).await?.map_err(|_| anyhow::anyhow!("pipeline thread panicked"))?;
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
