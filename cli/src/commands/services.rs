//! `risctl services ls|get|put|scale|restart|rm|logs|revisions`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use reqwest::Method;
use ris_schemas::api::Page;
use ris_schemas::service::{ServiceRevision, ServiceTarget, ServiceView};
use serde_json::{json, Value};

use super::Ctx;
use crate::client::{encode, typed};
use crate::table::{self, or_dash, Table};

#[derive(Debug, Subcommand)]
pub enum ServicesCmd {
    /// List the tenant's services.
    Ls {
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=200))]
        limit: u32,
    },
    /// Show a service: desired against actual, per agent.
    Get { name: String },
    /// Declare a service from a JSON file `{"target": {...}, "spec": {...}}` (`-`: stdin).
    Put {
        name: String,
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Set the replicas per agent.
    Scale { name: String, replicas: u32 },
    /// Replace every replica, one at a time.
    Restart { name: String },
    /// Delete a service: its agents remove every container it owns.
    Rm { name: String },
    /// Container logs, fetched from the agents.
    Logs {
        name: String,
        /// Only this agent.
        #[arg(long = "agent")]
        agent_id: Option<String>,
        /// Last lines per container (default 100).
        #[arg(long)]
        tail: Option<u32>,
        /// Only lines since this time (unix seconds or RFC 3339).
        #[arg(long)]
        since: Option<String>,
    },
    /// A service's revisions, newest first.
    Revisions {
        name: String,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=200))]
        limit: u32,
    },
}

pub async fn run(ctx: &Ctx, cmd: ServicesCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ServicesCmd::Ls { limit } => {
            let value = ctx
                .client
                .get(&format!("/v1/services?limit={limit}"))
                .await?;
            if ctx.json {
                return ctx.print_json(&value).map(|()| ExitCode::SUCCESS);
            }
            let page: Page<ServiceView> = typed(value)?;
            print!("{}", list_table(&page.items).render());
        }
        ServicesCmd::Get { name } => {
            let value = ctx.client.get(&path(&name, "")).await?;
            if ctx.json {
                return ctx.print_json(&value).map(|()| ExitCode::SUCCESS);
            }
            print_service(&typed(value)?);
        }
        ServicesCmd::Put { name, file } => {
            let body = read_body(&file)?;
            let value = ctx
                .client
                .send(Method::PUT, &path(&name, ""), Some(&body))
                .await?;
            changed(ctx, &value, "declared")?;
        }
        ServicesCmd::Scale { name, replicas } => {
            let body = json!({ "replicas": replicas });
            let value = ctx.client.post(&path(&name, "/scale"), &body).await?;
            changed(
                ctx,
                &value,
                &format!("scaled to {replicas} replicas per agent"),
            )?;
        }
        ServicesCmd::Restart { name } => {
            let value = ctx.client.post_empty(&path(&name, "/restart")).await?;
            changed(ctx, &value, "restarting")?;
        }
        ServicesCmd::Rm { name } => {
            let value = ctx.client.delete(&path(&name, "")).await?;
            changed(ctx, &value, "being removed")?;
        }
        ServicesCmd::Logs {
            name,
            agent_id,
            tail,
            since,
        } => {
            let mut query = Vec::new();
            if let Some(a) = agent_id {
                query.push(format!("agent_id={}", encode(&a)));
            }
            if let Some(t) = tail {
                query.push(format!("tail={t}"));
            }
            if let Some(s) = since {
                query.push(format!("since={}", encode(&s)));
            }
            let q = if query.is_empty() {
                String::new()
            } else {
                format!("?{}", query.join("&"))
            };
            let value = ctx
                .client
                .get(&format!("{}{q}", path(&name, "/logs")))
                .await?;
            if ctx.json {
                return ctx.print_json(&value).map(|()| ExitCode::SUCCESS);
            }
            return Ok(print_logs(&value));
        }
        ServicesCmd::Revisions { name, limit } => {
            let value = ctx
                .client
                .get(&format!("{}?limit={limit}", path(&name, "/revisions")))
                .await?;
            if ctx.json {
                return ctx.print_json(&value).map(|()| ExitCode::SUCCESS);
            }
            let page: Page<ServiceRevision> = typed(value)?;
            let mut t = Table::new([
                "REVISION", "CHANGE", "IMAGE", "REPLICAS", "TARGET", "CREATED",
            ]);
            for r in &page.items {
                let spec = r.spec.get();
                t.row([
                    r.revision.to_string(),
                    r.change.clone(),
                    spec.image.clone(),
                    spec.replicas.get().to_string(),
                    target(&r.target),
                    table::time(r.created_at),
                ]);
            }
            print!("{}", t.render());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn path(name: &str, rest: &str) -> String {
    format!("/v1/services/{}{rest}", encode(name))
}

fn read_body(file: &std::path::Path) -> anyhow::Result<Value> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the service from stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
}

/// After a change: the JSON, or one line.
fn changed(ctx: &Ctx, value: &Value, what: &str) -> anyhow::Result<()> {
    if ctx.json {
        return ctx.print_json(value);
    }
    let s: ServiceView = typed(value.clone())?;
    println!("service {} {what} (revision {})", s.name, s.revision);
    Ok(())
}

fn target(t: &ServiceTarget) -> String {
    match t {
        ServiceTarget::Agent(id) => format!("agent {id}"),
        ServiceTarget::Selector(s) => s.to_string(),
    }
}

fn counts(s: &ServiceView) -> String {
    let parts: Vec<String> = s.agents.iter().map(|(k, n)| format!("{n} {k}")).collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

fn list_table(services: &[ServiceView]) -> Table {
    let mut t = Table::new([
        "NAME", "REVISION", "IMAGE", "REPLICAS", "TARGET", "AGENTS", "UPDATED",
    ]);
    for s in services {
        let spec = s.spec.get();
        t.row([
            s.name.to_string(),
            s.revision.to_string(),
            spec.image.clone(),
            spec.replicas.get().to_string(),
            target(&s.target),
            counts(s),
            table::time(s.updated_at),
        ]);
    }
    t
}

fn print_service(s: &ServiceView) {
    let spec = s.spec.get();
    println!("name:      {}", s.name);
    println!("revision:  {}", s.revision);
    println!("image:     {}", spec.image);
    println!("replicas:  {} per agent", spec.replicas.get());
    println!("target:    {}", target(&s.target));
    println!("agents:    {}", counts(s));
    println!("updated:   {}", table::time(s.updated_at));
    let instances = s.instances.as_deref().unwrap_or_default();
    if instances.is_empty() {
        return;
    }
    println!();
    let mut t = Table::new([
        "AGENT", "STATE", "REVISION", "DESIRED", "REPLICAS", "RESTARTS", "REASON", "REPORTED",
    ]);
    for i in instances {
        let running = i.containers.iter().filter(|c| c.state == "running").count();
        t.row([
            i.agent_name.clone(),
            i.state.as_str().to_owned(),
            or_dash(i.revision),
            i.desired_revision.to_string(),
            format!("{running}/{}", i.desired_replicas),
            i.restarts.to_string(),
            or_dash(i.reason.clone().or(i.error.clone())),
            or_dash(i.reported_at.map(table::time)),
        ]);
    }
    print!("{}", t.render());
}

/// Prints each agent's lines (prefixed by the agent when there are several); agents
/// that gave none are reported on stderr and make the exit code 1.
fn print_logs(value: &Value) -> ExitCode {
    let items = value["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let several = items.len() > 1;
    let mut failed = false;
    for item in items {
        let agent = item["agent_name"].as_str().unwrap_or("?");
        if item["outcome"] != "completed" {
            failed = true;
            let why = item["reason"]
                .as_str()
                .or(item["outcome"].as_str())
                .unwrap_or("?");
            eprintln!("{agent}: no logs ({why})");
            continue;
        }
        for line in item["lines"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let line = line.as_str().unwrap_or_default();
            if several {
                println!("{agent} | {line}");
            } else {
                println!("{line}");
            }
        }
        if item["truncated"] == true {
            eprintln!("{agent}: output truncated");
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
