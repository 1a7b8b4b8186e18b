//! The command line and its dispatch: one module per resource, each with its clap
//! subcommands and a `run` that returns the process exit code.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::client::Client;
use crate::config::{self, Config};

pub mod agents;
pub mod dead_letters;
pub mod dev;
pub mod jobs;
pub mod run;
pub mod run_job;
pub mod services;
pub mod tasks;
pub mod tenants;
pub mod webhooks;

#[derive(Debug, Parser)]
#[command(
    name = "risctl",
    version,
    about = "Command line for RIS: tenants, API keys, agents, tasks, jobs, services and dead letters",
    after_help = "The API URL and key come from --api/--key, else RIS_API/RIS_KEY, else the \
                  file `risctl configure` writes (RISCTL_CONFIG overrides its path)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Base URL of the RIS API, e.g. https://ris.example.com
    #[arg(long, global = true, env = "RIS_API")]
    pub api: Option<String>,
    /// API key (a tenant key, or the platform admin key for `tenants` and `api-keys`).
    #[arg(long, global = true, env = "RIS_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// CA certificate (PEM) the API's certificate must chain to, e.g. the `ca.pem` of
    /// `risctl dev certs`. Default: the system's roots.
    #[arg(long, global = true, env = "RIS_CA")]
    pub ca: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Save --api and --key to the config file (mode 0600).
    Configure,
    /// Development helpers: `dev certs` makes a local CA and certificates.
    #[command(subcommand)]
    Dev(dev::DevCmd),
    /// Tenants (platform admin key).
    #[command(subcommand)]
    Tenants(tenants::TenantsCmd),
    /// API keys.
    #[command(subcommand, name = "api-keys")]
    ApiKeys(tenants::ApiKeysCmd),
    /// Agents of the tenant.
    #[command(subcommand)]
    Agents(agents::AgentsCmd),
    /// Run a shell command on every online agent matching a selector (a fleet job), or on
    /// one agent.
    Run(run::RunArgs),
    /// Tasks: show, list, cancel, history, attempts.
    #[command(subcommand)]
    Tasks(tasks::TasksCmd),
    /// Fleet jobs: list, show, targets, cancel.
    #[command(subcommand)]
    Jobs(jobs::JobsCmd),
    /// Dead letters: list, replay, remove.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(dead_letters::DeadLettersCmd),
    /// Outbound webhooks: list, create, remove, deliveries, redeliver.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCmd),
    /// Docker services: list, show, declare, scale, restart, remove, logs, revisions.
    #[command(subcommand)]
    Services(services::ServicesCmd),
}

/// What every command gets: the client and the output mode.
pub struct Ctx {
    pub client: Client,
    pub json: bool,
}

impl Ctx {
    /// Prints the API's JSON for scripts.
    pub fn print_json(&self, value: &Value) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let path = config::config_path(config::process_env)?;
    if let Command::Configure = cli.command {
        configure(&path, &cli.global)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Dev(cmd) = cli.command {
        return dev::run(cmd);
    }
    let target =
        Config::load(&path)?.resolve(cli.global.api.as_deref(), cli.global.key.as_deref())?;
    let ctx = Ctx {
        client: Client::new(target, cli.global.ca.as_deref())?,
        json: cli.global.json,
    };
    match cli.command {
        Command::Configure | Command::Dev(_) => Ok(ExitCode::SUCCESS),
        Command::Tenants(cmd) => tenants::run(&ctx, cmd).await,
        Command::ApiKeys(cmd) => tenants::run_api_keys(&ctx, cmd).await,
        Command::Agents(cmd) => agents::run(&ctx, cmd).await,
        Command::Run(args) => run::run(&ctx, args).await,
        Command::Tasks(cmd) => tasks::run(&ctx, cmd).await,
        Command::Jobs(cmd) => jobs::run(&ctx, cmd).await,
        Command::DeadLetters(cmd) => dead_letters::run(&ctx, cmd).await,
        Command::Webhooks(cmd) => webhooks::run(&ctx, cmd).await,
        Command::Services(cmd) => services::run(&ctx, cmd).await,
    }
}

/// Merges the given values into the file, so `configure --key K` keeps the saved URL.
fn configure(path: &std::path::Path, global: &GlobalArgs) -> anyhow::Result<()> {
    if global.api.is_none() && global.key.is_none() {
        bail!("nothing to save: pass --api URL and/or --key KEY");
    }
    let mut saved = Config::load(path)?;
    if let Some(api) = &global.api {
        saved.api = Some(config::normalize_api(api)?);
    }
    if let Some(key) = &global.key {
        saved.key = Some(key.trim().to_owned());
    }
    saved.save(path)?;
    println!("saved to {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn json_and_credentials_are_accepted_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "risctl",
            "tasks",
            "get",
            "0190f2a4-1c2d-7000-8000-000000000001",
            "--json",
            "--key",
            "k",
        ])
        .unwrap();
        assert!(cli.global.json);
        assert_eq!(cli.global.key.as_deref(), Some("k"));
    }
}
