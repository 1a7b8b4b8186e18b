//! `ris-bench all --quick` runs every scenario with small counts against a real system,
//! so the benchmark cannot rot. It checks that each scenario ran and reported, never how
//! fast (no wall-clock asserts: figures belong in docs/benchmarks.md).
//!
//! Needs the services (`scripts/services.sh`) and the binaries (`cargo build --bins`).

use std::process::Command;

#[test]
fn every_scenario_runs_in_quick_mode() {
    let out = Command::new(env!("CARGO_BIN_EXE_ris-bench"))
        .args(["all", "--quick"])
        .output()
        .expect("run ris-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ris-bench all --quick failed:\n{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
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
            "fleet",
            "api",
            "failover"
        ],
        "{stderr}"
    );
    assert!(
        stdout.contains("\"presence_correct\":true"),
        "fleet presence: {stdout}"
    );
}
