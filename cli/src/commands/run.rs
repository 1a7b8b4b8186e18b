//! `risctl run`: one shell command on many agents, results printed as they arrive.
//!
//! With `--selector` the command runs as a fleet job (`POST /v1/jobs`, see
//! [`super::run_job`]): the API resolves the selector, the dispatchers run it
//! `--max-concurrency` at a time and halt past `--max-errors`, and each child's output
//! streams in live. With `--agent` it is one task, polled until it is final. Standard
//! output carries only the agents' standard output, each line prefixed by the agent's
//! name (`web-1 | Linux`), so it can be piped; their standard error, failures and the
//! closing summary go to standard error. The exit code is 0 only when everything
//! completed.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use ris_schemas::api::{AgentStatus, AgentView, TaskAccepted, TaskView};
use ris_schemas::ids::AgentId;
use ris_schemas::job::Rate;
use ris_schemas::labels::LabelSelector;
use ris_schemas::task::{
    OutputCap, RawShellSpec, ShellSpec, Target, TaskRequest, TaskSpec, TaskState, Timeout,
    DEFAULT_OUTPUT_CAP,
};
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{tasks, Ctx};
use crate::client::{typed, Client, ClientError};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run on every online agent whose labels match, e.g. `env=prod,region!=us`, as a
    /// fleet job.
    #[arg(long, value_parser = |s: &str| LabelSelector::parse(s),
          required_unless_present = "agent", conflicts_with = "agent")]
    selector: Option<LabelSelector>,
    /// Run on this one agent (by id).
    #[arg(long)]
    agent: Option<AgentId>,
    /// Seconds each task may run before it is killed and ends `timed_out`.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    timeout: u64,
    /// Seconds a task may wait for its agent (busy or gone) before it fails `no_agent`.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    queue_timeout: u64,
    /// A script run through `/bin/sh -c`, instead of a command after `--`.
    #[arg(long, conflicts_with = "argv")]
    script: Option<String>,
    /// With --selector: agents running the command at once, a number or a percentage of
    /// the matching agents (`10%`).
    #[arg(long, default_value = "100%", value_parser = parse_rate, requires = "selector")]
    max_concurrency: Rate,
    /// With --selector: failures tolerated (a number or a percentage); one more halts the
    /// job: nothing more starts.
    #[arg(long, default_value = "100%", value_parser = parse_rate, requires = "selector")]
    max_errors: Rate,
    /// The command and its arguments, run directly (no shell).
    #[arg(
        last = true,
        required_unless_present = "script",
        value_name = "COMMAND"
    )]
    argv: Vec<String>,
}

fn parse_rate(s: &str) -> Result<Rate, String> {
    Rate::try_from(Value::String(s.to_owned()))
}

/// Extra time, beyond the queue and run timeouts, before a task still unfinished is
/// given up on (the result has to travel back through the dispatcher).
const GRACE: Duration = Duration::from_secs(15);

/// One agent the command runs on.
#[derive(Debug, Clone)]
struct Pick {
    id: AgentId,
    name: String,
}

/// How one agent's task ended, as far as risctl could tell.
enum Ending {
    /// The task's last state (terminal, or not within the deadline) with its raw JSON.
    Task(Box<TaskView>, Value),
    /// Never submitted, or lost track of.
    Error(String),
}

pub async fn run(ctx: &Ctx, args: RunArgs) -> anyhow::Result<ExitCode> {
    let spec = shell_spec(&args)?;
    if let Some(selector) = args.selector.clone() {
        let job = super::run_job::JobArgs {
            selector,
            spec,
            timeout: args.timeout,
            queue_timeout: args.queue_timeout,
            max_concurrency: args.max_concurrency,
            max_errors: args.max_errors,
        };
        return super::run_job::run(ctx, job).await;
    }
    let picks = pick_agent(&ctx.client, &args).await?;
    let run_id = uuid::Uuid::new_v4().to_string();
    let width = picks
        .iter()
        .map(|p| p.name.chars().count())
        .max()
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(args.queue_timeout + args.timeout) + GRACE;

    let mut polls = JoinSet::new();
    let mut endings: Vec<(String, Ending)> = Vec::new();
    for pick in picks {
        let request = TaskRequest {
            target: Target::Agent(pick.id),
            task: spec.clone(),
            timeout_secs: Timeout::try_from(args.timeout)?,
            output_cap_bytes: OutputCap::try_from(u64::from(DEFAULT_OUTPUT_CAP))?,
            queue_timeout_secs: Timeout::try_from(args.queue_timeout)?,
            metadata: BTreeMap::from([
                ("submitted_by".to_owned(), "risctl".to_owned()),
                ("risctl_run".to_owned(), run_id.clone()),
            ]),
            retry: None,
        };
        match submit(&ctx.client, &request).await {
            Ok(accepted) => {
                let client = ctx.client.clone();
                polls.spawn(async move {
                    let ending = poll(&client, &accepted, deadline).await;
                    (pick.name, ending)
                });
            }
            Err(err) => {
                let ending = Ending::Error(format!("not submitted: {err:#}"));
                report(ctx.json, &pick.name, width, &ending)?;
                endings.push((pick.name, ending));
            }
        }
    }
    while let Some(joined) = polls.join_next().await {
        let (name, ending) = joined.context("a poller panicked")?;
        report(ctx.json, &name, width, &ending)?;
        endings.push((name, ending));
    }
    let (summary, all_completed) = summary(&endings);
    eprintln!("{summary}");
    Ok(if all_completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn shell_spec(args: &RunArgs) -> anyhow::Result<TaskSpec> {
    let raw = RawShellSpec {
        argv: args.script.is_none().then(|| args.argv.clone()),
        script: args.script.clone(),
        env: BTreeMap::new(),
        cwd: None,
    };
    let shell = ShellSpec::try_from(raw).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(TaskSpec::Shell(shell))
}

/// The agent named by `--agent`.
async fn pick_agent(client: &Client, args: &RunArgs) -> anyhow::Result<Vec<Pick>> {
    let Some(id) = args.agent else {
        bail!("pass --selector or --agent");
    };
    let agent: AgentView = typed(client.get(&format!("/v1/agents/{id}")).await?)?;
    if agent.status != AgentStatus::Online {
        eprintln!(
            "warning: agent {} is offline; its task waits up to {} s for it",
            agent.name, args.queue_timeout
        );
    }
    Ok(vec![Pick {
        id: agent.id,
        name: agent.name.to_string(),
    }])
}

async fn submit(client: &Client, request: &TaskRequest) -> anyhow::Result<TaskAccepted> {
    typed(client.post("/v1/tasks", request).await?)
}

/// Polls one task until it is final or the deadline passes. Connection errors are
/// retried until the deadline; an API refusal (4xx) ends the poll at once.
async fn poll(client: &Client, accepted: &TaskAccepted, deadline: Instant) -> Ending {
    let path = format!("/v1/tasks/{}", accepted.id);
    let mut delay = Duration::from_millis(200);
    let mut last: Option<(Box<TaskView>, Value)> = None;
    let mut last_error = String::new();
    loop {
        match client.get(&path).await {
            Ok(value) => match serde_json::from_value::<TaskView>(value.clone()) {
                Ok(view) if view.state.is_terminal() => return Ending::Task(Box::new(view), value),
                Ok(view) => last = Some((Box::new(view), value)),
                Err(e) => return Ending::Error(format!("task {}: {e}", accepted.id)),
            },
            Err(err @ ClientError::Api { .. })
                if err.status().is_some_and(|s| s.is_client_error()) =>
            {
                return Ending::Error(format!("task {}: {err}", accepted.id));
            }
            Err(err) => last_error = err.to_string(),
        }
        if Instant::now() + delay > deadline {
            return match last {
                Some((view, value)) => Ending::Task(view, value),
                None => Ending::Error(format!("task {}: {last_error}", accepted.id)),
            };
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 3 / 2).min(Duration::from_secs(1));
    }
}

/// Prints one agent's ending: output lines prefixed by its name, or a JSON line.
fn report(json: bool, name: &str, width: usize, ending: &Ending) -> anyhow::Result<()> {
    if json {
        let line = match ending {
            Ending::Task(_, value) => json!({ "agent": name, "task": value }),
            Ending::Error(error) => json!({ "agent": name, "error": error }),
        };
        println!("{}", serde_json::to_string(&line)?);
        return Ok(());
    }
    let prefix = format!("{name:<width$}");
    match ending {
        Ending::Task(view, _) => {
            if let Some(result) = &view.result {
                for (stream, text) in tasks::streams(result) {
                    for line in text.lines() {
                        if stream == "stderr" {
                            eprintln!("{prefix} | {line}");
                        } else {
                            println!("{prefix} | {line}");
                        }
                    }
                }
            }
            if view.state != TaskState::Completed {
                eprintln!("{prefix} ! {}", failure(view));
            }
        }
        Ending::Error(error) => eprintln!("{prefix} ! {error}"),
    }
    Ok(())
}

/// Why a task did not complete, in one line.
pub(super) fn failure(view: &TaskView) -> String {
    let mut text = if view.state.is_terminal() {
        view.state.to_string()
    } else {
        format!("still {} when risctl gave up waiting", view.state)
    };
    if let Some(result) = &view.result {
        text.push_str(&format!(" ({})", tasks::result_summary(result)));
        if let Some(error) = &result.error {
            text.push_str(&format!(": {error}"));
        }
    } else if let Some(reason) = &view.reason {
        text.push_str(&format!(" ({reason})"));
    }
    text.push_str(&format!(" — risctl tasks get {}", view.id));
    text
}

/// `3 agents: 1 completed, 2 failed (web-2, web-3)`, and whether all completed.
fn summary(endings: &[(String, Ending)]) -> (String, bool) {
    let mut by_state: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, ending) in endings {
        let state = match ending {
            Ending::Task(view, _) if view.state.is_terminal() => view.state.as_str(),
            Ending::Task(..) => "unfinished",
            Ending::Error(_) => "error",
        };
        by_state.entry(state).or_default().push(name);
    }
    let completed = by_state.remove("completed").map_or(0, |v| v.len());
    let mut parts = vec![format!("{completed} completed")];
    for (state, mut names) in by_state {
        names.sort_unstable();
        parts.push(format!("{} {state} ({})", names.len(), names.join(", ")));
    }
    let agents = if endings.len() == 1 {
        "agent"
    } else {
        "agents"
    };
    (
        format!("{} {agents}: {}", endings.len(), parts.join(", ")),
        completed == endings.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: &str) -> Ending {
        let v = json!({
            "id": uuid::Uuid::now_v7(),
            "state": state,
            "request": {"target": {"selector": "role=x"},
                        "task": {"kind": "shell", "argv": ["true"]}},
            "attempts": 1,
            "created_at": "2026-11-29T10:00:00Z",
            "updated_at": "2026-11-29T10:00:01Z",
            "metadata": {},
        });
        Ending::Task(Box::new(serde_json::from_value(v.clone()).unwrap()), v)
    }

    #[test]
    fn summary_counts_and_names_failures() {
        let endings = vec![
            ("web-1".to_owned(), view("completed")),
            ("web-3".to_owned(), view("failed")),
            ("web-2".to_owned(), view("failed")),
            ("web-4".to_owned(), view("executing")),
            ("web-5".to_owned(), Ending::Error("x".into())),
        ];
        let (text, ok) = summary(&endings);
        assert_eq!(
            text,
            "5 agents: 1 completed, 1 error (web-5), 2 failed (web-2, web-3), 1 unfinished (web-4)"
        );
        assert!(!ok);
        let (text, ok) = summary(&endings[..1]);
        assert_eq!(text, "1 agent: 1 completed");
        assert!(ok);
    }

    #[test]
    fn argv_or_script() {
        use clap::Parser as _;
        let cli = crate::Cli::try_parse_from([
            "risctl",
            "run",
            "--selector",
            "env=prod",
            "--",
            "uname",
            "-a",
        ])
        .unwrap();
        let crate::commands::Command::Run(args) = cli.command else {
            panic!("not run");
        };
        let spec = serde_json::to_value(shell_spec(&args).unwrap()).unwrap();
        assert_eq!(spec["argv"], json!(["uname", "-a"]));
        let cli = crate::Cli::try_parse_from([
            "risctl",
            "run",
            "--agent",
            "0190f2a4-1c2d-7000-8000-000000000001",
            "--script",
            "echo hi",
        ])
        .unwrap();
        let crate::commands::Command::Run(args) = cli.command else {
            panic!("not run");
        };
        let spec = serde_json::to_value(shell_spec(&args).unwrap()).unwrap();
        assert_eq!(spec["script"], "echo hi");
        assert!(crate::Cli::try_parse_from(["risctl", "run", "--", "true"]).is_err());
        assert!(crate::Cli::try_parse_from(["risctl", "run", "--selector", "a=b"]).is_err());
    }
}
