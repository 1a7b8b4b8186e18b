//! `ris-api`: parse configuration, set up telemetry, serve until SIGTERM or SIGINT.

use anyhow::Context;
use ris_api::{app::App, config::Config};

/// mimalloc, in every RIS binary: under load glibc's malloc took a fifth of `ris-api`'s
/// CPU (fastbin consolidation on every larger allocation); see docs/benchmarks.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ris_runtime::init_tracing();
    let config = ris_runtime::load_config::<Config>().context("reading configuration")?;
    let app = App::build(config).await.context("starting the API")?;
    app.run(ris_runtime::shutdown_token()).await
}
