//! Shared by the integration tests: the stack's settings, unique names so
//! tests never see each other's data, and a way to run the `surge` binary.
//! The services come from `scripts/stack up` (scripts/test does that).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

pub mod coupon;

use surge_core::Settings;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// config/surge.toml with the environment's overrides, as a surge process sees it.
pub fn settings() -> Settings {
    Settings::load(Some(&repo_root().join("config/surge.toml"))).expect("config/surge.toml loads")
}

/// A name no other test (or earlier run) uses: `t-<what>-<random>`.
pub fn unique(what: &str) -> String {
    format!(
        "t-{what}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Runs `surge ARGS` from the repository root with extra environment.
pub fn surge(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_surge"))
        .current_dir(repo_root())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run the surge binary");
    eprintln!(
        "$ surge {}\n--- stdout\n{}--- stderr\n{}--- exit {:?}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code()
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
