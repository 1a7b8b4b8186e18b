//! CPU time and peak RSS of processes, read from `/proc/<pid>/stat` and `status`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// utime + stime in ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` and `VmHWM` (peak) in KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// One process, or a group of processes counted together (PostgreSQL's backends).
struct Proc {
    name: String,
    pids: Vec<u32>,
    start_ticks: u64,
    peak_rss_kib: u64,
}

impl Proc {
    fn ticks(&self) -> u64 {
        self.pids.iter().filter_map(|p| cpu_ticks(*p)).sum()
    }

    fn rss(&self) -> u64 {
        self.pids
            .iter()
            .filter_map(|p| rss_kib(*p))
            .map(|r| r.0)
            .sum()
    }
}

/// Pids whose command name (`/proc/<pid>/comm`) is `comm`.
fn pids_named(comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm)
        })
        .collect()
}

/// The shared services and the benchmark process itself, by command name: where the
/// rest of the machine's CPU goes during a scenario.
pub fn services() -> Vec<(String, Vec<u32>)> {
    let mut out: Vec<(String, Vec<u32>)> = [
        ("postgres", "postgres"),
        ("rabbitmq", "beam.smp"),
        ("redis", "redis-server"),
    ]
    .into_iter()
    .map(|(name, comm)| (name.to_owned(), pids_named(comm)))
    .filter(|(_, pids)| !pids.is_empty())
    .collect();
    out.push(("bench".to_owned(), vec![std::process::id()]));
    out
}

/// Watches processes from `start` to `finish`: average CPU and peak RSS (summed over a
/// group's members).
pub struct Watch {
    procs: Arc<Mutex<Vec<Proc>>>,
    started: Instant,
    stop: CancellationToken,
}

impl Watch {
    /// Watches the named processes (a `None` pid is skipped) and the shared services
    /// ([`services`]).
    pub fn start(procs: &[(&str, Option<u32>)]) -> Self {
        let procs: Vec<Proc> = procs
            .iter()
            .filter_map(|(name, pid)| Some(((*name).to_owned(), vec![(*pid)?])))
            .chain(services())
            .map(|(name, pids)| {
                let mut p = Proc {
                    name,
                    pids,
                    start_ticks: 0,
                    peak_rss_kib: 0,
                };
                p.start_ticks = p.ticks();
                p.peak_rss_kib = p.rss();
                p
            })
            .collect();
        let procs = Arc::new(Mutex::new(procs));
        let stop = CancellationToken::new();
        let (shared, token) = (procs.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            while !token.is_cancelled() {
                tick.tick().await;
                for p in shared.lock().unwrap_or_else(|e| e.into_inner()).iter_mut() {
                    p.peak_rss_kib = p.peak_rss_kib.max(p.rss());
                }
            }
        });
        Self {
            procs,
            started: Instant::now(),
            stop,
        }
    }

    /// `{name: {cpu_percent, peak_rss_mib, lifetime_peak_rss_mib}}`; CPU as % of one core.
    pub fn finish(self) -> Value {
        self.stop.cancel();
        let secs = self.started.elapsed().as_secs_f64();
        let mut out = serde_json::Map::new();
        for p in self.procs.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            // A group's member that exited takes its ticks along: never below zero.
            let ticks = p.ticks().saturating_sub(p.start_ticks);
            let hwm: u64 = p
                .pids
                .iter()
                .filter_map(|pid| rss_kib(*pid))
                .map(|r| r.1)
                .sum();
            out.insert(
                p.name.clone(),
                json!({
                    "cpu_percent": crate::stats::round2(ticks as f64 / TICKS_PER_SEC / secs * 100.0),
                    "peak_rss_mib": crate::stats::round2(p.peak_rss_kib as f64 / 1024.0),
                    "lifetime_peak_rss_mib": crate::stats::round2(hwm as f64 / 1024.0),
                }),
            );
        }
        Value::Object(out)
    }
}

/// CPU percent of the whole machine (all cores) over `f`, from `/proc/stat`.
pub fn machine_busy_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?;
    let nums: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let idle = nums.get(3)? + nums.get(4).copied().unwrap_or(0);
    let total: u64 = nums.iter().sum();
    Some((total - idle, total))
}
