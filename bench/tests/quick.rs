//! `ris-bench all --quick` runs every scenario with small counts against a real system,
//! so the benchmark cannot rot. It checks that each scenario ran and reported, never how
//! fast (no wall-clock asserts: figures belong in docs/benchmarks.md).
//!
//! Needs the services (`scripts/services.sh`) and the binaries (`cargo build --bins`).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A quick run takes well under a minute; past this it is stuck, and fails rather than
/// hold up the suite.
const LIMIT: Duration = Duration::from_secs(600);

#[test]
fn every_scenario_runs_in_quick_mode() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ris-bench"))
        .args(["all", "--quick"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ris-bench");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            drop(pipe.read_to_string(&mut text));
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for ris-bench") {
            break Some(status);
        }
        if Instant::now() > deadline {
            drop(child.kill());
            drop(child.wait());
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (stdout, stderr) = (
        stdout.join().expect("stdout reader"),
        stderr.join().expect("stderr reader"),
    );
    let Some(status) = status else {
        panic!("ris-bench all --quick still running after {LIMIT:?}:\n{stderr}");
    };
    assert!(status.success(), "ris-bench all --quick failed:\n{stderr}");
    let scenarios: Vec<String> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("one JSON object a line"))
        .map(|v| v["scenario"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        scenarios,
        [
            "latency",
            "throughput",
            "fanout",
            "api",
            "failover",
            "fleet"
        ],
        "{stderr}"
    );
    assert!(
        stdout.contains("\"presence_correct\":true"),
        "fleet presence: {stdout}"
    );
}
