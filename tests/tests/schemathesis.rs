//! The OpenAPI document at `/v1/openapi.json` describes the live API: every documented
//! operation is routed, and schemathesis, generating requests from the document with a
//! tenant's key, finds no 5xx and no response that breaks the documented schemas.
//!
//! schemathesis runs from a virtualenv made once under the system temp directory
//! (`python3 -m venv`, `pip install schemathesis==<SCHEMATHESIS>`), reused afterwards;
//! `RIS_SCHEMATHESIS` names an `st` executable to use instead; `RIS_SCHEMATHESIS_ARGS`
//! adds flags to the run.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::PathBuf;
use std::process::Command;

use ris_tests::System;
use serde_json::Value;

/// Installs with Python 3.11; its CLI flags are the 3.x ones used below.
const SCHEMATHESIS: &str = "3.39.16";
/// hypothesis-jsonschema 0.23 (what schemathesis 3.39 requires) breaks on newer
/// hypothesis releases (`'many' object has no attribute 'more'`).
const HYPOTHESIS: &str = "6.127.0";

/// Operations schemathesis leaves alone, and why.
const EXCLUDED: &[(&str, &str)] = &[
    // A WebSocket upgrade: schemathesis speaks plain HTTP only.
    ("agentHeartbeat", "WebSocket"),
    // Server-Sent Events never end: a request would hang until the timeout.
    ("streamEvents", "SSE stream"),
    // Admin-only, and the run uses a tenant key; it must not delete anything anyway.
    ("deleteTenant", "admin-only and destructive"),
];

/// An `st` executable: `RIS_SCHEMATHESIS`, or one in a cached virtualenv.
fn schemathesis() -> PathBuf {
    if let Some(st) = std::env::var_os("RIS_SCHEMATHESIS") {
        return st.into();
    }
    let venv = std::env::temp_dir().join(format!("ris-schemathesis-{SCHEMATHESIS}-{HYPOTHESIS}"));
    let st = venv.join("bin").join("st");
    // Written last, so a half-made venv (an interrupted install) is made again.
    let done = venv.join("ris-installed");
    if done.exists() {
        return st;
    }
    drop(std::fs::remove_dir_all(&venv));
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
    run(Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("schemathesis=={SCHEMATHESIS}"))
        .arg(format!("hypothesis=={HYPOTHESIS}")));
    assert!(st.exists(), "no {} after installing", st.display());
    std::fs::write(&done, SCHEMATHESIS).unwrap();
    st
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The documented path with every `{param}` filled in.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                "00000000-0000-0000-0000-000000000000"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_operation_is_routed() {
    let system = System::start().await;
    let http = reqwest::Client::new();
    let doc: Value = http
        .get(format!("{}/v1/openapi.json", system.api_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() > 20, "too few paths: {}", paths.len());
    let mut unrouted = Vec::new();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let url = format!("{}{}", system.api_url, concrete(path));
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            // Unauthenticated: refused before anything happens (no SSE stream opens).
            let response = http.request(method.clone(), &url).send().await.unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            // A handler's 404 says what was not found ({code, message}); the router's
            // has no body. 405: the path is routed but not that method.
            let handler_404 = serde_json::from_str::<Value>(&body)
                .is_ok_and(|v| v.get("code").is_some_and(Value::is_string));
            if status == 405 || (status == 404 && !handler_404) {
                unrouted.push(format!("{method} {path} → {status}"));
            }
        }
    }
    assert!(
        unrouted.is_empty(),
        "documented but not routed: {unrouted:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_errors_or_schema_mismatches() {
    let st = tokio::task::spawn_blocking(schemathesis).await.unwrap();
    let system = System::start().await;
    let tenant = system.tenant().await;
    let schema_url = format!("{}/v1/openapi.json", system.api_url);
    let mut cmd = tokio::process::Command::new(&st);
    cmd.arg("run")
        .arg(&schema_url)
        .args(["--experimental", "openapi-3.1"])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--hypothesis-max-examples", "20"])
        .args(["--hypothesis-derandomize"])
        .args(["--request-timeout", "10000"])
        .args(["--workers", "4"])
        .arg("--show-trace")
        .args(["-H", &format!("Authorization: Bearer {}", tenant.key)])
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .current_dir(system.workdir.path());
    for (operation_id, _why) in EXCLUDED {
        cmd.args(["--exclude-operation-id", operation_id]);
    }
    // Extra flags for a local investigation, e.g. `--experimental-no-failfast`.
    if let Ok(extra) = std::env::var("RIS_SCHEMATHESIS_ARGS") {
        cmd.args(extra.split_whitespace());
    }
    let out = cmd.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "schemathesis failed ({}):\n{stdout}\n{stderr}\n--- API log ---\n{}",
        out.status,
        tail(&system.log("api.log"), 60)
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
