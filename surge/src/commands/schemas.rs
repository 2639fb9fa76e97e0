//! `surge schemas register | check`: the contracts in schemas/ and the registry.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use apache_avro::Schema;
use clap::Subcommand;
use surge_core::{Names, Settings};
use surge_schemas::{compat, Registry, RegistryError, ALL_CONTRACTS};

#[derive(Debug, Subcommand)]
pub enum SchemasCommand {
    /// Register every contract under <prefix><topic>-value and set the subject's compatibility (BACKWARD).
    Register {
        /// Read the .avsc files from this directory instead of the ones built into the binary.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Check the contracts against the registered versions; non-zero exit naming the breaking field.
    Check {
        /// Read the .avsc files from this directory instead of the ones built into the binary.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

struct LocalSchema {
    topic: &'static str,
    subject: String,
    text: String,
    parsed: Schema,
}

fn local_schemas(dir: Option<&Path>, settings: &Settings) -> anyhow::Result<Vec<LocalSchema>> {
    let names = Names::from_settings(settings);
    ALL_CONTRACTS
        .iter()
        .map(|c| {
            let text = match dir {
                Some(d) => {
                    let path = d.join(format!("{}.avsc", c.topic));
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?
                }
                None => c.schema_json.to_string(),
            };
            let parsed = Schema::parse_str(&text)
                .with_context(|| format!("{}.avsc is not a valid Avro schema", c.topic))?;
            let subject = names.subject(c.topic);
            Ok(LocalSchema {
                topic: c.topic,
                subject,
                text,
                parsed,
            })
        })
        .collect()
}

pub async fn run(cmd: SchemasCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    let registry = Registry::new(&settings.registry.url);
    match cmd {
        SchemasCommand::Register { dir } => {
            register(
                &registry,
                &local_schemas(dir.as_deref(), settings)?,
                settings,
            )
            .await
        }
        SchemasCommand::Check { dir } => {
            check(&registry, &local_schemas(dir.as_deref(), settings)?).await
        }
    }
}

async fn register(
    registry: &Registry,
    schemas: &[LocalSchema],
    settings: &Settings,
) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for s in schemas {
        // Set the level first so the very first version is already guarded.
        patiently(&s.subject, || {
            registry.set_compatibility(&s.subject, &settings.registry.compatibility)
        })
        .await?;
        match patiently(&s.subject, || registry.register(&s.subject, &s.text)).await {
            Ok(id) => println!(
                "{:<24} id {id:<5} compatibility {}",
                s.subject, settings.registry.compatibility
            ),
            Err(RegistryError::Incompatible { .. }) => {
                failed = true;
                println!(
                    "{:<24} REJECTED as incompatible with the registered versions",
                    s.subject
                );
                explain(registry, s).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// How long `register` waits out a registry that does not answer. A fresh
/// registry on KafkaSQL storage answers its first writes only once its
/// journal topic round-trips through the broker, which on a loaded machine
/// can outlast one call's timeout; a deploy script should not fail on that.
const REGISTRY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs `call` again while the registry is unavailable, up to
/// [`REGISTRY_PATIENCE`], saying so on stderr; other errors return at once.
async fn patiently<T, F, Fut>(subject: &str, mut call: F) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RegistryError>>,
{
    let deadline = std::time::Instant::now() + REGISTRY_PATIENCE;
    let mut pause = std::time::Duration::from_millis(500);
    loop {
        match call().await {
            Err(e) if e.is_retriable() && std::time::Instant::now() + pause < deadline => {
                eprintln!("{subject}: {e}; trying again in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(8));
            }
            other => return other,
        }
    }
}

async fn check(registry: &Registry, schemas: &[LocalSchema]) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for s in schemas {
        let Some(latest) = registry.latest(&s.subject).await? else {
            println!("{:<24} not registered yet (new subject)", s.subject);
            continue;
        };
        if registry.is_compatible(&s.subject, &s.text).await? {
            println!(
                "{:<24} compatible with version {}",
                s.subject,
                latest.version.map_or("?".into(), |v| v.to_string())
            );
        } else {
            failed = true;
            println!(
                "{:<24} INCOMPATIBLE with version {}",
                s.subject,
                latest.version.map_or("?".into(), |v| v.to_string())
            );
            explain(registry, s).await?;
        }
    }
    if failed {
        println!("\n{} is BACKWARD-incompatible: consumers could not read data already written. Give new fields a default, keep types widenable.", schemas_label(schemas));
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn schemas_label(schemas: &[LocalSchema]) -> &'static str {
    if schemas.len() == 1 {
        "the schema"
    } else {
        "at least one schema"
    }
}

/// Prints which fields break compatibility with the latest registered version.
async fn explain(registry: &Registry, s: &LocalSchema) -> anyhow::Result<()> {
    let Some(latest) = registry.latest(&s.subject).await? else {
        return Ok(());
    };
    let old = Schema::parse_str(&latest.schema).context("registered schema does not parse")?;
    let breakages = compat::backward_breakages(&old, &s.parsed);
    if breakages.is_empty() {
        println!(
            "    (the registry refused it; the local diff found no field-level cause for {})",
            s.topic
        );
    }
    for b in breakages {
        println!("    {b}");
    }
    Ok(())
}
