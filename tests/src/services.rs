//! Restarting the shared services — RabbitMQ, PostgreSQL, Redis — under a running
//! system, for fault tests.
//!
//! These services are shared by every test on the machine, so:
//! - tests that use these functions must run alone: mark them
//!   `#[ignore = "restarts shared services; run with --ignored --test-threads=1"]`;
//! - hold a [`ServicesGuard`] for the whole test: its `Drop` brings back any service
//!   that is down, also when the test panics, so nothing is ever left stopped.
//!
//! Each restart function returns once the service answers again, with how long it was
//! unreachable as the test saw it.

use std::net::{SocketAddr, TcpStream};
use std::process::Command as StdCommand;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use tokio::process::Command;

use crate::system::{MANAGEMENT_URL, PG_ADMIN_URL};

/// The exact command line Redis is started with on the test machines.
const REDIS_START: [&str; 14] = [
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
];
const REDIS_LOG: &str = "/var/log/redis/ci.log";
/// How long a service may take to come back before the kit gives up (and panics).
const COME_BACK: Duration = Duration::from_secs(90);

/// While alive, nothing; when dropped (test end or panic), restarts whichever of
/// RabbitMQ, PostgreSQL and Redis does not answer, and waits for it.
#[must_use = "the guard restores the services when dropped"]
pub struct ServicesGuard(());

impl ServicesGuard {
    pub fn new() -> Self {
        Self(())
    }
}

impl Default for ServicesGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ServicesGuard {
    fn drop(&mut self) {
        ensure_services_up();
    }
}

/// Blocking: starts any service that is down and waits until all three answer. Safe to
/// call at any time (a running service is left alone).
pub fn ensure_services_up() {
    if !redis_up() {
        eprintln!("[services] Redis is down; starting it");
        start_blocking("redis-server", &redis_start_args());
    }
    if !tcp_up(5432) {
        eprintln!("[services] PostgreSQL is down; starting it");
        start_blocking("pg_ctlcluster", &pg_args("start"));
    }
    if !run_blocking("rabbitmq-diagnostics", &["-q", "check_running"]) {
        if run_blocking("rabbitmqctl", &["-q", "status"]) {
            eprintln!("[services] the RabbitMQ app is stopped; starting it");
            start_blocking("rabbitmqctl", &["start_app"]);
        } else {
            eprintln!("[services] the RabbitMQ node is down; starting it");
            start_blocking(
                "bash",
                &[
                    "-c",
                    "ulimit -n 65536 2>/dev/null || true; rabbitmq-server -detached",
                ],
            );
        }
    }
    let deadline = Instant::now() + COME_BACK;
    while !(redis_up() && tcp_up(5432) && tcp_up(5672) && management_up_blocking()) {
        if Instant::now() > deadline {
            eprintln!("[services] a service is still down after {COME_BACK:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `rabbitmqctl stop_app`, `down_for`, `rabbitmqctl start_app`, then waits for the
/// AMQP port and the management API. Returns how long the broker was unreachable.
pub async fn restart_rabbitmq(down_for: Duration) -> Duration {
    let start = Instant::now();
    run("rabbitmqctl", &["stop_app"]).await;
    tokio::time::sleep(down_for).await;
    run("rabbitmqctl", &["start_app"]).await;
    wait_until("RabbitMQ", || async {
        tcp_up(5672) && management_up().await
    })
    .await;
    start.elapsed()
}

/// Restarts the PostgreSQL cluster (`pg_ctlcluster ... restart`, or `stop`, `down_for`,
/// `start` when `down_for` is not zero), then waits until it accepts a login.
pub async fn restart_postgres(down_for: Duration) -> Duration {
    let start = Instant::now();
    if down_for.is_zero() {
        run("pg_ctlcluster", &pg_args("restart")).await;
    } else {
        run("pg_ctlcluster", &pg_args("stop")).await;
        tokio::time::sleep(down_for).await;
        run("pg_ctlcluster", &pg_args("start")).await;
    }
    wait_until("PostgreSQL", || async {
        match PgConnection::connect(PG_ADMIN_URL).await {
            Ok(conn) => {
                drop(conn.close().await);
                true
            }
            Err(_) => false,
        }
    })
    .await;
    start.elapsed()
}

/// `redis-cli shutdown nosave` (every key is lost), `down_for`, then starts Redis with
/// the machine's command line and waits for `PING`.
pub async fn restart_redis(down_for: Duration) -> Duration {
    let start = Instant::now();
    // The server closes the connection as it exits, so redis-cli may report an error.
    let _ = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave"])
        .output()
        .await;
    wait_until("Redis to stop", || async { !tcp_up(6379) }).await;
    tokio::time::sleep(down_for).await;
    run("redis-server", &redis_start_args()).await;
    wait_until("Redis", || async { redis_up() }).await;
    start.elapsed()
}

fn redis_start_args() -> Vec<&'static str> {
    let mut args = REDIS_START.to_vec();
    args.push(REDIS_LOG);
    args
}

fn pg_args(action: &str) -> Vec<String> {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("/etc/postgresql")
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
        .expect("a PostgreSQL cluster in /etc/postgresql");
    [
        "--skip-systemctl-redirect",
        version.as_str(),
        "main",
        action,
    ]
    .map(str::to_owned)
    .to_vec()
}

async fn run<S: AsRef<std::ffi::OsStr>>(program: &str, args: &[S]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start_blocking<S: AsRef<std::ffi::OsStr>>(program: &str, args: &[S]) {
    if !run_blocking(program, args) {
        eprintln!("[services] `{program}` failed");
    }
}

fn run_blocking<S: AsRef<std::ffi::OsStr>>(program: &str, args: &[S]) -> bool {
    StdCommand::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + COME_BACK;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} not back after {COME_BACK:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tcp_up(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

fn redis_up() -> bool {
    StdCommand::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "ping"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
}

async fn management_up() -> bool {
    reqwest::Client::new()
        .get(format!("{MANAGEMENT_URL}/api/overview"))
        .basic_auth("guest", Some("guest"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

fn management_up_blocking() -> bool {
    StdCommand::new("curl")
        .args(["-fsS", "-o", "/dev/null", "-m", "2", "-u", "guest:guest"])
        .arg(format!("{MANAGEMENT_URL}/api/overview"))
        .status()
        .is_ok_and(|s| s.success())
}
