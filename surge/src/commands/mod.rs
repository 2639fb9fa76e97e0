//! One module per subcommand. Each exposes `run(args, &Settings)` returning
//! the process exit code; errors that are the user's are printed plainly.

pub mod bench;
pub mod chaos;
pub mod dlq;
pub mod doctor;
pub mod gateway;
pub mod loadgen;
pub mod pg_sim;
pub mod pipeline;
pub mod schemas;
pub mod sink;
pub mod topics;
pub mod verify;

use std::process::ExitCode;

use surge_core::Settings;

pub fn print_config(settings: &Settings) -> anyhow::Result<ExitCode> {
    print!("{}", toml::to_string_pretty(&settings.redacted())?);
    Ok(ExitCode::SUCCESS)
}
