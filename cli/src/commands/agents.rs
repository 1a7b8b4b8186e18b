//! `risctl agents ls`: the tenant's agents with presence and load.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use ris_schemas::api::{AgentStatus, AgentView, Page};
use ris_schemas::labels::Labels;

use super::Ctx;
use crate::client::{typed, Client};
use crate::table::{self, Table};

#[derive(Debug, Subcommand)]
pub enum AgentsCmd {
    /// List agents: status, load (running/capacity), labels, last seen, version.
    Ls,
}

pub async fn run(ctx: &Ctx, cmd: AgentsCmd) -> anyhow::Result<ExitCode> {
    let AgentsCmd::Ls = cmd;
    let value = ctx.client.get("/v1/agents").await?;
    if ctx.json {
        ctx.print_json(&value)?;
    } else {
        let page: Page<AgentView> = typed(value)?;
        print!("{}", agents_table(&page.items, Utc::now()).render());
    }
    Ok(ExitCode::SUCCESS)
}

/// Every agent of the tenant (the API returns them in one page).
pub async fn list(client: &Client) -> anyhow::Result<Vec<AgentView>> {
    let page: Page<AgentView> = typed(client.get("/v1/agents").await?)?;
    Ok(page.items)
}

pub fn agents_table(agents: &[AgentView], now: DateTime<Utc>) -> Table {
    let mut t = Table::new([
        "NAME",
        "ID",
        "STATUS",
        "LOAD",
        "LABELS",
        "LAST SEEN",
        "VERSION",
    ]);
    for a in agents {
        t.row([
            a.name.to_string(),
            a.id.to_string(),
            status(a.status).to_owned(),
            load(a),
            labels(&a.labels),
            a.last_seen
                .map_or_else(|| "never".to_owned(), |at| table::ago(at, now)),
            a.version.clone(),
        ]);
    }
    t
}

pub fn status(s: AgentStatus) -> &'static str {
    match s {
        AgentStatus::Online => "online",
        AgentStatus::Offline => "offline",
    }
}

/// `running/capacity` from the last heartbeat; `-/capacity` while offline.
fn load(a: &AgentView) -> String {
    match &a.load {
        Some(l) => format!("{}/{}", l.running, l.capacity),
        None => format!("-/{}", a.capacity),
    }
}

/// `env=prod,region=eu`, sorted by key.
pub fn labels(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_load_labels_and_last_seen() {
        let now = Utc::now();
        let agent: AgentView = serde_json::from_value(serde_json::json!({
            "id": "0190f2a4-1c2d-7000-8000-000000000001",
            "name": "web-1",
            "status": "online",
            "labels": {"role": "x", "env": "prod"},
            "capacity": 4,
            "version": "0.1.0",
            "hostname": "h",
            "addresses": [],
            "last_seen": (now - chrono::Duration::seconds(3)).to_rfc3339(),
            "load": {"running": 1, "capacity": 4, "cpu_percent": 0.0,
                     "memory_used_bytes": 0, "memory_total_bytes": 0,
                     "disk_used_bytes": 0, "disk_total_bytes": 0},
            "enrolled_at": now.to_rfc3339(),
        }))
        .unwrap();
        let mut offline = agent.clone();
        offline.status = AgentStatus::Offline;
        offline.load = None;
        offline.last_seen = None;
        let text = agents_table(&[agent, offline], now).render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME   ID"), "{text}");
        assert!(
            lines[1].contains("online   1/4   env=prod,role=x  3s ago"),
            "{text}"
        );
        assert!(lines[2].contains("offline  -/4"), "{text}");
        assert!(lines[2].contains("never"), "{text}");
    }
}
