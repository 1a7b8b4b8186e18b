//! Wiring the dispatcher: [`App::build`] connects and binds; [`App::run`] runs the tenant
//! supervisor, the placement sweep and the metrics server until shutdown, then waits
//! for in-flight deliveries to finish (bounded by [`SHUTDOWN_GRACE`]).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use ris_presence::Presence;
use ris_store::PgStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::context::{Context, Inner};
use crate::{gauges, http, reaper, services, sweeper, tenants};

pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub struct App {
    config: Config,
    store: PgStore,
    presence: Presence,
    metrics_listener: TcpListener,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let _ = ris_runtime::prometheus();
        config
            .broker
            .check_transport()
            .context("checking the broker configuration")?;
        let store = PgStore::connect_lazy(&config.database_url, config.database_max_connections)
            .context("configuring the PostgreSQL pool")?;
        ris_runtime::at_startup("postgres", || store.migrate())
            .await
            .context("running database migrations")?;
        let presence_ttl = Duration::from_secs(u64::from(config.presence_ttl_secs));
        let presence = ris_runtime::at_startup("redis", || {
            Presence::connect(&config.redis_url, &config.redis_prefix, presence_ttl)
        })
        .await
        .context("connecting to Redis")?;
        let metrics_listener = TcpListener::bind(config.metrics_listen)
            .await
            .with_context(|| format!("binding {}", config.metrics_listen))?;
        Ok(App {
            config,
            store,
            presence,
            metrics_listener,
        })
    }

    pub fn metrics_addr(&self) -> std::io::Result<SocketAddr> {
        self.metrics_listener.local_addr()
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(metrics = %self.metrics_addr()?, "dispatcher running");
        let store: ris_store::DynStore = Arc::new(self.store);
        let ctx = Context::new(Inner {
            config: self.config,
            batches: crate::batches::Batches::start(store.clone()),
            store,
            presence: self.presence,
            publishers: RwLock::new(Default::default()),
            shutdown: shutdown.clone(),
            retry_defaults: RwLock::new(Default::default()),
            instance: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            signer: crate::signing::cache(),
            agent_lists: Default::default(),
            online: Default::default(),
        });
        let tracker = TaskTracker::new();
        tracker.spawn(tenants::supervise(ctx.clone()));
        tracker.spawn(sweeper::run(ctx.clone()));
        tracker.spawn(reaper::run(ctx.clone()));
        tracker.spawn(services::run(ctx.clone()));
        tracker.spawn(crate::webhooks::run(ctx.clone()));
        tracker.spawn(gauges::run(ctx.clone()));
        tracker.spawn(http::serve(self.metrics_listener, ctx.clone()));
        tracker.close();
        shutdown.cancelled().await;
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("work still running after {SHUTDOWN_GRACE:?}; stopping anyway");
        } else {
            tracing::info!("dispatcher stopped cleanly");
        }
        Ok(())
    }
}
