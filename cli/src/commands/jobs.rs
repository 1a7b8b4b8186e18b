//! `risctl jobs ls|get|tasks|cancel`: fleet jobs (`/v1/jobs`).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use ris_schemas::api::Page;
use ris_schemas::job::{JobCancelled, JobId, JobTarget, JobTargetView, JobView, TARGET_STATES};

use super::Ctx;
use crate::client::{encode, typed};
use crate::table::{self, or_dash, Table};

#[derive(Debug, Subcommand)]
pub enum JobsCmd {
    /// List jobs, newest first.
    Ls(PageArgs),
    /// Show one job: state, counts by target state, halt reason.
    Get { id: JobId },
    /// A job's targets in order, with their child tasks.
    Tasks(TasksArgs),
    /// Cancel a job: targets not dispatched are skipped, running children stopped.
    Cancel { id: JobId },
}

#[derive(Debug, Args)]
pub struct PageArgs {
    /// Page size, 1 to 200.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=200))]
    limit: u32,
    /// Continue after a previous page (its `next cursor`).
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(Debug, Args)]
pub struct TasksArgs {
    id: JobId,
    /// Only targets in this state (pending, waiting, a task state, skipped_offline,
    /// skipped_halted, skipped_cancelled).
    #[arg(long, value_parser = parse_target_state)]
    state: Option<String>,
    #[command(flatten)]
    page: PageArgs,
}

fn parse_target_state(s: &str) -> Result<String, String> {
    if TARGET_STATES.contains(&s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "unknown state `{s}`; one of {}",
            TARGET_STATES.join(", ")
        ))
    }
}

pub async fn run(ctx: &Ctx, cmd: JobsCmd) -> anyhow::Result<ExitCode> {
    let value = match &cmd {
        JobsCmd::Ls(page) => {
            ctx.client
                .get(&page_path("/v1/jobs?".to_owned(), page))
                .await?
        }
        JobsCmd::Get { id } => ctx.client.get(&format!("/v1/jobs/{id}")).await?,
        JobsCmd::Tasks(args) => {
            let mut path = format!("/v1/jobs/{}/tasks?", args.id);
            if let Some(state) = &args.state {
                path.push_str(&format!("state={}&", encode(state)));
            }
            ctx.client.get(&page_path(path, &args.page)).await?
        }
        JobsCmd::Cancel { id } => {
            ctx.client
                .post_empty(&format!("/v1/jobs/{id}/cancel"))
                .await?
        }
    };
    if ctx.json {
        ctx.print_json(&value)?;
        return Ok(ExitCode::SUCCESS);
    }
    match cmd {
        JobsCmd::Ls(_) => {
            let page: Page<JobView> = typed(value)?;
            print!("{}", list_table(&page.items).render());
            more(page.next_cursor);
        }
        JobsCmd::Get { .. } => print!("{}", details(&typed(value)?)),
        JobsCmd::Tasks(_) => {
            let page: Page<JobTargetView> = typed(value)?;
            print!("{}", targets_table(&page.items).render());
            more(page.next_cursor);
        }
        JobsCmd::Cancel { .. } => {
            let c: JobCancelled = typed(value)?;
            println!(
                "job {} is cancelled: {}",
                c.job.id,
                counts_line(&c.job.counts)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn page_path(mut path: String, page: &PageArgs) -> String {
    path.push_str(&format!("limit={}", page.limit));
    if let Some(cursor) = &page.cursor {
        path.push_str(&format!("&cursor={}", encode(cursor)));
    }
    path
}

fn more(cursor: Option<String>) {
    if let Some(cursor) = cursor {
        println!("more: --cursor {cursor}");
    }
}

/// `3 completed, 1 failed, 4 skipped_halted`, in the order of the target states.
pub fn counts_line(counts: &std::collections::BTreeMap<String, u32>) -> String {
    let parts: Vec<String> = TARGET_STATES
        .iter()
        .filter_map(|s| counts.get(*s).map(|n| format!("{n} {s}")))
        .collect();
    if parts.is_empty() {
        "no targets".to_owned()
    } else {
        parts.join(", ")
    }
}

pub fn target(t: &JobTarget) -> String {
    match t {
        JobTarget::Selector(s) => format!("selector {s}"),
        JobTarget::Agents(ids) => format!("{} agents", ids.len()),
    }
}

fn list_table(jobs: &[JobView]) -> Table {
    let mut t = Table::new(["ID", "STATE", "TARGET", "TARGETS", "COUNTS", "CREATED"]);
    for j in jobs {
        t.row([
            j.id.to_string(),
            j.state.to_string(),
            target(&j.request.target),
            j.target_count.to_string(),
            counts_line(&j.counts),
            table::time(j.created_at),
        ]);
    }
    t
}

fn details(j: &JobView) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<16}{v}\n"));
    line("id", j.id.to_string());
    line("state", j.state.to_string());
    line("target", target(&j.request.target));
    line("task", super::tasks::spec(&j.request.task));
    line("targets", j.target_count.to_string());
    line("counts", counts_line(&j.counts));
    line(
        "max concurrency",
        format!("{} ({})", j.max_concurrency, j.request.max_concurrency),
    );
    line(
        "max errors",
        format!(
            "{} ({}); {} errors so far",
            j.max_errors, j.request.max_errors, j.errors
        ),
    );
    if let Some(reason) = &j.reason {
        line("reason", reason.clone());
    }
    line("created", table::time(j.created_at));
    for (k, at) in [
        ("started", j.started_at),
        ("halting at", j.halting_at),
        ("halted at", j.halted_at),
        ("cancelled at", j.cancelled_at),
        ("waits until", j.wait_until),
        ("ended", j.ended_at),
    ] {
        if let Some(at) = at {
            line(k, table::time(at));
        }
    }
    out
}

fn targets_table(targets: &[JobTargetView]) -> Table {
    let mut t = Table::new([
        "SEQ", "AGENT", "STATE", "TASK", "ATTEMPTS", "REASON", "ERROR",
    ]);
    for x in targets {
        t.row([
            x.seq.to_string(),
            x.agent_name.clone(),
            x.state.clone(),
            or_dash(x.task_id),
            or_dash(x.attempts),
            or_dash(x.reason.as_deref()),
            or_dash(x.error.as_deref()),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_the_target_states() {
        let counts = [("skipped_halted", 4), ("failed", 1), ("completed", 3)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(
            counts_line(&counts),
            "3 completed, 1 failed, 4 skipped_halted"
        );
        assert_eq!(counts_line(&Default::default()), "no targets");
    }
}
