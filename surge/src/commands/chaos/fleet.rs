//! The processes a chaos run owns: surge pipelines, sinks and the gateway
//! as child processes of this binary, each with a log file, killed and
//! restarted on demand. A member that dies on its own is noticed and
//! restarted too (and reported: that is what a supervisor would see).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// One supervised process.
pub struct Member {
    pub name: String,
    /// This binary's path, read once: /proc/self/exe names a deleted file
    /// once the binary is rebuilt under a long run, the path stays valid.
    exe: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// Exits nobody asked for: (exit code or signal, when).
    pub unexpected_exits: Vec<String>,
}

impl Member {
    pub fn new(name: &str, args: &[&str], env: Vec<(String, String)>, logs: &Path) -> Self {
        Self {
            name: name.to_string(),
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("surge")),
            args: args.iter().map(|a| a.to_string()).collect(),
            env,
            log: logs.join(format!("{name}.log")),
            child: None,
            unexpected_exits: Vec::new(),
        }
    }

    pub fn start(&mut self, config: &Path) -> anyhow::Result<()> {
        let file = File::options().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.exe)
            .arg("--config")
            .arg(config)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends `signal` and waits for the process to end.
    pub fn stop(&mut self, signal: libc::c_int) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child, whose pid is valid until we wait on it.
            unsafe {
                libc::kill(child.id() as libc::pid_t, signal);
            }
            let _ = child.wait();
        }
    }

    /// Whether it is still running; records an exit nobody asked for.
    pub fn check(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                self.unexpected_exits.push(format!("{status}"));
                self.child = None;
                false
            }
            Err(_) => false,
        }
    }

    /// The /metrics address this member's newest process announced.
    pub fn metrics_address(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        let (_, rest) = text.rsplit_once("metrics and health address=")?;
        rest.split_whitespace().next().map(str::to_string)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop(libc::SIGKILL);
    }
}
