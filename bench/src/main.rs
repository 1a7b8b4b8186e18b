//! `ris-bench`: measures a whole RIS system — real `ris-api` and `ris-dispatcher`
//! processes, agents as real `ris-agent` processes or as a swarm of real agents in this
//! process ([`swarm`]) — against the local RabbitMQ, PostgreSQL and Redis, and prints
//! one JSON line per scenario (stdout) plus a human summary (stderr).
//!
//! ```text
//! cargo build --release --bins
//! target/release/ris-bench all            # every scenario, default (short) sizes
//! target/release/ris-bench all --quick    # small counts, seconds each
//! target/release/ris-bench throughput --agents 100 --tasks 5000 --submitters 64
//! target/release/ris-bench job-create --agents 10000
//! ```
//!
//! Each scenario starts its own system (own database, Redis prefix and tenant, removed
//! at the end), is bounded in time, and stops by itself. See `docs/benchmarks.md`.

mod events;
mod http_load;
mod metrics;
mod procstat;
mod scenarios;
mod stats;
mod swarm;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ris_tests::{System, SystemOptions};

/// mimalloc, in every RIS binary: under load glibc's malloc took a fifth of `ris-api`'s
/// CPU (fastbin consolidation on every larger allocation); see docs/benchmarks.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Benchmarks of a whole RIS system")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Sequential shell tasks running `true` on one agent process: p50/p95/p99.
    Latency(LatencyArgs),
    /// noop tasks from many submitters to a swarm: sustained tasks/s and p99.
    Throughput(ThroughputArgs),
    /// One fleet job (a noop on each of N swarm agents): time until every result is persisted.
    Fanout(FanoutArgs),
    /// N swarm agents heartbeating every 10 s: API/dispatcher CPU and RSS, heartbeat p99.
    Fleet(FleetArgs),
    /// GET /v1/tasks/{id} and GET /v1/agents under concurrent load: req/s and p99.
    Api(ApiArgs),
    /// An agent SIGKILLed with queued work: time until that work runs elsewhere.
    Failover(FailoverArgs),
    /// API time to create a fleet job over N (offline, inserted) agents.
    JobCreate {
        #[arg(long, default_value_t = 10_000)]
        agents: usize,
        #[arg(long, default_value_t = 5)]
        repeat: usize,
    },
    /// Every scenario in turn with its defaults (or `--quick`: small counts).
    All {
        #[arg(long)]
        quick: bool,
    },
}

#[derive(Args, Clone)]
struct LatencyArgs {
    #[arg(long, default_value_t = 300)]
    tasks: usize,
}

#[derive(Args, Clone)]
struct ThroughputArgs {
    #[arg(long, default_value_t = 100)]
    agents: usize,
    #[arg(long, default_value_t = 16)]
    capacity: u32,
    #[arg(long, default_value_t = 5000)]
    tasks: usize,
    #[arg(long, default_value_t = 64)]
    submitters: usize,
    /// `noop` or `shell` (runs `true`).
    #[arg(long, default_value = "noop")]
    kind: String,
    /// Swarm agents per shared AMQP connection.
    #[arg(long, default_value_t = 100)]
    per_connection: usize,
    /// Submit at this many tasks per second (open loop) instead of as fast as the
    /// submitters can: the latency figures are then those *at* that rate, not those of
    /// a backlog.
    #[arg(long)]
    rate: Option<f64>,
}

#[derive(Args, Clone)]
struct FanoutArgs {
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    #[arg(long, default_value_t = 250)]
    per_connection: usize,
}

#[derive(Args, Clone)]
struct FleetArgs {
    #[arg(long, default_value_t = 2000)]
    agents: usize,
    /// Measured steady state after every agent is online.
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// At most 409 (RabbitMQ's 2,047 channels per connection, 5 per agent).
    #[arg(long, default_value_t = 250)]
    per_connection: usize,
    #[arg(long, default_value_t = 64)]
    enroll_concurrency: usize,
}

#[derive(Args, Clone)]
struct ApiArgs {
    #[arg(long, default_value_t = 100)]
    agents: usize,
    #[arg(long, default_value_t = 1000)]
    tasks: usize,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    secs: u64,
}

#[derive(Args, Clone)]
struct FailoverArgs {
    #[arg(long, default_value_t = 300)]
    tasks: usize,
    /// Swarm agents that take over.
    #[arg(long, default_value_t = 4)]
    others: usize,
}

/// Heartbeat interval of the fleet scenario (the issue's figure) and its presence TTL.
const FLEET_HEARTBEAT_SECS: u32 = 10;
const FLEET_PRESENCE_TTL_SECS: u32 = 25;
/// The API's default heartbeat interval and presence TTL (failover is measured in them).
const DEFAULT_HEARTBEAT_SECS: u32 = 5;
const DEFAULT_PRESENCE_TTL_SECS: u32 = 10;
/// Heartbeat interval elsewhere, and its presence TTL (as the e2e tests run).
const HEARTBEAT_SECS: u32 = 1;
const PRESENCE_TTL_SECS: u32 = 4;

async fn system(heartbeat_secs: u32, presence_ttl_secs: u32) -> System {
    System::start_with(SystemOptions {
        heartbeat_interval_secs: heartbeat_secs,
        presence_ttl_secs,
        // The swarm enrolls thousands of agents from one address into one tenant: above
        // the per-address limit on credential-bearing requests (600/min) and the
        // default agent quota (1,000); the `api` scenario sends one key's requests at
        // thousands a second: above the default rate limits (30,000/min per key,
        // 60,000/min per tenant). They stay as they are everywhere else; requests are
        // still charged to the limits in Redis.
        env: vec![
            (
                "RIS_UNAUTHENTICATED_PER_MINUTE_PER_IP".into(),
                "1000000".into(),
            ),
            ("RIS_LIMITS__MAX_AGENTS".into(), "20000".into()),
            (
                "RIS_LIMITS__REQUESTS_PER_MINUTE_PER_KEY".into(),
                "100000000".into(),
            ),
            ("RIS_LIMITS__REQUESTS_PER_MINUTE".into(), "100000000".into()),
        ],
        ..Default::default()
    })
    .await
}

async fn run(scenario: Scenario) -> anyhow::Result<()> {
    let (result, human) = match scenario {
        Scenario::Latency(a) => {
            let sys = system(HEARTBEAT_SECS, PRESENCE_TTL_SECS).await;
            scenarios::latency::run(&sys, a.tasks).await?
        }
        Scenario::Throughput(a) => {
            let sys = system(5, 20).await;
            let opts = scenarios::throughput::Opts {
                agents: a.agents,
                capacity: a.capacity,
                tasks: a.tasks,
                submitters: a.submitters,
                kind: a.kind,
                per_connection: a.per_connection,
                rate: a.rate,
            };
            scenarios::throughput::run(&sys, opts).await?
        }
        Scenario::Fanout(a) => {
            let sys = system(5, 20).await;
            scenarios::fanout::run(&sys, a.agents, a.per_connection).await?
        }
        Scenario::Fleet(a) => {
            let sys = system(FLEET_HEARTBEAT_SECS, FLEET_PRESENCE_TTL_SECS).await;
            let secs = Duration::from_secs(a.secs);
            scenarios::fleet::run(&sys, a.agents, secs, a.per_connection, a.enroll_concurrency)
                .await?
        }
        Scenario::Api(a) => {
            let sys = system(5, 20).await;
            let secs = Duration::from_secs(a.secs);
            scenarios::api::run(&sys, a.agents, a.tasks, a.concurrency, secs).await?
        }
        Scenario::Failover(a) => {
            // The API's and dispatcher's defaults: what an operator gets.
            let sys = system(DEFAULT_HEARTBEAT_SECS, DEFAULT_PRESENCE_TTL_SECS).await;
            scenarios::failover::run(&sys, DEFAULT_HEARTBEAT_SECS, a.tasks, a.others).await?
        }
        Scenario::JobCreate { agents, repeat } => {
            let sys = system(5, 20).await;
            scenarios::job_create::run(&sys, agents, repeat).await?
        }
        Scenario::All { quick } => return all(quick).await,
    };
    stats::emit(&result, &human);
    Ok(())
}

/// Every scenario in turn; `quick` uses small counts (what the test suite runs).
async fn all(quick: bool) -> anyhow::Result<()> {
    let list = if quick {
        vec![
            Scenario::Latency(LatencyArgs { tasks: 20 }),
            Scenario::Throughput(ThroughputArgs {
                agents: 5,
                capacity: 4,
                tasks: 100,
                submitters: 8,
                kind: "noop".into(),
                per_connection: 2,
                rate: None,
            }),
            Scenario::Fanout(FanoutArgs {
                agents: 10,
                per_connection: 4,
            }),
            Scenario::Api(ApiArgs {
                agents: 2,
                tasks: 20,
                concurrency: 4,
                secs: 1,
            }),
            Scenario::Failover(FailoverArgs {
                tasks: 30,
                others: 2,
            }),
            Scenario::Fleet(FleetArgs {
                agents: 10,
                secs: 2,
                per_connection: 5,
                enroll_concurrency: 4,
            }),
        ]
    } else {
        vec![
            Scenario::Latency(LatencyArgs { tasks: 300 }),
            Scenario::Throughput(ThroughputArgs {
                agents: 100,
                capacity: 16,
                tasks: 5000,
                submitters: 64,
                kind: "noop".into(),
                per_connection: 100,
                rate: None,
            }),
            // The same load offered at a fixed rate below the sustained one: latency
            // at that rate rather than that of a backlog.
            Scenario::Throughput(ThroughputArgs {
                agents: 100,
                capacity: 16,
                tasks: 2000,
                submitters: 64,
                kind: "noop".into(),
                per_connection: 100,
                rate: Some(60.0),
            }),
            Scenario::Fanout(FanoutArgs {
                agents: 1000,
                per_connection: 250,
            }),
            Scenario::Api(ApiArgs {
                agents: 100,
                tasks: 1000,
                concurrency: 64,
                secs: 10,
            }),
            Scenario::Failover(FailoverArgs {
                tasks: 300,
                others: 4,
            }),
            // Last: tearing down 10,000 agents' queues keeps the broker busy for a while
            // after the scenario, which the next one would measure.
            Scenario::Fleet(FleetArgs {
                agents: 10_000,
                secs: 60,
                per_connection: 250,
                enroll_concurrency: 64,
            }),
        ]
    };
    for scenario in list {
        Box::pin(run(scenario)).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The ris-* binaries sit next to this one.
    let exe = std::env::current_exe().context("locating ris-bench")?;
    let dir: PathBuf = exe.parent().context("binary directory")?.to_path_buf();
    if std::env::var_os("RIS_BIN_DIR").is_none() {
        std::env::set_var("RIS_BIN_DIR", &dir);
    }
    // The system under test logs as in production (`info`), not at the tests' debug.
    if std::env::var_os("RIS_E2E_RUST_LOG").is_none() {
        std::env::set_var("RIS_E2E_RUST_LOG", "info");
    }
    run(cli.scenario).await
}
