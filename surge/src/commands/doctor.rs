//! `surge doctor`: is everything surge depends on there and working?
//!
//! Beyond reachability it proves the two things surge cannot run without:
//! the broker supports transactions (a committed record is visible to a
//! read_committed consumer and an aborted one is not), and records on the
//! wire are Confluent-framed Avro that decode back to the same message.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use surge_core::{Names, Settings};
use surge_kafka::ClientFactory;
use surge_schemas::coupon::{CouponAction, CouponCommand};
use surge_schemas::{Contract, Registry, TopicCodec};

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Scratch topic for the transactional round trip (created with one
    /// partition if missing) [default: surge-doctor, after
    /// topics.name_prefix like every topic surge names].
    #[arg(long)]
    topic: Option<String>,
    /// Skip the PostgreSQL and Redis checks (Kafka and the registry only).
    #[arg(long)]
    kafka_only: bool,
    /// Print the decoded record as JSON (for scripts).
    #[arg(long)]
    json: bool,
}

pub async fn run(args: DoctorArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let factory = ClientFactory::new(settings.kafka.clone());
    let mut ok = true;

    let f = factory.clone();
    let brokers = tokio::task::spawn_blocking(move || f.ping(Duration::from_secs(10))).await?;
    ok &= report(
        "kafka",
        brokers
            .as_ref()
            .map(|n| format!("{n} broker(s) at {}", settings.kafka.bootstrap_servers)),
    );

    let registry = Registry::new(&settings.registry.url);
    let subject = Names::from_settings(settings).subject(CouponCommand::TOPIC);
    let codec = TopicCodec::<CouponCommand>::connect(&registry, &subject).await;
    ok &= report(
        "registry",
        codec.as_ref().map(|c| {
            format!(
                "{} ({subject} is schema id {})",
                surge_core::settings::redact_url(registry.url()),
                c.schema_id()
            )
        }),
    );

    if let (Ok(_), Ok(codec)) = (&brokers, &codec) {
        let topic = args
            .topic
            .clone()
            .unwrap_or_else(|| Names::from_settings(settings).topic("surge-doctor"));
        let result = transactional_round_trip(&factory, codec, &topic, settings).await;
        if let (true, Ok(msg)) = (args.json, &result) {
            println!(
                "{}",
                serde_json::json!({ "requestId": msg.request_id, "couponId": msg.coupon_id, "topic": topic })
            );
        }
        ok &= report(
            "transactions",
            result.map(|m| {
                format!(
                    "committed record {} read back with read_committed, aborted one invisible",
                    m.request_id
                )
            }),
        );
    }

    if !args.kafka_only {
        ok &= report("postgres", check_postgres(&settings.postgres.url).await);
        ok &= report("redis", check_redis(&settings.redis.url).await);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn report<E: std::fmt::Display>(what: &str, result: Result<String, E>) -> bool {
    match result {
        Ok(detail) => {
            println!("ok    {what:<13} {detail}");
            true
        }
        Err(e) => {
            println!("FAIL  {what:<13} {e:#}");
            false
        }
    }
}

async fn transactional_round_trip(
    factory: &ClientFactory,
    codec: &TopicCodec<CouponCommand>,
    topic: &str,
    settings: &Settings,
) -> anyhow::Result<CouponCommand> {
    ensure_topic(factory, topic, settings).await?;
    let marker = |kind: &str| CouponCommand {
        request_id: format!("doctor-{kind}-{}", uuid::Uuid::new_v4()),
        coupon_id: "doctor".into(),
        requested_at: surge_schemas::now(),
        command: CouponAction::Issue {
            user_id: "doctor".into(),
        },
    };
    let aborted = marker("aborted");
    let committed = marker("committed");
    let aborted_bytes = codec.encode(&aborted)?;
    let committed_bytes = codec.encode(&committed)?;

    let (factory, topic_owned) = (factory.clone(), topic.to_string());
    let committed_copy = committed_bytes.clone();
    let start = tokio::task::spawn_blocking(move || -> anyhow::Result<i64> {
        // Transaction calls block: keep them off the async workers.
        let probe: BaseConsumer = factory
            .read_committed_consumer_config("doctor", "surge-doctor")
            .create()?;
        let (_, high) = probe.fetch_watermarks(&topic_owned, 0, Duration::from_secs(10))?;
        let txid = format!("surge-doctor-{}", uuid::Uuid::new_v4());
        let producer: BaseProducer = factory
            .transactional_producer_config("doctor", &txid)
            .create()?;
        let t = Duration::from_secs(30);
        producer.init_transactions(t)?;
        producer.begin_transaction()?;
        producer
            .send(
                BaseRecord::to(&topic_owned)
                    .key("doctor")
                    .payload(&aborted_bytes),
            )
            .map_err(|(e, _)| e)?;
        producer.flush(t)?;
        producer.abort_transaction(t)?;
        producer.begin_transaction()?;
        producer
            .send(
                BaseRecord::to(&topic_owned)
                    .key("doctor")
                    .payload(&committed_copy),
            )
            .map_err(|(e, _)| e)?;
        producer.commit_transaction(t)?;
        Ok(high)
    })
    .await??;

    let (factory, topic_owned) = (
        ClientFactory::new(settings.kafka.clone()),
        topic.to_string(),
    );
    let raw = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Vec<u8>>> {
        let consumer: BaseConsumer = factory
            .read_committed_consumer_config("doctor", "surge-doctor")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic_owned, 0, Offset::Offset(start))?;
        consumer.assign(&tpl)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                let m = m?;
                seen.push(m.payload().unwrap_or_default().to_vec());
                if m.payload() == Some(committed_bytes.as_slice()) {
                    return Ok(seen);
                }
            }
        }
        bail!("the committed record did not arrive within 30 s")
    })
    .await??;

    let mut found = None;
    for bytes in raw {
        let msg = codec
            .decode(Some(&bytes))
            .await
            .context("decoding a record read back")?;
        if msg.request_id == aborted.request_id {
            bail!("an aborted record was visible to a read_committed consumer");
        }
        if msg.request_id == committed.request_id {
            found = Some(msg);
        }
    }
    let found = found.context("committed record not found")?;
    if found != committed {
        bail!("decoded record differs from the one produced: {found:?} != {committed:?}");
    }
    Ok(found)
}

async fn ensure_topic(
    factory: &ClientFactory,
    topic: &str,
    settings: &Settings,
) -> anyhow::Result<()> {
    let admin = factory.admin()?;
    let rf = settings.topics.replication_factor.unwrap_or(1);
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(rf)).set("retention.ms", "3600000");
    let results = admin
        .create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await?;
    for r in results {
        match r {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => bail!("cannot create {name}: {code}"),
        }
    }
    Ok(())
}

async fn check_postgres(url: &str) -> anyhow::Result<String> {
    use sqlx::Connection;
    let mut conn = tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(url))
        .await
        .context("timed out")??;
    let version: String = sqlx::query_scalar("select version()")
        .fetch_one(&mut conn)
        .await?;
    Ok(version.split(" on ").next().unwrap_or(&version).to_string())
}

async fn check_redis(url: &str) -> anyhow::Result<String> {
    let client = redis::Client::open(url)?;
    let mut conn = tokio::time::timeout(
        Duration::from_secs(10),
        client.get_multiplexed_async_connection(),
    )
    .await
    .context("timed out")??;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
    Ok(format!(
        "{} answered {pong}",
        surge_core::settings::redact_url(url)
    ))
}
