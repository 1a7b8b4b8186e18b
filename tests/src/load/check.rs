//! Reading back every task of a run once the fault is over.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;

use super::driver::LoadRun;
use super::report::{Report, Seen};
use crate::TenantClient;

/// Requests in flight while reading back.
const READ_CONCURRENCY: usize = 16;
/// When tasks are lost, how much longer the check follows them to tell "recovered late"
/// from "stuck" in the report (only failing runs pay for it). With the recovery window
/// before it, this outlasts the dispatchers' 60 s stale-routing threshold (counted from
/// the placement).
const DIAGNOSE_FOR: Duration = Duration::from_secs(45);

/// Waits up to `recovery` for every task of `run` to be terminal, then reads each back
/// and tallies the [`Report`] for `scenario`. Tasks still not terminal are lost; the
/// check then follows them a while longer and notes whether and when they ended.
pub async fn check(
    tenant: &TenantClient,
    run: &LoadRun,
    scenario: &str,
    recovery: Duration,
) -> Report {
    let api = Reader::new(tenant);
    let settled_after = wait_settled(&api, run, recovery).await;
    let mut report = read_back(&api, run, scenario, settled_after).await;
    if !report.unfinished.is_empty() {
        follow_unfinished(&api, &mut report).await;
    }
    report
}

async fn read_back(
    api: &Reader,
    run: &LoadRun,
    scenario: &str,
    settled_after: Option<Duration>,
) -> Report {
    let listed = api.list_run(&run.run).await.unwrap_or_default();
    let mut by_seq: HashMap<u64, Vec<String>> = HashMap::new();
    for task in &listed {
        if let (Some(seq), Some(id)) = (seq_of(task), task["id"].as_str()) {
            by_seq.entry(seq).or_default().push(id.to_owned());
        }
    }
    let runs = count_runs(run);
    let seen: Vec<Seen> = futures::stream::iter(&run.submissions)
        .map(|sub| {
            let tasks = by_seq.get(&sub.seq).cloned().unwrap_or_default();
            let runs = runs.get(&sub.seq).copied().unwrap_or(0);
            async move {
                // Acknowledged: read back the id the 202 gave. Otherwise, whatever the
                // listing found (a submission stored although its 202 never arrived).
                let id = sub.task_id.clone().or_else(|| tasks.first().cloned());
                let read = match &id {
                    Some(id) => api.read(id).await,
                    None => Readback::default(),
                };
                Seen {
                    submission: sub.clone(),
                    task: read.task,
                    events: read.events,
                    attempts: read.attempts,
                    read_error: read.error,
                    tasks_for_submission: tasks.len(),
                    runs,
                }
            }
        })
        .buffer_unordered(READ_CONCURRENCY)
        .collect()
        .await;
    Report::tally(scenario, run, seen, settled_after)
}

/// Polls the tasks left unfinished for up to [`DIAGNOSE_FOR`] and notes what became of
/// each in the report's `late` lines.
async fn follow_unfinished(api: &Reader, report: &mut Report) {
    let start = Instant::now();
    let mut pending = std::mem::take(&mut report.unfinished);
    while !pending.is_empty() && start.elapsed() < DIAGNOSE_FOR {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut still = Vec::new();
        for (seq, id) in pending {
            match api.get(&format!("/v1/tasks/{id}")).await {
                Ok((StatusCode::OK, task)) if is_terminal(&task) => report.late.push(format!(
                    "seq {seq} task {id}: ended {}({}) {:.0} s after the recovery window",
                    task["state"].as_str().unwrap_or("?"),
                    task["reason"].as_str().unwrap_or("-"),
                    start.elapsed().as_secs_f64()
                )),
                _ => still.push((seq, id)),
            }
        }
        pending = still;
    }
    for (seq, id) in &pending {
        report.late.push(format!(
            "seq {seq} task {id}: still not terminal {} s after the recovery window",
            DIAGNOSE_FOR.as_secs()
        ));
    }
    report.unfinished = pending;
}

fn seq_of(task: &Value) -> Option<u64> {
    task["metadata"]["load_seq"].as_str()?.parse().ok()
}

/// How many times each sequence number's script ran.
fn count_runs(run: &LoadRun) -> HashMap<u64, u32> {
    let text = std::fs::read_to_string(&run.runs_file).unwrap_or_default();
    let mut runs = HashMap::new();
    for seq in text.lines().filter_map(|l| l.trim().parse::<u64>().ok()) {
        *runs.entry(seq).or_insert(0) += 1;
    }
    runs
}

/// Polls until every task of the run is terminal and every acknowledged one is listed;
/// returns how long that took, or `None` if `recovery` passed first.
async fn wait_settled(api: &Reader, run: &LoadRun, recovery: Duration) -> Option<Duration> {
    let start = Instant::now();
    let acknowledged = run
        .submissions
        .iter()
        .filter(|s| s.task_id.is_some())
        .count();
    loop {
        if let Ok(tasks) = api.list_run(&run.run).await {
            let pending = tasks.iter().filter(|t| !is_terminal(t)).count();
            if pending == 0 && tasks.len() >= acknowledged {
                return Some(start.elapsed());
            }
        }
        if start.elapsed() > recovery {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(super) fn is_terminal(task: &Value) -> bool {
    matches!(
        task["state"].as_str(),
        Some("completed" | "failed" | "timed_out" | "cancelled")
    )
}

/// What [`Reader::read`] got for one task.
#[derive(Default)]
struct Readback {
    task: Option<Value>,
    events: Vec<Value>,
    attempts: Vec<Value>,
    error: Option<String>,
}

/// Reads through the API, retrying transport errors and 5xx for a few seconds (the
/// API may still be recovering from the fault).
struct Reader {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Reader {
    fn new(tenant: &TenantClient) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: tenant.api_url.clone(),
            key: tenant.key.clone(),
        }
    }

    async fn get(&self, path: &str) -> Result<(StatusCode, Value), String> {
        let mut last = String::new();
        for attempt in 0..20u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let resp = self
                .http
                .get(format!("{}{path}", self.base))
                .bearer_auth(&self.key)
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            match resp {
                Ok(r) if !r.status().is_server_error() => {
                    let status = r.status();
                    let body = r.json::<Value>().await.unwrap_or(Value::Null);
                    return Ok((status, body));
                }
                Ok(r) => last = format!("GET {path}: {}", r.status()),
                Err(e) => last = format!("GET {path}: {e}"),
            }
        }
        Err(last)
    }

    /// Every task of the tenant whose `load_run` metadata is `run`.
    async fn list_run(&self, run: &str) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/tasks?limit=200&cursor={c}"),
                None => "/v1/tasks?limit=200".to_owned(),
            };
            let (status, page) = self.get(&path).await?;
            if status != StatusCode::OK {
                return Err(format!("GET {path}: {status} {page}"));
            }
            let items = page["items"].as_array().cloned().unwrap_or_default();
            out.extend(
                items
                    .into_iter()
                    .filter(|t| t["metadata"]["load_run"].as_str() == Some(run)),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(out),
            }
        }
    }

    /// The task, its events and its attempts' results, or why they could not be read.
    async fn read(&self, id: &str) -> Readback {
        let mut out = Readback::default();
        match self.get(&format!("/v1/tasks/{id}")).await {
            Ok((StatusCode::OK, task)) => out.task = Some(task),
            Ok((status, body)) => out.error = Some(format!("{status} {body}")),
            Err(e) => out.error = Some(e),
        }
        if out.task.is_none() {
            return out;
        }
        match self.items(&format!("/v1/tasks/{id}/events")).await {
            Ok(items) => out.events = items,
            Err(e) => out.error = Some(format!("events: {e}")),
        }
        match self.items(&format!("/v1/tasks/{id}/attempts")).await {
            Ok(items) => out.attempts = items,
            Err(e) => out.error = Some(format!("attempts: {e}")),
        }
        out
    }

    /// `items` of a one-page list.
    async fn items(&self, path: &str) -> Result<Vec<Value>, String> {
        match self.get(path).await? {
            (StatusCode::OK, page) => Ok(page["items"].as_array().cloned().unwrap_or_default()),
            (status, body) => Err(format!("{status} {body}")),
        }
    }
}
