//! `surge`: one binary, one subcommand per process or tool. This file only
//! parses the command line, loads settings and dispatches; each subcommand
//! lives in `commands/`.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use surge_core::Settings;

/// Flash-sale commerce as exactly-once Kafka pipelines.
#[derive(Debug, Parser)]
#[command(name = "surge", version, about, long_about = None)]
struct Cli {
    /// Settings file (TOML). Every key can be overridden by SURGE_<SECTION>__<KEY>.
    #[arg(
        long,
        short,
        global = true,
        env = "SURGE_CONFIG",
        default_value = "config/surge.toml"
    )]
    config: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register the Avro contracts in the schema registry, or check changes against it.
    #[command(subcommand)]
    Schemas(commands::schemas::SchemasCommand),
    /// Create the topics declared in config/topics.toml and report drift.
    #[command(subcommand)]
    Topics(commands::topics::TopicsCommand),
    /// Run an exactly-once pipeline (until SIGTERM/SIGINT).
    Pipeline(commands::pipeline::PipelineArgs),
    /// Run a sink that keeps a store equal to the result topics (until SIGTERM/SIGINT).
    Sink(commands::sink::SinkArgs),
    /// Serve the HTTP API: requests in (202 + request id), decisions out by polling.
    Gateway(commands::gateway::GatewayArgs),
    /// Serve a payment gateway simulator: Idempotency-Key rules, a PostgreSQL ledger, fault knobs.
    #[command(name = "pg-sim", long_about = commands::pg_sim::LONG_ABOUT)]
    PgSim(commands::pg_sim::PgSimArgs),
    /// Produce a flash sale's traffic to coupon-issue (hot or spread), with progress and a manifest.
    Loadgen(commands::loadgen::LoadgenArgs),
    /// Prove the coupon invariants from the topics and the stores; exit 0 only if all hold.
    Verify(commands::verify::VerifyArgs),
    /// A flash sale while pipelines, sinks and brokers are killed and restarted; then verify.
    Chaos(commands::chaos::ChaosArgs),
    /// Measure surge against an at-least-once copy and the Redis-lock design (prints ratios, writes JSON + SVG).
    Bench(commands::bench::BenchArgs),
    /// List dead letters (reasons, provenance) and replay chosen ones to their source exactly once.
    #[command(subcommand)]
    Dlq(commands::dlq::DlqCommand),
    /// Check Kafka (with a transactional round trip), the registry, PostgreSQL and Redis.
    Doctor(commands::doctor::DoctorArgs),
    /// Print the effective settings (defaults, file and environment merged) as TOML.
    Config,
}

fn main() -> ExitCode {
    // A CLI whose output is piped into `head` should stop quietly, not panic.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let settings = match load_settings(&cli.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("surge: {e}");
            return ExitCode::from(78); // EX_CONFIG
        }
    };
    surge_core::telemetry::init_logging(&settings.log);
    if cli.command.uses_kafka() {
        // With TLS or SASL configured, a refused login or TLS handshake, or
        // a client librdkafka cannot create (e.g. a missing CA file), stops
        // the process at once, naming it and the settings to check
        // (librdkafka alone would retry a refusal forever, and its metadata
        // calls report it as a transport failure; a creation error would
        // surface later as a generic failure of whichever client came first).
        let factory = surge_kafka::ClientFactory::new(settings.kafka.clone());
        if let Err(refused) = factory.check_access(std::time::Duration::from_secs(10)) {
            eprintln!("surge: {refused}");
            return ExitCode::from(78); // EX_CONFIG
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("surge: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Schemas(cmd) => commands::schemas::run(cmd, &settings).await,
            Command::Topics(cmd) => commands::topics::run(cmd, &settings).await,
            Command::Dlq(cmd) => commands::dlq::run(cmd, &settings).await,
            Command::Doctor(args) => commands::doctor::run(args, &settings).await,
            Command::Pipeline(args) => commands::pipeline::run(args, &settings).await,
            Command::Sink(args) => commands::sink::run(args, &settings).await,
            Command::Gateway(args) => commands::gateway::run(args, &settings).await,
            Command::PgSim(args) => commands::pg_sim::run(args, &settings).await,
            Command::Loadgen(args) => commands::loadgen::run(args, &settings).await,
            Command::Verify(args) => commands::verify::run(args, &settings).await,
            Command::Bench(args) => commands::bench::run(args, &settings, &cli.config).await,
            Command::Chaos(args) => commands::chaos::run(args, &settings, &cli.config).await,
            Command::Config => commands::print_config(&settings),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("surge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl Command {
    /// Whether the command's work goes through Kafka clients (and so
    /// through `[kafka]`'s security settings).
    fn uses_kafka(&self) -> bool {
        match self {
            Command::Topics(t) => matches!(t, commands::topics::TopicsCommand::Apply),
            Command::Pipeline(_)
            | Command::Sink(_)
            | Command::Gateway(_)
            | Command::Verify(_)
            | Command::Chaos(_)
            | Command::Bench(_)
            | Command::Dlq(_) => true,
            Command::Loadgen(args) => matches!(args.target, commands::loadgen::Target::Kafka),
            // Doctor reports a refusal in its own Kafka line; the rest never
            // touch Kafka.
            Command::Doctor(_) | Command::Schemas(_) | Command::PgSim(_) | Command::Config => false,
        }
    }
}

/// The default file is optional (a binary run outside the repo uses built-in
/// defaults and the environment); a file named explicitly must exist.
fn load_settings(path: &std::path::Path) -> Result<Settings, surge_core::SettingsError> {
    let explicit = std::env::args_os().any(|a| a == "--config" || a == "-c")
        || std::env::var_os("SURGE_CONFIG").is_some();
    if path.exists() || explicit {
        Settings::load(Some(path))
    } else {
        Settings::load(None)
    }
}
