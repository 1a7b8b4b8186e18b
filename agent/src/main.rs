//! `ris-agent`: enroll this machine, or run the agent.
//!
//! Parses the command line, sets up logging, and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ris_agent::config::{
    AgentConfig, DEFAULT_DOCKER_SOCKET, DEFAULT_STATE_DIR, DOCKER_SOCKET_ENV, STATE_DIR_ENV,
};
use ris_agent::enroll::{self, EnrollOptions};
use ris_agent::Agent;
use ris_schemas::ids::AgentName;
use ris_schemas::labels::Labels;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// mimalloc, in every RIS binary: under load glibc's malloc took a fifth of `ris-api`'s
/// CPU (fastbin consolidation on every larger allocation); see docs/benchmarks.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ris-agent",
    version,
    about = "The RIS agent: runs tasks on this machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Exchange a one-time enrollment token for this agent's identity.
    Enroll(EnrollArgs),
    /// Run the agent with the saved identity.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    state: StateDir,
    /// Unix socket of the Docker engine for services and docker tasks. When nothing
    /// answers there, the agent advertises no `docker` capability.
    #[arg(long, env = DOCKER_SOCKET_ENV, default_value = DEFAULT_DOCKER_SOCKET)]
    docker_socket: PathBuf,
}

#[derive(Args)]
struct StateDir {
    /// Holds the identity, the task journal and the result outbox.
    #[arg(long, env = STATE_DIR_ENV, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

#[derive(Args)]
struct EnrollArgs {
    /// Base URL of the RIS API, e.g. https://ris.example.com
    #[arg(long)]
    api: String,
    /// One-time enrollment token created by an admin.
    #[arg(long, env = "RIS_ENROLL_TOKEN", hide_env_values = true)]
    token: String,
    /// Agent name, unique in the tenant.
    #[arg(long, value_parser = |s: &str| AgentName::parse(s))]
    name: AgentName,
    /// A label `key=value`; repeat for more.
    #[arg(long = "label", value_parser = |s: &str| Labels::parse_pair(s))]
    labels: Vec<(String, String)>,
    /// Tasks run at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    capacity: u32,
    /// Replace an existing identity.
    #[arg(long)]
    force: bool,
    /// CA certificate (PEM) the API and the broker must chain to (e.g. the `ca.pem` of
    /// `risctl dev certs`); saved in the state directory. Default: the system's roots.
    #[arg(long, env = "RIS_AGENT_CA")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM) presented to the API when it requires mutual TLS; saved
    /// in the state directory. Needs --ca and --client-key.
    #[arg(long, env = "RIS_AGENT_CLIENT_CERT", requires_all = ["ca", "client_key"])]
    client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "RIS_AGENT_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<PathBuf>,
    #[command(flatten)]
    state: StateDir,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ris-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Enroll(args) => enroll_cmd(args).await,
            Command::Run(args) => run_cmd(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ris-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn enroll_cmd(args: EnrollArgs) -> anyhow::Result<()> {
    let opts = EnrollOptions {
        api_url: args.api,
        token: args.token,
        name: args.name,
        labels: args.labels.into_iter().collect(),
        capacity: args.capacity,
        state_dir: args.state.state_dir,
        force: args.force,
        ca: args.ca,
        client_cert: args.client_cert.zip(args.client_key),
    };
    let (identity, path) = enroll::enroll(opts).await?;
    println!(
        "enrolled as {} ({}) in tenant {}; identity saved to {}",
        identity.enrollment.name,
        identity.enrollment.agent_id,
        identity.enrollment.tenant,
        path.display()
    );
    Ok(())
}

async fn run_cmd(args: RunArgs) -> anyhow::Result<()> {
    let mut config = AgentConfig::new(args.state.state_dir);
    config.docker.socket = args.docker_socket;
    let agent = Agent::load(config)?;
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone())?;
    agent.run(shutdown).await
}

/// SIGTERM and SIGINT both ask for a graceful stop. Later signals are ignored: the
/// drain is bounded by its grace periods.
fn spawn_signal_handler(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutdown requested");
        shutdown.cancel();
    });
    Ok(())
}
