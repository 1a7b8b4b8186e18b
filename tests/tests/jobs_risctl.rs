//! `risctl` on top of fleet jobs: `run --selector` creates a job and streams every
//! child's output prefixed by its agent's name, exits non-zero when a child failed or
//! the job halted; `jobs ls|get|tasks|cancel` show and control jobs.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::{Path, PathBuf};
use std::process::Output;

use ris_tests::{AgentOptions, System};
use serde_json::Value;
use tokio::process::Command;

/// `risctl` from `RIS_BIN_DIR`, else the target directory this test was built into.
fn risctl_bin() -> PathBuf {
    let dir = std::env::var_os("RIS_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap();
            exe.parent().and_then(Path::parent).unwrap().to_path_buf()
        });
    dir.join("risctl")
}

async fn risctl(config: &Path, args: &[&str]) -> Output {
    Command::new(risctl_bin())
        .args(args)
        .env("RISCTL_CONFIG", config)
        .env_remove("RIS_API")
        .env_remove("RIS_KEY")
        .output()
        .await
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The job id from risctl's first line on standard error (`job <id>: ...`).
fn job_id(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("job ")?.split(':').next())
        .unwrap_or_else(|| panic!("no job line in:\n{stderr}"))
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn risctl_runs_jobs_with_live_output_and_manages_them() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let mut agents = Vec::new();
    for i in 0..3 {
        let name = format!("web-{i}");
        let opts = AgentOptions {
            labels: vec!["role=web".into()],
            capacity: 1,
            env: vec![
                ("RIS_TEST_AGENT".into(), name.clone()),
                (
                    "RIS_TEST_FAIL".into(),
                    if i == 1 { "1" } else { "0" }.into(),
                ),
            ],
            ..AgentOptions::default()
        };
        agents.push(tenant.agent_with(&name, opts).await);
    }
    for a in &agents {
        tenant.wait_online(a).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("risctl.json");
    let out = risctl(
        &config,
        &["configure", "--api", &tenant.api_url, "--key", &tenant.key],
    )
    .await;
    assert!(out.status.success(), "{:?}", text(&out));

    // Every agent's output, line by line, prefixed by its name.
    let out = risctl(
        &config,
        &[
            "run",
            "--selector",
            "role=web",
            "--max-concurrency",
            "2",
            "--script",
            "echo \"hello from $RIS_TEST_AGENT\"; sleep 0.3; echo bye",
        ],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "web-0 | bye",
            "web-0 | hello from web-0",
            "web-1 | bye",
            "web-1 | hello from web-1",
            "web-2 | bye",
            "web-2 | hello from web-2",
        ],
        "stderr:\n{stderr}"
    );
    assert!(stderr.contains("3 agents: 3 completed"), "{stderr}");
    let first = job_id(&stderr);

    // One at a time, no error tolerated: web-1 fails, the job halts, web-2 never runs.
    let out = risctl(
        &config,
        &[
            "run",
            "--selector",
            "role=web",
            "--max-concurrency",
            "1",
            "--max-errors",
            "0",
            "--script",
            "echo \"ran on $RIS_TEST_AGENT\"; [ \"$RIS_TEST_FAIL\" != 1 ]",
        ],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stderr.contains("web-1 ! failed (exit 1)"), "{stderr}");
    assert!(stderr.contains("halted"), "{stderr}");
    assert!(stderr.contains("1 skipped_halted (web-2)"), "{stderr}");
    assert!(!stdout.contains("web-2"), "{stdout}");
    let halted = job_id(&stderr);

    // jobs ls / get / tasks / cancel.
    let out = risctl(&config, &["jobs", "ls"]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains(&first) && stdout.contains(&halted),
        "{stdout}"
    );
    let out = risctl(&config, &["jobs", "get", &halted, "--json"]).await;
    assert!(out.status.success(), "{:?}", text(&out));
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["state"], "halted", "{job:#}");
    assert_eq!(job["counts"]["skipped_halted"], 1, "{job:#}");
    let out = risctl(&config, &["jobs", "tasks", &halted, "--state", "failed"]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("web-1") && l.contains("exit_status")),
        "{stdout}"
    );
    let out = risctl(&config, &["jobs", "cancel", &halted]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("409"), "{stderr}");

    // Nothing matches: said so, non-zero exit.
    let out = risctl(&config, &["run", "--selector", "role=none", "--", "true"]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no online agent matches `role=none`"),
        "{stderr}"
    );
}
