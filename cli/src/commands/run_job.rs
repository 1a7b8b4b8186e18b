//! `risctl run --selector`: a fleet job, its children's output streamed as it arrives.
//!
//! 1. Subscribe to the tenant's `task.queued` and `job.*` events (before creating the
//!    job, so no child is missed).
//! 2. `POST /v1/jobs`: the selector is resolved by the API; offline agents are skipped.
//! 3. Each child announced by a `task.queued` event carrying the job's id gets a follower
//!    on `GET /v1/tasks/{id}/output?follow=true`, which prints its live output line by
//!    line, prefixed by the agent's name, and its ending.
//! 4. On `job.ended` (or when a poll of the job finds it ended — events are best effort)
//!    every target is read back: a child no follower saw gets its stored output, and the
//!    summary counts targets by their final state.
//!
//! Standard output carries only the agents' standard output (`web-1 | Linux`); their
//! standard error, failures and the summary go to standard error. The exit code is 0
//! only when the job completed and every target that ran completed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use ris_schemas::api::{Page, TaskView};
use ris_schemas::event::{Event, EventData};
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::job::{JobId, JobState, JobTargetView, JobView, Rate};
use ris_schemas::labels::LabelSelector;
use ris_schemas::task::TaskSpec;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::{agents, Ctx};
use crate::client::{typed, Client};
use crate::sse::LineBuffer;

/// What `run --selector` asks for.
pub struct JobArgs {
    pub selector: LabelSelector,
    pub spec: TaskSpec,
    pub timeout: u64,
    pub queue_timeout: u64,
    pub max_concurrency: Rate,
    pub max_errors: Rate,
}

/// How often the job is polled in case its events do not arrive.
const POLL: Duration = Duration::from_secs(2);

pub async fn run(ctx: &Ctx, args: JobArgs) -> anyhow::Result<ExitCode> {
    let names: HashMap<AgentId, String> = agents::list(&ctx.client)
        .await?
        .into_iter()
        .map(|a| (a.id, a.name.to_string()))
        .collect();
    let width = names.values().map(|n| n.chars().count()).max().unwrap_or(0);
    let mut events = ctx
        .client
        .stream("/v1/events/stream?types=task.queued,job.*")
        .await
        .context("cannot follow the job's events")?;
    let body = json!({
        "target": { "selector": args.selector.to_string(), "mode": "all" },
        "task": args.spec,
        "timeout_secs": args.timeout,
        "queue_timeout_secs": args.queue_timeout,
        "max_concurrency": args.max_concurrency,
        "max_errors": args.max_errors,
        "metadata": { "submitted_by": "risctl" },
    });
    let job: JobView = typed(ctx.client.post("/v1/jobs", &body).await?)?;
    let ran = job.target_count - job.counts.get("skipped_offline").copied().unwrap_or(0);
    if ran == 0 {
        let why = if job.target_count == 0 {
            "the selector matched no agent".to_owned()
        } else {
            format!("all {} matching agents are offline", job.target_count)
        };
        bail!(
            "no online agent matches `{}`: {why}; nothing was run (job {})",
            args.selector,
            job.id
        );
    }
    eprintln!(
        "job {}: {} agents, at most {} at a time",
        job.id, ran, job.max_concurrency
    );
    let show = Show {
        json: ctx.json,
        width,
        names,
    };
    let mut followers: JoinSet<(TaskId, Option<String>)> = JoinSet::new();
    let mut followed: HashSet<TaskId> = HashSet::new();
    let mut poll = tokio::time::interval(POLL);
    poll.tick().await;
    loop {
        tokio::select! {
            next = events.next() => match next {
                Ok(Some(sse)) => {
                    let Ok(event) = serde_json::from_str::<Event>(&sse.data) else { continue };
                    match event.data {
                        EventData::Task(t)
                            if t.job_id == Some(job.id) && followed.insert(t.task_id) =>
                        {
                            follow(&mut followers, ctx, &show, t.task_id, t.agent_id);
                        }
                        EventData::Job(j) if j.job_id == job.id && j.ended_at.is_some() => break,
                        _ => {}
                    }
                }
                // The stream is gone: the polls carry on alone.
                Ok(None) | Err(_) => events = idle_stream(ctx).await,
            },
            Some(done) = followers.join_next() => drop(done),
            _ = poll.tick() => {
                let now: JobView = typed(ctx.client.get(&format!("/v1/jobs/{}", job.id)).await?)?;
                if now.ended_at.is_some() {
                    break;
                }
            }
        }
    }
    // Every target, read back: children no follower saw (events are best effort).
    let targets = all_targets(&ctx.client, job.id).await?;
    for t in &targets {
        if let Some(task) = t.task_id {
            if followed.insert(task) {
                follow(&mut followers, ctx, &show, task, Some(t.agent_id));
            }
        }
    }
    while followers.join_next().await.is_some() {}
    let job: JobView = typed(ctx.client.get(&format!("/v1/jobs/{}", job.id)).await?)?;
    if ctx.json {
        println!("{}", serde_json::to_string(&json!({ "job": job }))?);
    }
    let (summary, ok) = summary(&job, &targets);
    eprintln!("{summary}");
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A stream that never yields, for when the event stream broke (the polls carry on).
async fn idle_stream(ctx: &Ctx) -> crate::sse::SseReader {
    loop {
        tokio::time::sleep(POLL).await;
        if let Ok(stream) = ctx.client.stream("/v1/events/stream?types=job.ended").await {
            return stream;
        }
    }
}

/// How to print.
#[derive(Clone)]
struct Show {
    json: bool,
    width: usize,
    names: HashMap<AgentId, String>,
}

impl Show {
    fn name(&self, agent: Option<AgentId>) -> String {
        let name = agent
            .and_then(|a| self.names.get(&a).cloned())
            .or_else(|| agent.map(|a| a.to_string()))
            .unwrap_or_else(|| "?".to_owned());
        format!("{name:<width$}", width = self.width)
    }
}

/// Follows one child's output until it ends; then reports how it ended.
fn follow(
    followers: &mut JoinSet<(TaskId, Option<String>)>,
    ctx: &Ctx,
    show: &Show,
    task: TaskId,
    agent: Option<AgentId>,
) {
    let client = ctx.client.clone();
    let show = show.clone();
    followers.spawn(async move {
        // A child's target is its agent; a `task.queued` event does not name it yet.
        let agent = match agent {
            Some(agent) => Some(agent),
            None => target_agent(&client, task).await,
        };
        let (state, live) = stream_output(&client, &show, task, agent).await;
        if let Err(err) = report_end(&client, &show, task, &live).await {
            eprintln!("{} ! task {task}: {err:#}", show.name(agent));
        }
        (task, state)
    });
}

/// The agent a child task targets.
async fn target_agent(client: &Client, task: TaskId) -> Option<AgentId> {
    let view: TaskView = typed(client.get(&format!("/v1/tasks/{task}")).await.ok()?).ok()?;
    match view.request.target {
        ris_schemas::task::Target::Agent(agent) => Some(agent),
        ris_schemas::task::Target::Selector(_) => view.agent_id,
    }
}

/// Prints one line of a child's output, prefixed by its agent's name.
fn print_line(show: &Show, prefix: &str, stream: &str, line: &str) {
    if show.json {
        return;
    }
    if stream == "stderr" {
        eprintln!("{prefix} | {line}");
    } else {
        println!("{prefix} | {line}");
    }
}

/// What a follower printed, by stream.
type Printed = BTreeMap<String, String>;

/// Prints the child's output as it arrives; returns its final state and what it printed.
async fn stream_output(
    client: &Client,
    show: &Show,
    task: TaskId,
    agent: Option<AgentId>,
) -> (Option<String>, Printed) {
    let prefix = show.name(agent);
    let mut printed = Printed::new();
    let mut stream = match client
        .stream(&format!("/v1/tasks/{task}/output?follow=true"))
        .await
    {
        Ok(s) => s,
        Err(err) => {
            eprintln!("{prefix} ! output of task {task} unavailable: {err}");
            return (None, printed);
        }
    };
    let mut buffers: BTreeMap<String, LineBuffer> = BTreeMap::new();
    let print = |stream: &str, line: &str| print_line(show, &prefix, stream, line);
    let mut state = None;
    while let Ok(Some(event)) = stream.next().await {
        if event.event == "end" {
            state = serde_json::from_str::<Value>(&event.data)
                .ok()
                .and_then(|v| v["state"].as_str().map(str::to_owned));
            break;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else {
            continue;
        };
        let text = chunk["data"].as_str().unwrap_or_default();
        printed
            .entry(event.event.clone())
            .or_default()
            .push_str(text);
        let buffer = buffers.entry(event.event.clone()).or_default();
        for line in buffer.push(text) {
            print(&event.event, &line);
        }
    }
    for (stream, mut buffer) in buffers {
        if let Some(rest) = buffer.rest() {
            print(&stream, &rest);
        }
    }
    (state, printed)
}

/// Prints what the stored result has beyond what was streamed live (live output is
/// best effort), then why the child did not complete — or, with `--json`, the task as a
/// JSON line.
async fn report_end(
    client: &Client,
    show: &Show,
    task: TaskId,
    printed: &Printed,
) -> anyhow::Result<()> {
    let value = client.get(&format!("/v1/tasks/{task}")).await?;
    let view: TaskView = typed(value.clone())?;
    let agent = match &view.request.target {
        ris_schemas::task::Target::Agent(agent) => Some(*agent),
        ris_schemas::task::Target::Selector(_) => view.agent_id,
    };
    let name = show.name(agent);
    if let Some(result) = view.result.as_ref().filter(|_| !show.json) {
        for (stream, stored) in super::tasks::streams(result) {
            let live = printed.get(stream).map_or("", String::as_str);
            for line in unprinted(&stored, live) {
                print_line(show, &name, stream, line);
            }
        }
    }
    if show.json {
        let line = json!({ "agent": name.trim_end(), "task": value });
        println!("{}", serde_json::to_string(&line)?);
    } else if view.state.is_terminal() && view.state != ris_schemas::task::TaskState::Completed {
        eprintln!("{name} ! {}", super::run::failure(&view));
    }
    Ok(())
}

/// The lines of a child's stored output that its live stream did not print: all after
/// what it printed, when that is a prefix (the stream ended early); otherwise — chunks
/// sent before the stream opened, or dropped under load — every stored line not printed
/// live, in order.
fn unprinted<'a>(stored: &'a str, live: &str) -> Vec<&'a str> {
    if let Some(rest) = stored.strip_prefix(live) {
        return rest.lines().collect();
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for line in live.lines() {
        *seen.entry(line).or_default() += 1;
    }
    stored
        .lines()
        .filter(|line| match seen.get_mut(line) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .collect()
}

async fn all_targets(client: &Client, job: JobId) -> anyhow::Result<Vec<JobTargetView>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/jobs/{job}/tasks?limit=200");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page: Page<JobTargetView> = typed(client.get(&path).await?)?;
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// `job 01.. halted: 2 of 8 targets failed ...` then `8 agents: 2 completed, 2 failed
/// (web-1, web-3), 4 skipped_halted (...)`; and whether the run succeeded.
fn summary(job: &JobView, targets: &[JobTargetView]) -> (String, bool) {
    const NAMES: usize = 10;
    let mut by_state: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for t in targets {
        by_state
            .entry(t.state.as_str())
            .or_default()
            .push(t.agent_name.as_str());
    }
    let ok = job.state == JobState::Completed
        && by_state
            .keys()
            .all(|s| matches!(*s, "completed" | "skipped_offline"));
    let completed = by_state.remove("completed").map_or(0, |v| v.len());
    let mut parts = vec![format!("{completed} completed")];
    for (state, mut names) in by_state {
        names.sort_unstable();
        let more = names.len().saturating_sub(NAMES);
        let mut shown = names[..names.len().min(NAMES)].join(", ");
        if more > 0 {
            shown.push_str(&format!(", and {more} more"));
        }
        parts.push(format!("{} {state} ({shown})", names.len()));
    }
    let mut text = format!("job {} {}", job.id, job.state);
    if let Some(reason) = &job.reason {
        text.push_str(&format!(": {reason}"));
    }
    let agents = if targets.len() == 1 {
        "agent"
    } else {
        "agents"
    };
    text.push_str(&format!(
        "\n{} {agents}: {}",
        targets.len(),
        parts.join(", ")
    ));
    (text, ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str, state: &str) -> JobTargetView {
        serde_json::from_value(json!({
            "seq": 0, "agent_id": uuid::Uuid::now_v7(), "agent_name": name, "state": state,
            "updated_at": "2026-11-29T10:00:00Z",
        }))
        .unwrap()
    }

    fn job(state: &str) -> JobView {
        serde_json::from_value(json!({
            "id": uuid::Uuid::now_v7(), "state": state,
            "request": { "target": { "selector": "a=b", "mode": "all" },
                         "task": { "kind": "noop" } },
            "max_concurrency": 1, "max_errors": 0, "target_count": 3, "counts": {},
            "errors": 0, "created_at": "2026-11-29T10:00:00Z",
            "updated_at": "2026-11-29T10:00:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn stored_output_fills_in_what_the_live_stream_missed() {
        let stored = "hello\nmid\nbye\n";
        // The stream ended early: what follows.
        assert_eq!(unprinted(stored, "hello\n"), ["mid", "bye"]);
        assert!(unprinted(stored, stored).is_empty());
        // The stream opened late, or dropped a chunk: every line not printed.
        assert_eq!(unprinted(stored, "bye\n"), ["hello", "mid"]);
        assert_eq!(unprinted(stored, "hello\nbye\n"), ["mid"]);
        // A repeated line counts as printed as many times as it was.
        assert_eq!(unprinted("a\na\nb\n", "a\nb\n"), ["a"]);
    }

    #[test]
    fn summary_counts_names_and_decides_the_exit_code() {
        let targets = [
            target("web-1", "completed"),
            target("web-3", "failed"),
            target("web-2", "failed"),
            target("web-4", "skipped_offline"),
        ];
        let (text, ok) = summary(&job("completed"), &targets);
        assert!(
            text.ends_with(
                "4 agents: 1 completed, 2 failed (web-2, web-3), 1 skipped_offline (web-4)"
            ),
            "{text}"
        );
        assert!(!ok);
        let (_, ok) = summary(&job("completed"), &[targets[0].clone(), targets[3].clone()]);
        assert!(ok);
        let (_, ok) = summary(&job("halted"), &[targets[0].clone()]);
        assert!(!ok);
    }
}
