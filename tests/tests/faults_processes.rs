//! Fault injection on RIS's own processes, under a steady load of mixed tasks: every
//! task submitted must end exactly once, whatever is SIGKILLed meanwhile.
//!
//! These tests touch only processes they started, so they run alongside other tests.
//! `cargo test -p ris-tests --test faults_processes -- --nocapture` prints the tables
//! (and the time of each fault, to line up with the logs; `RIS_KEEP_LOGS=1` keeps them).

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::time::Duration;

use ris_tests::load::{check, fleet, mark, Load, LoadOptions};
use ris_tests::{System, SystemOptions};

/// How long the check waits for every task to end once the load is over.
const RECOVERY: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn dispatchers_sigkilled_repeatedly_under_load() {
    let mut system = System::start_with(SystemOptions {
        dispatchers: 2,
        ..SystemOptions::default()
    })
    .await;
    let tenant = system.tenant().await;
    let _agents = fleet(&tenant, &[], 4, 4).await;
    let load = Load::start(
        &tenant,
        LoadOptions {
            rate_per_sec: 20,
            max_tasks: 600,
            ..LoadOptions::default()
        },
    );
    load.wait_accepted(20, Duration::from_secs(20)).await;

    // Alternately, and three times both at once: 17 kills, each followed by a restart.
    // Many kills, because each has only a small chance of landing inside a placement.
    let mut kills = 0;
    for round in 0..14 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let victims: &[usize] = match round {
            4 | 9 | 13 => &[0, 1],
            r if r % 2 == 0 => &[0],
            _ => &[1],
        };
        for &i in victims {
            mark(&format!("SIGKILL dispatcher {i}"));
            system.kill_dispatcher(i).await;
            kills += 1;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        for &i in victims {
            system.restart_dispatcher(i).await;
            mark(&format!("dispatcher {i} back"));
        }
    }

    let run = load.finish().await;
    let scenario = format!("dispatcher SIGKILL ×{kills} (2 dispatchers; alternately and both)");
    let report = check(&tenant, &run, &scenario, RECOVERY).await;
    println!("{report}");
    report.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn apis_sigkilled_under_load() {
    let mut system = System::start_with(SystemOptions {
        apis: 2,
        ..SystemOptions::default()
    })
    .await;
    let tenant = system.tenant().await;
    // Half the agents heartbeat to each API.
    let _agents = fleet(&tenant, &system.api_urls, 4, 4).await;
    let load = Load::start(
        &tenant,
        LoadOptions {
            api_urls: system.api_urls.clone(),
            ..LoadOptions::default()
        },
    );
    load.wait_accepted(20, Duration::from_secs(20)).await;

    // One instance at a time (submissions fail over), then both (they wait and retry
    // with the same Idempotency-Key).
    let mut kills = 0;
    for victims in [&[0][..], &[1], &[0, 1], &[0]] {
        tokio::time::sleep(Duration::from_secs(4)).await;
        for &i in victims {
            mark(&format!("SIGKILL API {i}"));
            system.kill_api_at(i).await;
            kills += 1;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        for &i in victims {
            system.restart_api_at(i).await;
            mark(&format!("API {i} back"));
        }
    }

    let run = load.finish().await;
    let scenario = format!("API SIGKILL ×{kills} (2 APIs; one at a time, then both)");
    let report = check(&tenant, &run, &scenario, RECOVERY).await;
    println!("{report}");
    report.assert_clean();
}
