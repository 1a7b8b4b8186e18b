//! The shell executor against real processes.
#![allow(clippy::unwrap_used)] // Tests may unwrap (clippy.toml only covers #[test] fns).

mod common;

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use ris_agent::executor::{reason, shell, KillGrace, Limits};
use ris_schemas::task::{Outcome, ShellOutput, ShellSpec, TaskOutput, TaskResult};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn spec(value: serde_json::Value) -> ShellSpec {
    serde_json::from_value(value).unwrap()
}

fn limits(timeout_secs: u64, cap: usize) -> Limits {
    Limits {
        timeout: Duration::from_secs(timeout_secs),
        output_cap: cap,
    }
}

async fn run(spec: &ShellSpec, limits: Limits) -> TaskResult {
    shell::run(
        spec,
        limits,
        KillGrace::default(),
        &CancellationToken::new(),
    )
    .await
}

fn output(result: &TaskResult) -> &ShellOutput {
    match &result.output {
        TaskOutput::Shell(out) => out,
        other => panic!("expected shell output, got {other:?}"),
    }
}

/// The process group that `echo $$` printed first is gone entirely.
fn assert_group_gone(result: &TaskResult) {
    let pgid: i32 = output(result)
        .stdout
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        kill(Pid::from_raw(-pgid), None),
        Err(Errno::ESRCH),
        "group {pgid} still alive"
    );
}

#[tokio::test]
async fn exit_zero_is_completed() {
    let result = run(&spec(json!({"argv": ["true"]})), limits(10, 1024)).await;
    assert_eq!(result.outcome, Outcome::Completed, "{result:?}");
    assert_eq!(result.reason, None);
    assert_eq!(output(&result).exit_code, Some(0));
}

#[tokio::test]
async fn nonzero_exit_is_failed_with_its_code() {
    let result = run(&spec(json!({"script": "exit 3"})), limits(10, 1024)).await;
    assert_eq!(result.outcome, Outcome::Failed);
    assert_eq!(result.reason.as_deref(), Some(reason::EXIT_STATUS));
    assert_eq!(output(&result).exit_code, Some(3));
    assert_eq!(output(&result).signal, None);
}

#[tokio::test]
async fn stdout_and_stderr_are_captured_separately() {
    let result = run(
        &spec(json!({"script": "echo out; echo err >&2"})),
        limits(10, 1024),
    )
    .await;
    let out = output(&result);
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
    assert!(!out.stdout_truncated && !out.stderr_truncated);
}

#[tokio::test]
async fn output_cap_keeps_exactly_cap_bytes_and_drains_the_rest() {
    // 1 MB through a 1000-byte cap: the child must not block on a full pipe.
    let script = "head -c 1000000 /dev/zero | tr '\\0' a; echo done >&2";
    let result = run(&spec(json!({"script": script})), limits(20, 1000)).await;
    assert_eq!(result.outcome, Outcome::Completed, "{result:?}");
    let out = output(&result);
    assert_eq!(out.stdout.len(), 1000);
    assert!(out.stdout.bytes().all(|b| b == b'a'));
    assert!(out.stdout_truncated);
    assert_eq!(out.stderr, "done\n");
    assert!(!out.stderr_truncated);
}

#[tokio::test]
async fn env_and_cwd_are_applied() {
    let dir = common::TempDir::new();
    let spec = spec(json!({
        "argv": ["sh", "-c", "echo \"$RIS_TEST_VAR\"; pwd -P; test -n \"$PATH\" && echo inherited"],
        "env": {"RIS_TEST_VAR": "hello world"},
        "cwd": dir.path().to_str().unwrap(),
    }));
    let result = run(&spec, limits(10, 4096)).await;
    let expected = format!(
        "hello world\n{}\ninherited\n",
        dir.path().canonicalize().unwrap().display()
    );
    assert_eq!(output(&result).stdout, expected);
}

#[tokio::test]
async fn missing_program_is_spawn_failed() {
    let result = run(
        &spec(json!({"argv": ["/nonexistent/ris-test-program"]})),
        limits(10, 1024),
    )
    .await;
    assert_eq!(result.outcome, Outcome::Failed);
    assert_eq!(result.reason.as_deref(), Some(reason::SPAWN_FAILED));
    assert!(
        result.error.as_deref().unwrap().contains("No such file"),
        "{result:?}"
    );
    assert_eq!(result.output, TaskOutput::None);
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let started = Instant::now();
    let spec = spec(json!({"script": "echo $$; sleep 30 & sleep 30"}));
    let result = run(&spec, limits(1, 1024)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(result.outcome, Outcome::TimedOut);
    assert_eq!(result.reason.as_deref(), Some(reason::TIMEOUT));
    assert!(output(&result).signal.is_some(), "{result:?}");
    assert_group_gone(&result);
}

#[tokio::test]
async fn a_group_ignoring_sigterm_gets_sigkill_after_the_grace() {
    let grace = KillGrace {
        on_timeout: Duration::from_millis(500),
        on_cancel: Duration::from_millis(500),
    };
    let spec = spec(json!({"script": "trap '' TERM; echo $$; sleep 30 & sleep 30"}));
    let started = Instant::now();
    let result = shell::run(&spec, limits(1, 1024), grace, &CancellationToken::new()).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(result.outcome, Outcome::TimedOut);
    assert_eq!(output(&result).signal, Some(9));
    assert_group_gone(&result);
}

#[tokio::test]
async fn cancellation_stops_the_task() {
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let spec = spec(json!({"script": "echo $$; sleep 30 & sleep 30"}));
    let result = shell::run(&spec, limits(60, 1024), KillGrace::default(), &cancel).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(result.outcome, Outcome::Cancelled);
    assert_eq!(result.reason.as_deref(), Some(reason::CANCELLED));
    assert_group_gone(&result);
}
