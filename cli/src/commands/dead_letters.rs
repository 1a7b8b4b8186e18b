//! `risctl dead-letters ls|replay|rm`.

use std::process::ExitCode;

use clap::Subcommand;
use ris_schemas::api::Page;
use ris_schemas::dead_letters::{DeadLetterId, DeadLetterView};

use super::Ctx;
use crate::client::{encode, typed};
use crate::table::{self, or_dash, Table};

#[derive(Debug, Subcommand)]
pub enum DeadLettersCmd {
    /// List dead letters, newest first.
    Ls {
        /// Page size, 1 to 200.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=200))]
        limit: u32,
        /// Continue after a previous page (its `next cursor`).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Republish a dead letter to its original exchange and routing key.
    Replay { id: DeadLetterId },
    /// Discard a dead letter.
    Rm { id: DeadLetterId },
}

pub async fn run(ctx: &Ctx, cmd: DeadLettersCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        DeadLettersCmd::Ls { limit, cursor } => {
            let mut path = format!("/v1/dead-letters?limit={limit}");
            if let Some(cursor) = cursor {
                path.push_str(&format!("&cursor={}", encode(&cursor)));
            }
            let value = ctx.client.get(&path).await?;
            if ctx.json {
                return ctx.print_json(&value).map(|()| ExitCode::SUCCESS);
            }
            let page: Page<DeadLetterView> = typed(value)?;
            print!("{}", list_table(&page.items).render());
            if let Some(cursor) = page.next_cursor {
                println!("more: --cursor {cursor}");
            }
        }
        DeadLettersCmd::Replay { id } => {
            let value = ctx
                .client
                .post_empty(&format!("/v1/dead-letters/{id}/replay"))
                .await?;
            if ctx.json {
                return ctx.print_json(&value).map(|()| ExitCode::SUCCESS);
            }
            let d: DeadLetterView = typed(value)?;
            println!(
                "dead letter {} replayed to exchange `{}` with routing key `{}` ({} replays)",
                d.id, d.exchange, d.routing_key, d.replay_count
            );
        }
        DeadLettersCmd::Rm { id } => {
            ctx.client.delete(&format!("/v1/dead-letters/{id}")).await?;
            if !ctx.json {
                println!("dead letter {id} removed");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list_table(letters: &[DeadLetterView]) -> Table {
    let mut t = Table::new([
        "ID",
        "DEAD AT",
        "SOURCE",
        "REASON",
        "EXCHANGE",
        "ROUTING KEY",
        "REPLAYS",
        "REPLAYED AT",
    ]);
    for d in letters {
        t.row([
            d.id.to_string(),
            table::time(d.dead_at),
            d.source_queue.clone(),
            d.reason.clone(),
            if d.exchange.is_empty() {
                "-".to_owned()
            } else {
                d.exchange.clone()
            },
            d.routing_key.clone(),
            d.replay_count.to_string(),
            or_dash(d.replayed_at.map(table::time)),
        ]);
    }
    t
}
