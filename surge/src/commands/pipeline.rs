//! `surge pipeline <name>`: run one exactly-once pipeline until SIGTERM/SIGINT.
//!
//! Exit codes: 0 after a clean shutdown (open transaction committed or
//! aborted, group left); 3 when fenced by another instance (a zombie must
//! stop); 1 on a fatal error (a supervisor should restart it).

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use surge_core::names::{self, Names};
use surge_core::service::run_blocking_loop;
use surge_core::settings::PipelineSettings;
use surge_core::shutdown::Shutdown;
use surge_core::Settings;
use surge_engine::{run_pipeline, ExitReason, Inputs, PipelineMetrics, PipelineSpec, Processor};
use surge_kafka::ClientFactory;
use surge_order::{OrderSaga, SagaCodecs, SagaGauges, SagaInputs, SagaTopics};
use surge_schemas::coupon::{CouponCommand, CouponDecision};
use surge_schemas::inventory::{InventoryCommand, InventoryEvent};
use surge_schemas::order::{OrderCancel, OrderCreate, OrderReply, OrderStatus, PaymentRequest};
use surge_schemas::{Contract, Registry, TopicCodec};

#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// Which pipeline.
    #[arg(value_enum)]
    name: PipelineName,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PipelineName {
    /// coupon-issue → coupon-result (first come, first served), and the
    /// saga's coupon redemptions → order-replies.
    Coupon,
    /// inventory-commands → inventory-result (stock per product), and the
    /// saga's reservations → order-replies.
    Inventory,
    /// The order saga: order-create, order-cancel, order-replies →
    /// inventory-commands, coupon-issue, payment-request, order-status.
    Order,
    /// payment-request → the payment provider ([payment] url, under
    /// idempotency keys, outside any transaction) → order-replies.
    Payment,
}

/// Topics and group of the coupon pipeline.
pub fn coupon_spec(settings: &Settings) -> PipelineSpec {
    let n = Names::from_settings(settings);
    spec(
        &n,
        names::COUPON,
        &[CouponCommand::TOPIC],
        &[CouponDecision::TOPIC, OrderReply::TOPIC],
        settings.pipelines.coupon.clone(),
    )
}

/// Topics and group of the inventory pipeline.
pub fn inventory_spec(settings: &Settings) -> PipelineSpec {
    spec(
        &Names::from_settings(settings),
        names::INVENTORY,
        &[InventoryCommand::TOPIC],
        &[InventoryEvent::TOPIC, OrderReply::TOPIC],
        settings.pipelines.inventory.clone(),
    )
}

/// Topics and group of the order saga (its inputs are co-partitioned).
pub fn order_spec(settings: &Settings) -> PipelineSpec {
    spec(
        &Names::from_settings(settings),
        names::ORDER,
        &surge_order::inputs::TOPICS,
        &[
            OrderStatus::TOPIC,
            PaymentRequest::TOPIC,
            InventoryCommand::TOPIC,
            CouponCommand::TOPIC,
        ],
        settings.pipelines.order.clone(),
    )
}

pub fn payment_spec(settings: &Settings) -> PipelineSpec {
    spec(
        &Names::from_settings(settings),
        names::PAYMENT,
        &[PaymentRequest::TOPIC],
        &[OrderReply::TOPIC],
        settings.pipelines.payment.clone(),
    )
}

fn spec(
    n: &Names,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    pipeline: PipelineSettings,
) -> PipelineSpec {
    PipelineSpec {
        name: name.to_string(),
        inputs: inputs.iter().map(|t| n.topic(t)).collect(),
        outputs: outputs.iter().map(|t| n.topic(t)).collect(),
        changelog_topic: n.changelog(name),
        dlq_topic: n.dlq(name),
        group_id: pipeline
            .group_id
            .clone()
            .unwrap_or_else(|| n.pipeline_group(name)),
        settings: pipeline,
    }
}

/// The codec of contract `T` under this deployment's subject.
async fn codec<T: Contract>(registry: &Registry, n: &Names) -> anyhow::Result<TopicCodec<T>> {
    TopicCodec::<T>::connect(registry, &n.subject(T::TOPIC))
        .await
        .with_context(|| format!("registry: schema of {}", n.topic(T::TOPIC)))
}

/// Warns when the coupon pipeline's dedupe window is shorter than
/// coupon-issue's declared retention (the topics file; not read when absent).
fn coupon_window_check(settings: &Settings, n: &Names, window: std::time::Duration) {
    let input = n.topic(CouponCommand::TOPIC);
    match surge_kafka::topics::load(&settings.topics.file, &settings.topics) {
        Ok(specs) => {
            if let Some(spec) = specs.iter().find(|s| s.name == input) {
                if let Some(why) =
                    surge_coupon::decide::window_shorter_than_retention(window, spec.retention)
                {
                    tracing::warn!(topic = %input, "{why}");
                }
            }
        }
        Err(e) => tracing::debug!("dedupe window not checked against retention: {e}"),
    }
}

pub async fn run(args: PipelineArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let registry = Registry::new(&settings.registry.url);
    let n = Names::from_settings(settings);
    match args.name {
        PipelineName::Coupon => {
            let spec = coupon_spec(settings);
            let inputs = codec::<CouponCommand>(&registry, &n).await?;
            let results = codec::<CouponDecision>(&registry, &n).await?;
            let replies = codec::<OrderReply>(&registry, &n).await?;
            let window = settings
                .pipelines
                .coupon
                .dedupe_window
                .unwrap_or(surge_coupon::decide::DEFAULT_DEDUPE_WINDOW);
            coupon_window_check(settings, &n, window);
            let processor = surge_coupon::CouponProcessor::new(
                results,
                replies,
                n.topic(CouponDecision::TOPIC),
                n.topic(OrderReply::TOPIC),
            )
            .with_dedupe_window(window);
            launch_with(settings, spec, inputs, |metrics| {
                let gauges = surge_coupon::StockGauges::register(&metrics.registry)
                    .context("registering the stock gauges")?;
                Ok(processor.with_stock_gauges(gauges))
            })
            .await
        }
        PipelineName::Inventory => {
            let spec = inventory_spec(settings);
            let inputs = codec::<InventoryCommand>(&registry, &n).await?;
            let processor = surge_inventory::InventoryProcessor::new(
                codec::<InventoryEvent>(&registry, &n).await?,
                codec::<OrderReply>(&registry, &n).await?,
                n.topic(InventoryEvent::TOPIC),
                n.topic(OrderReply::TOPIC),
            );
            launch(settings, spec, processor, inputs).await
        }
        PipelineName::Order => {
            let spec = order_spec(settings);
            let inputs = SagaInputs {
                create: codec::<OrderCreate>(&registry, &n).await?,
                cancel: codec::<OrderCancel>(&registry, &n).await?,
                replies: codec::<OrderReply>(&registry, &n).await?,
            };
            let topics = SagaTopics {
                status: n.topic(OrderStatus::TOPIC),
                payments: n.topic(PaymentRequest::TOPIC),
                inventory: n.topic(InventoryCommand::TOPIC),
                coupons: n.topic(CouponCommand::TOPIC),
            };
            let codecs = SagaCodecs {
                status: codec(&registry, &n).await?,
                payments: codec(&registry, &n).await?,
                inventory: codec(&registry, &n).await?,
                coupons: codec(&registry, &n).await?,
            };
            let saga = OrderSaga::new(settings.orders.clone(), topics, codecs);
            launch_with(settings, spec, inputs, |metrics| {
                let gauges = SagaGauges::register(&metrics.registry)
                    .context("registering the saga's gauges")?;
                Ok(saga.with_gauges(gauges))
            })
            .await
        }
        PipelineName::Payment => {
            let spec = payment_spec(settings);
            let inputs = codec::<PaymentRequest>(&registry, &n).await?;
            let replies = codec::<OrderReply>(&registry, &n).await?;
            let p = &settings.payment;
            let gateway =
                surge_payment_gateway::HttpGateway::new(&p.url, p.call_timeout).map_err(|e| {
                    anyhow::anyhow!(
                        "[payment] url {}: {e}",
                        surge_core::settings::redact_url(&p.url)
                    )
                })?;
            let runtime = tokio::runtime::Handle::current();
            launch_with(settings, spec, inputs, |metrics| {
                let payment_metrics = surge_payment::PaymentMetrics::register(&metrics.registry)
                    .context("registering the payment metrics")?;
                Ok(surge_payment::PaymentPipeline::new(
                    gateway,
                    runtime,
                    surge_payment::RetryPolicy::from_settings(p),
                    p.max_in_flight,
                    replies,
                    n.topic(OrderReply::TOPIC),
                    payment_metrics,
                ))
            })
            .await
        }
    }
}

/// Runs one pipeline on a thread of its own (the loop blocks on librdkafka's
/// transaction calls) with its metrics and health endpoint, until a signal.
async fn launch<P, I>(
    settings: &Settings,
    spec: PipelineSpec,
    processor: P,
    inputs: I,
) -> anyhow::Result<ExitCode>
where
    P: Processor,
    I: Inputs<Message = P::Input>,
{
    launch_with(settings, spec, inputs, |_| Ok(processor)).await
}

/// As [`launch`], for a processor that registers metrics of its own.
async fn launch_with<P, I>(
    settings: &Settings,
    spec: PipelineSpec,
    inputs: I,
    processor: impl FnOnce(&PipelineMetrics) -> anyhow::Result<P>,
) -> anyhow::Result<ExitCode>
where
    P: Processor,
    I: Inputs<Message = P::Input>,
{
    let metrics = PipelineMetrics::new(&spec.name);
    let processor = processor(&metrics)?;
    let factory = ClientFactory::new(settings.kafka.clone());
    let runtime = tokio::runtime::Handle::current();
    let listen = spec.settings.metrics_listen;
    let thread = format!("{}-pipeline", spec.name);
    let exit = run_blocking_loop(
        &thread,
        listen,
        metrics.registry.clone(),
        metrics.last_poll.clone(),
        Shutdown::on_signals(),
        move |stop| run_pipeline(spec, factory, processor, inputs, runtime, stop, metrics),
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
