//! Child processes the kit starts, kills and starts again with the same command line.
//!
//! Every process logs (stdout and stderr) into one file under the system's workdir. A
//! restarted process appends to the same file after a `----- restarted -----` line, so a
//! log reads as the whole story of that process slot.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::wait::eventually;

/// Where the ris-* binaries are.
pub(crate) fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("RIS_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("test executable path");
            // target/<profile>/deps/<test> → target/<profile>
            exe.parent()
                .and_then(Path::parent)
                .expect("target dir")
                .to_path_buf()
        });
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} missing: run `cargo build --bins` first (or set RIS_BIN_DIR)",
        path.display()
    );
    path
}

/// The processes' log filter: `RIS_E2E_RUST_LOG` if set (the benchmark runs at the
/// production default, `info`), else debug for RIS's own crates, for diagnosing tests.
fn log_filter() -> String {
    std::env::var("RIS_E2E_RUST_LOG")
        .unwrap_or_else(|_| "info,ris_api=debug,ris_dispatcher=debug,ris_agent=debug".to_owned())
}

/// How to start one process: binary, arguments, environment, log file, and the user to
/// run as.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub binary: &'static str,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    /// `(uid, gid)` to run as instead of the test's own user.
    pub run_as: Option<(u32, u32)>,
}

impl Launch {
    pub fn new(binary: &'static str, log: PathBuf) -> Self {
        Self {
            binary,
            args: Vec::new(),
            env: Vec::new(),
            log,
            run_as: None,
        }
    }

    /// Starts the process. `fresh` truncates the log; otherwise the log is appended to,
    /// after a marker line.
    pub fn spawn(&self, fresh: bool) -> Child {
        let mut log_file = if fresh {
            std::fs::File::create(&self.log)
        } else {
            OpenOptions::new().create(true).append(true).open(&self.log)
        }
        .unwrap_or_else(|e| panic!("log file {}: {e}", self.log.display()));
        if !fresh {
            drop(writeln!(log_file, "----- restarted -----"));
        }
        let mut command = Command::new(bin(self.binary));
        command
            .args(&self.args)
            .envs(self.env.iter().cloned())
            .env("RUST_LOG", log_filter())
            // Plain text, so the logs can be grepped.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .kill_on_drop(true);
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.binary))
    }
}

/// A server process (`ris-api`, `ris-dispatcher`) with a `/healthz` to wait for.
pub(crate) struct ServerProc {
    pub launch: Launch,
    /// `http://host:port/healthz`.
    pub health_url: String,
    pub child: Option<Child>,
}

impl ServerProc {
    pub fn start(launch: Launch, health_url: String) -> Self {
        let child = Some(launch.spawn(true));
        Self {
            launch,
            health_url,
            child,
        }
    }

    /// SIGKILL, then reaps the process. Does nothing if it is not running.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.kill().await);
        }
    }

    /// Starts the process again (killing it first if it runs) with the same command
    /// line, environment and log file, and waits until its `/healthz` answers.
    pub async fn restart(&mut self, http: &reqwest::Client) {
        self.kill().await;
        self.child = Some(self.launch.spawn(false));
        self.wait_healthy(http, Duration::from_secs(30)).await;
    }

    pub async fn wait_healthy(&self, http: &reqwest::Client, timeout: Duration) {
        let what = format!("{} to answer {}", self.launch.binary, self.health_url);
        eventually(&what, timeout, || async {
            let ok = http
                .get(&self.health_url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            ok.then_some(())
        })
        .await;
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Starts killing without waiting (for `Drop`).
    pub fn start_kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            drop(child.start_kill());
        }
    }
}
