//! `risctl webhooks ls|create|rm|deliveries|redeliver`.

use std::process::ExitCode;

use clap::Subcommand;
use ris_schemas::api::Page;
use ris_schemas::webhooks::{DeliveryView, WebhookView};
use serde_json::json;

use super::Ctx;
use crate::client::typed;
use crate::table::{self, or_dash, Table};

#[derive(Debug, Subcommand)]
pub enum WebhooksCmd {
    /// List the tenant's webhooks.
    Ls,
    /// Subscribe a URL to events (`task.completed`, `task.*`, `#`, ...).
    Create {
        url: String,
        /// Event pattern; repeat for several.
        #[arg(long = "event", required = true)]
        events: Vec<String>,
        /// Signing secret (16 to 256 characters), used for `RIS-Signature`.
        #[arg(long, env = "RIS_WEBHOOK_SECRET")]
        secret: String,
    },
    /// Remove a webhook.
    Rm { id: String },
    /// A webhook's deliveries, newest first, with their attempts.
    Deliveries {
        id: String,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=200))]
        limit: u32,
    },
    /// Deliver an event to a webhook again.
    Redeliver { id: String, delivery_id: String },
}

pub async fn run(ctx: &Ctx, cmd: WebhooksCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        WebhooksCmd::Ls => {
            let value = ctx.client.get("/v1/webhooks").await?;
            if ctx.json {
                return ctx.print_json(&value).map(|()| ExitCode::SUCCESS);
            }
            let hooks: Vec<WebhookView> = typed(value.get("items").cloned().unwrap_or(value))?;
            let mut t = Table::new(["ID", "URL", "EVENTS", "CREATED"]);
            for h in &hooks {
                let events: Vec<&str> = h.events.as_slice().iter().map(|e| e.as_str()).collect();
                t.row([
                    h.id.to_string(),
                    h.url.as_url().to_string(),
                    events.join(","),
                    table::time(h.created_at),
                ]);
            }
            print!("{}", t.render());
        }
        WebhooksCmd::Create {
            url,
            events,
            secret,
        } => {
            let body = json!({ "url": url, "events": events, "secret": secret });
            let value = ctx.client.post("/v1/webhooks", &body).await?;
            if ctx.json {
                return ctx.print_json(&value).map(|()| ExitCode::SUCCESS);
            }
            let h: WebhookView = typed(value)?;
            println!("webhook {} created for {}", h.id, h.url.as_url());
        }
        WebhooksCmd::Rm { id } => {
            ctx.client.delete(&format!("/v1/webhooks/{id}")).await?;
            if !ctx.json {
                println!("webhook {id} removed");
            }
        }
        WebhooksCmd::Deliveries { id, limit } => {
            let value = ctx
                .client
                .get(&format!("/v1/webhooks/{id}/deliveries?limit={limit}"))
                .await?;
            if ctx.json {
                return ctx.print_json(&value).map(|()| ExitCode::SUCCESS);
            }
            let page: Page<DeliveryView> = typed(value)?;
            print!("{}", deliveries_table(&page.items).render());
        }
        WebhooksCmd::Redeliver { id, delivery_id } => {
            let path = format!("/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver");
            let value = ctx.client.post_empty(&path).await?;
            if ctx.json {
                return ctx.print_json(&value).map(|()| ExitCode::SUCCESS);
            }
            println!("delivery {delivery_id} queued for redelivery");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn deliveries_table(deliveries: &[DeliveryView]) -> Table {
    let mut t = Table::new([
        "ID",
        "EVENT",
        "STATUS",
        "ATTEMPT",
        "HTTP",
        "ERROR",
        "NEXT ATTEMPT",
        "UPDATED",
    ]);
    for d in deliveries {
        t.row([
            d.id.to_string(),
            d.event_type.clone(),
            d.status.as_str().to_owned(),
            d.attempt.to_string(),
            or_dash(d.response_status),
            or_dash(d.error.clone()),
            or_dash(d.next_attempt_at.map(table::time)),
            table::time(d.updated_at),
        ]);
    }
    t
}
