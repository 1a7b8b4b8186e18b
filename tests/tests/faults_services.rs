//! Fault injection on the shared services — RabbitMQ, PostgreSQL, Redis — each
//! restarted under a steady load of mixed tasks: every task submitted must end exactly
//! once.
//!
//! These restart services every test on the machine uses, so they are ignored by
//! default and run alone:
//!
//! ```text
//! cargo test -p ris-tests --test faults_services -- --ignored --test-threads=1 --nocapture
//! ```
//!
//! A [`ServicesGuard`] brings any stopped service back when a test ends, even by panic.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::future::Future;
use std::time::Duration;

use ris_tests::load::{check, fleet, mark, Load, LoadOptions};
use ris_tests::services::{restart_postgres, restart_rabbitmq, restart_redis, ServicesGuard};
use ris_tests::{System, SystemOptions};

/// How long the check waits for every task to end once the load is over.
const RECOVERY: Duration = Duration::from_secs(40);
/// How long each service stays down.
const DOWN_FOR: Duration = Duration::from_secs(3);

/// 2 dispatchers, 4 agents, 25 s of load; `restart` runs 6 s into it.
async fn service_restarted_under_load<F, Fut>(service: &str, restart: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Duration>,
{
    let system = System::start_with(SystemOptions {
        dispatchers: 2,
        ..SystemOptions::default()
    })
    .await;
    // Declared after the system so it is dropped first: the system's cleanup needs the
    // services.
    let _services = ServicesGuard::new();
    let tenant = system.tenant().await;
    let _agents = fleet(&tenant, &[], 4, 4).await;
    let load = Load::start(
        &tenant,
        LoadOptions {
            duration: Duration::from_secs(25),
            ..LoadOptions::default()
        },
    );
    load.wait_accepted(20, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    mark(&format!("restarting {service} (down for {DOWN_FOR:?})"));
    let outage = restart().await;
    mark(&format!("{service} back after {outage:.1?}"));

    let run = load.finish().await;
    let scenario = format!("{service} restarted under load (down {outage:.1?})");
    let report = check(&tenant, &run, &scenario, RECOVERY).await;
    println!("{report}");
    report.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "restarts shared services; run with --ignored --test-threads=1"]
async fn rabbitmq_restarted_under_load() {
    service_restarted_under_load("RabbitMQ", || restart_rabbitmq(DOWN_FOR)).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "restarts shared services; run with --ignored --test-threads=1"]
async fn postgres_restarted_under_load() {
    service_restarted_under_load("PostgreSQL", || restart_postgres(DOWN_FOR)).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "restarts shared services; run with --ignored --test-threads=1"]
async fn redis_restarted_under_load() {
    service_restarted_under_load("Redis", || restart_redis(DOWN_FOR)).await;
}
