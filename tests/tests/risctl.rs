//! `risctl` against a real system: an operator configures it once, lists agents, runs a
//! command on every agent matching a selector and reads the results prefixed by agent
//! name, sees a failing command and a bad key reported with a non-zero exit, and gets
//! tasks as JSON for scripts.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use ris_tests::{unique, System};
use serde_json::Value;
use tokio::process::Command;

/// `risctl`, found like the kit finds the ris-* binaries: `RIS_BIN_DIR`, else the target
/// directory this test was built into (`cargo build --bins` builds it there).
fn risctl_bin() -> PathBuf {
    let dir = std::env::var_os("RIS_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap();
            // target/<profile>/deps/<test> → target/<profile>
            exe.parent().and_then(Path::parent).unwrap().to_path_buf()
        });
    let path = dir.join("risctl");
    assert!(
        path.exists(),
        "{} missing: run `cargo build --bins` first (or set RIS_BIN_DIR)",
        path.display()
    );
    path
}

/// Runs risctl with only the config file for credentials (no RIS_API/RIS_KEY from the
/// test's own environment).
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

#[tokio::test(flavor = "multi_thread")]
async fn operator_runs_commands_across_agents_with_risctl() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let web1 = tenant.agent("web-1", &["role=x", "env=prod"], 2).await;
    let web2 = tenant.agent("web-2", &["role=x"], 2).await;
    let _other = tenant.agent("db-1", &["role=db"], 1).await;
    tenant.wait_online(&web1).await;
    tenant.wait_online(&web2).await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("risctl/config.json");

    // Configure once: the key is saved privately.
    let out = risctl(
        &config,
        &["configure", "--api", &tenant.api_url, "--key", &tenant.key],
    )
    .await;
    assert!(out.status.success(), "{:?}", text(&out));
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Agents: both listed, online, with their labels.
    let out = risctl(&config, &["agents", "ls"]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    for (agent, labels) in [(&web1, "env=prod,role=x"), (&web2, "role=x")] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{} ", agent.name)))
            .unwrap_or_else(|| panic!("{} not listed:\n{stdout}", agent.name));
        assert!(line.contains(&agent.id), "{line}");
        assert!(line.contains(" online "), "{line}");
        assert!(line.contains(labels), "{line}");
    }

    // Run on every agent matching the selector: each result prefixed by its agent.
    let out = risctl(
        &config,
        &["run", "--selector", "role=x", "--", "uname", "-s"],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["web-1 | Linux", "web-2 | Linux"], "{stdout}");
    assert!(stderr.contains("2 agents: 2 completed"), "{stderr}");

    // A failing command: reported per agent, non-zero exit.
    let out = risctl(&config, &["run", "--selector", "role=x", "--", "false"]).await;
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stderr.contains("web-1 ! failed (exit 1)"), "{stderr}");
    assert!(stderr.contains("2 failed (web-1, web-2)"), "{stderr}");

    // No agent matches: a clear message, nothing submitted, non-zero exit.
    let out = risctl(&config, &["run", "--selector", "role=none", "--", "true"]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no online agent matches `role=none`"),
        "{stderr}"
    );

    // Tasks as JSON: the list and one task parse, and agree.
    let out = risctl(&config, &["tasks", "ls", "--state", "completed", "--json"]).await;
    assert!(out.status.success(), "{:?}", text(&out));
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{page:#}");
    let id = items[0]["id"].as_str().unwrap();
    let out = risctl(&config, &["tasks", "get", id, "--json"]).await;
    assert!(out.status.success(), "{:?}", text(&out));
    let task: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(task["id"], id);
    assert_eq!(task["state"], "completed");
    assert_eq!(task["result"]["output"]["stdout"], "Linux\n");
    assert_eq!(task["metadata"]["submitted_by"], "risctl");

    // One agent by id.
    let out = risctl(&config, &["run", "--agent", &web2.id, "--", "uname", "-s"]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "web-2 | Linux\n");

    // Cancelling a finished task: the API's refusal, exit 1.
    let out = risctl(&config, &["tasks", "cancel", id]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("task already completed (409, task_finished)"),
        "{stderr}"
    );

    // A bad key (a flag wins over the file): the API's message, exit 1.
    let out = risctl(&config, &["agents", "ls", "--key", "ris_wrong"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("invalid or revoked API key"), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");

    // The API unreachable: the URL that failed is named.
    let out = risctl(&config, &["agents", "ls", "--api", "http://127.0.0.1:9"]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot reach the RIS API at http://127.0.0.1:9/v1/agents"),
        "{stderr}"
    );

    // With the admin key: a tenant is created, listed, given a key, and deleted.
    let name = unique("cli-");
    let admin = ["--key", system.admin_key.as_str()];
    let run_admin = |args: Vec<&str>| {
        let config = config.clone();
        let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        all.extend(admin.iter().map(|s| (*s).to_owned()));
        async move {
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            risctl(&config, &all).await
        }
    };
    let out = run_admin(vec!["tenants", "create", &name]).await;
    assert!(out.status.success(), "{:?}", text(&out));
    let out = run_admin(vec!["tenants", "ls"]).await;
    assert!(
        text(&out).0.contains(&format!("ris.{name}")),
        "{:?}",
        text(&out)
    );
    let out = run_admin(vec![
        "api-keys", "create", "ci", "--tenant", &name, "--json",
    ])
    .await;
    assert!(out.status.success(), "{:?}", text(&out));
    let key: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(key["tenant"], name.as_str());
    let out = run_admin(vec!["tenants", "delete", &name]).await;
    assert!(out.status.success(), "{:?}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_are_managed_with_risctl() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("risctl/config.json");
    let out = risctl(
        &config,
        &["configure", "--api", &tenant.api_url, "--key", &tenant.key],
    )
    .await;
    assert!(out.status.success(), "{:?}", text(&out));

    let secret = "0123456789abcdef-secret";
    let args = [
        "webhooks",
        "create",
        "http://127.0.0.1:9/hook",
        "--event",
        "task.*",
        "--secret",
        secret,
        "--json",
    ];
    let out = risctl(&config, &args).await;
    assert!(out.status.success(), "{:?}", text(&out));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(
        !text(&out).0.contains(secret),
        "the secret is never shown back"
    );

    let out = risctl(&config, &["webhooks", "ls"]).await;
    let (stdout, _) = text(&out);
    assert!(
        out.status.success() && stdout.contains(&id) && stdout.contains("task.*"),
        "{stdout}"
    );

    // A bad pattern is refused with the API's message naming the field, exit 1.
    let out = risctl(
        &config,
        &[
            "webhooks",
            "create",
            "http://127.0.0.1:9/x",
            "--event",
            "Task!",
            "--secret",
            secret,
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(text(&out).1.contains("events"), "{:?}", text(&out));

    let out = risctl(&config, &["webhooks", "rm", &id]).await;
    assert!(out.status.success(), "{:?}", text(&out));
    let out = risctl(&config, &["webhooks", "ls", "--json"]).await;
    assert!(!text(&out).0.contains(&id), "{:?}", text(&out));
}
