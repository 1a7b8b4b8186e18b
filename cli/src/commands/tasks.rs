//! `risctl tasks get|ls|cancel|events|attempts`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use ris_schemas::api::{AttemptView, Page, TaskCancelled, TaskEventView, TaskView};
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::task::{Command, Target, TaskOutput, TaskResult, TaskSpec, TaskState};

use super::Ctx;
use crate::client::{encode, typed};
use crate::table::{self, or_dash, Table};

#[derive(Debug, Subcommand)]
pub enum TasksCmd {
    /// Show one task: state, target, result and its output.
    Get { id: TaskId },
    /// List tasks, newest first.
    Ls(ListArgs),
    /// Cancel a task (an executing one stops once its agent has killed it).
    Cancel { id: TaskId },
    /// A task's history: every state change.
    Events { id: TaskId },
    /// Every attempt's result.
    Attempts { id: TaskId },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only tasks in this state (queued, routing, executing, retrying, completed, failed,
    /// timed_out, cancelled).
    #[arg(long, value_parser = parse_state)]
    state: Option<TaskState>,
    /// Only tasks whose latest attempt ran on this agent.
    #[arg(long)]
    agent: Option<AgentId>,
    /// Page size, 1 to 200.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=200))]
    limit: u32,
    /// Continue after a previous page (its `next cursor`).
    #[arg(long)]
    cursor: Option<String>,
}

fn parse_state(s: &str) -> Result<TaskState, String> {
    TaskState::parse(s).ok_or_else(|| {
        let all: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown state `{s}`; one of {}", all.join(", "))
    })
}

pub async fn run(ctx: &Ctx, cmd: TasksCmd) -> anyhow::Result<ExitCode> {
    let value = match &cmd {
        TasksCmd::Get { id } => ctx.client.get(&format!("/v1/tasks/{id}")).await?,
        TasksCmd::Ls(args) => ctx.client.get(&list_path(args)).await?,
        TasksCmd::Cancel { id } => {
            ctx.client
                .post_empty(&format!("/v1/tasks/{id}/cancel"))
                .await?
        }
        TasksCmd::Events { id } => ctx.client.get(&format!("/v1/tasks/{id}/events")).await?,
        TasksCmd::Attempts { id } => ctx.client.get(&format!("/v1/tasks/{id}/attempts")).await?,
    };
    if ctx.json {
        ctx.print_json(&value)?;
        return Ok(ExitCode::SUCCESS);
    }
    match cmd {
        TasksCmd::Get { .. } => print!("{}", details(&typed(value)?)),
        TasksCmd::Ls(_) => {
            let page: Page<TaskView> = typed(value)?;
            print!("{}", list_table(&page.items).render());
            if let Some(cursor) = page.next_cursor {
                println!("more: --cursor {cursor}");
            }
        }
        TasksCmd::Cancel { .. } => {
            let c: TaskCancelled = typed(value)?;
            if c.cancel_requested {
                println!(
                    "task {} is executing: its agent was told to stop it",
                    c.task.id
                );
            } else {
                println!("task {} is {}", c.task.id, c.task.state);
            }
        }
        TasksCmd::Events { .. } => {
            let page: Page<TaskEventView> = typed(value)?;
            print!("{}", events_table(&page.items).render());
        }
        TasksCmd::Attempts { .. } => {
            let page: Page<AttemptView> = typed(value)?;
            print!("{}", attempts_table(&page.items).render());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list_path(args: &ListArgs) -> String {
    let mut path = format!("/v1/tasks?limit={}", args.limit);
    if let Some(state) = args.state {
        path.push_str(&format!("&state={state}"));
    }
    if let Some(agent) = args.agent {
        path.push_str(&format!("&agent_id={agent}"));
    }
    if let Some(cursor) = &args.cursor {
        path.push_str(&format!("&cursor={}", encode(cursor)));
    }
    path
}

fn list_table(tasks: &[TaskView]) -> Table {
    let mut t = Table::new([
        "ID", "STATE", "TARGET", "AGENT", "ATTEMPTS", "CREATED", "REASON", "TASK",
    ]);
    for task in tasks {
        t.row([
            task.id.to_string(),
            task.state.to_string(),
            target(&task.request.target),
            or_dash(task.agent_id),
            task.attempts.to_string(),
            table::time(task.created_at),
            or_dash(task.reason.as_deref()),
            shorten(&spec(&task.request.task), 40),
        ]);
    }
    t
}

fn events_table(events: &[TaskEventView]) -> Table {
    let mut t = Table::new(["SEQ", "AT", "STATE", "ATTEMPT", "AGENT", "REASON"]);
    for e in events {
        t.row([
            e.seq.to_string(),
            table::time(e.at),
            e.state.to_string(),
            e.attempt.to_string(),
            or_dash(e.agent_id),
            or_dash(e.reason.as_deref()),
        ]);
    }
    t
}

fn attempts_table(attempts: &[AttemptView]) -> Table {
    let mut t = Table::new([
        "ATTEMPT", "AGENT", "OUTCOME", "RESULT", "DURATION", "FINISHED", "REASON",
    ]);
    for a in attempts {
        t.row([
            a.attempt.to_string(),
            a.agent_id.to_string(),
            outcome(&a.result).to_owned(),
            result_summary(&a.result),
            format!("{} ms", a.result.duration_ms),
            table::time(a.finished_at),
            or_dash(a.result.reason.as_deref()),
        ]);
    }
    t
}

/// `risctl tasks get`: the fields, then the output streams.
fn details(task: &TaskView) -> String {
    let mut out = String::new();
    let mut field = |name: &str, value: String| out.push_str(&format!("{name:<10} {value}\n"));
    field("id", task.id.to_string());
    field("state", task.state.to_string());
    field("task", spec(&task.request.task));
    field("target", target(&task.request.target));
    field("agent", or_dash(task.agent_id));
    field("attempts", task.attempts.to_string());
    field("reason", or_dash(task.reason.as_deref()));
    field("created", table::time(task.created_at));
    field("updated", table::time(task.updated_at));
    if let Some(at) = task.cancel_requested_at {
        field("cancel", format!("requested {}", table::time(at)));
    }
    if let Some(at) = task.next_attempt_at {
        field("next try", table::time(at));
    }
    if let Some(r) = &task.result {
        field(
            "result",
            format!(
                "{}, {} in {} ms",
                outcome(r),
                result_summary(r),
                r.duration_ms
            ),
        );
        if let Some(error) = &r.error {
            field("error", error.clone());
        }
        for (name, text) in streams(r) {
            if !text.is_empty() {
                out.push_str(&format!("--- {name} ---\n{text}"));
                if !text.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
    }
    out
}

pub fn target(t: &Target) -> String {
    match t {
        Target::Agent(id) => format!("agent {id}"),
        Target::Selector(sel) => format!("selector {sel}"),
    }
}

/// A one-line description of what a task runs.
pub fn spec(s: &TaskSpec) -> String {
    match s {
        TaskSpec::Shell(shell) => match &shell.command {
            Command::Argv(argv) => format!("shell: {}", argv.join(" ")),
            Command::Script(script) => format!("shell script: {script}"),
        },
        TaskSpec::Http(http) => format!("http: {} {}", http.method.as_str(), http.url.as_url()),
        TaskSpec::Noop(_) => "noop".to_owned(),
        TaskSpec::Docker(d) => format!("docker {}", d.op()),
    }
}

pub fn outcome(r: &TaskResult) -> &'static str {
    r.outcome.state().as_str()
}

/// What the process or request ended with: `exit 0`, `signal 9`, `HTTP 200`.
pub fn result_summary(r: &TaskResult) -> String {
    match &r.output {
        TaskOutput::Shell(o) => match (o.exit_code, o.signal) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(sig)) => format!("signal {sig}"),
            (None, None) => "no exit status".to_owned(),
        },
        TaskOutput::Http(o) => format!("HTTP {}", o.status),
        TaskOutput::Noop => "noop".to_owned(),
        TaskOutput::Docker(o) => match o.exit_code {
            Some(code) => format!("exit {code}"),
            None => "docker".to_owned(),
        },
        TaskOutput::None => r.reason.clone().unwrap_or_else(|| "not run".to_owned()),
    }
}

/// The captured output streams, by name, with a note when the agent truncated one.
pub fn streams(r: &TaskResult) -> Vec<(&'static str, String)> {
    let note = |text: &str, truncated: bool| {
        if truncated {
            format!("{text}\n[truncated]\n")
        } else {
            text.to_owned()
        }
    };
    match &r.output {
        TaskOutput::Shell(o) => vec![
            ("stdout", note(&o.stdout, o.stdout_truncated)),
            ("stderr", note(&o.stderr, o.stderr_truncated)),
        ],
        TaskOutput::Http(o) => vec![("body", note(&o.body, o.body_truncated))],
        TaskOutput::Docker(o) => {
            let mut out = vec![
                ("stdout", note(&o.stdout, o.truncated)),
                ("stderr", note(&o.stderr, o.truncated)),
            ];
            if !o.data.is_null() {
                out.push(("data", format!("{:#}\n", o.data)));
            }
            out
        }
        TaskOutput::Noop | TaskOutput::None => Vec::new(),
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(json: serde_json::Value) -> TaskView {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn details_show_result_and_streams() {
        let view = task(serde_json::json!({
            "id": "0190f2a4-1c2d-7000-8000-000000000002",
            "state": "failed",
            "request": {"target": {"selector": "role=x"},
                        "task": {"kind": "shell", "argv": ["sh", "-c", "exit 3"]}},
            "attempts": 1,
            "reason": "exit_status",
            "result": {"outcome": "failed", "reason": "exit_status", "duration_ms": 7,
                       "output": {"kind": "shell", "exit_code": 3, "signal": null,
                                  "stdout": "out\n", "stderr": "", "stdout_truncated": false,
                                  "stderr_truncated": false}},
            "created_at": "2026-11-29T10:00:00Z",
            "updated_at": "2026-11-29T10:00:01Z",
            "metadata": {},
        }));
        let text = details(&view);
        assert!(text.contains("state      failed\n"), "{text}");
        assert!(text.contains("task       shell: sh -c exit 3\n"), "{text}");
        assert!(text.contains("target     selector role=x\n"), "{text}");
        assert!(
            text.contains("result     failed, exit 3 in 7 ms\n"),
            "{text}"
        );
        assert!(text.ends_with("--- stdout ---\nout\n"), "{text}");
        let list = list_table(&[view]).render();
        assert!(list.lines().nth(1).unwrap().contains("failed"), "{list}");
    }

    #[test]
    fn list_path_carries_filters() {
        let args = ListArgs {
            state: Some(TaskState::TimedOut),
            agent: None,
            limit: 5,
            cursor: Some("a b".into()),
        };
        assert_eq!(
            list_path(&args),
            "/v1/tasks?limit=5&state=timed_out&cursor=a%20b"
        );
        assert!(parse_state("nope").is_err());
    }

    #[test]
    fn shorten_counts_characters() {
        assert_eq!(shorten("abcdef", 6), "abcdef");
        assert_eq!(shorten("abcdefg", 6), "abcde…");
    }
}
