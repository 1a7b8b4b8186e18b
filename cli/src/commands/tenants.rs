//! `risctl tenants ls|create|delete` (platform admin key) and `risctl api-keys create`.

use std::process::ExitCode;

use clap::Subcommand;
use ris_schemas::api::{ApiKeyCreated, CreateApiKey, CreateTenant, TenantView};
use ris_schemas::ids::TenantName;

use super::Ctx;
use crate::client::{encode, typed};
use crate::table::{self, Table};

#[derive(Debug, Subcommand)]
pub enum TenantsCmd {
    /// List tenants.
    Ls,
    /// Create a tenant (its vhost and topology too); a no-op if it exists.
    Create {
        #[arg(value_parser = |s: &str| TenantName::parse(s))]
        name: TenantName,
    },
    /// Delete a tenant with its vhost, agents' broker users, rows and presence.
    Delete {
        #[arg(value_parser = |s: &str| TenantName::parse(s))]
        name: TenantName,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeysCmd {
    /// Create an API key; the key is shown this once.
    Create {
        /// What the key is for, e.g. `ci`.
        name: String,
        /// Tenant of the key (required with the platform admin key).
        #[arg(long, value_parser = |s: &str| TenantName::parse(s))]
        tenant: Option<TenantName>,
    },
}

pub async fn run(ctx: &Ctx, cmd: TenantsCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TenantsCmd::Ls => {
            let value = ctx.client.get("/v1/tenants").await?;
            if ctx.json {
                ctx.print_json(&value)?;
            } else {
                let tenants: Vec<TenantView> = typed(value)?;
                let mut t = Table::new(["NAME", "VHOST", "CREATED"]);
                for tenant in tenants {
                    t.row([
                        tenant.name.to_string(),
                        tenant.vhost,
                        table::time(tenant.created_at),
                    ]);
                }
                print!("{}", t.render());
            }
        }
        TenantsCmd::Create { name } => {
            let value = ctx
                .client
                .post("/v1/tenants", &CreateTenant { name })
                .await?;
            if ctx.json {
                ctx.print_json(&value)?;
            } else {
                let tenant: TenantView = typed(value)?;
                println!("tenant {} ready (vhost {})", tenant.name, tenant.vhost);
            }
        }
        TenantsCmd::Delete { name } => {
            let path = format!("/v1/tenants/{}", encode(name.as_str()));
            ctx.client.delete(&path).await?;
            if !ctx.json {
                println!("tenant {name} deleted");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_api_keys(ctx: &Ctx, cmd: ApiKeysCmd) -> anyhow::Result<ExitCode> {
    let ApiKeysCmd::Create { name, tenant } = cmd;
    let value = ctx
        .client
        .post(
            "/v1/api-keys",
            &CreateApiKey {
                name,
                tenant,
                role: None,
                expires_at: None,
            },
        )
        .await?;
    if ctx.json {
        ctx.print_json(&value)?;
    } else {
        let created: ApiKeyCreated = typed(value)?;
        println!(
            "API key `{}` ({}) for tenant {} — shown once, store it now:",
            created.name, created.id, created.tenant
        );
        println!("{}", created.key);
    }
    Ok(ExitCode::SUCCESS)
}
