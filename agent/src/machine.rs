//! Facts about this machine for the heartbeat: hostname, CPU, memory, disk, addresses.
//!
//! [`Machine`] keeps sysinfo's state between samples: CPU usage is the difference
//! between two refreshes, so the first sample reads 0 and later ones are averages over
//! the heartbeat interval.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sysinfo::{Disks, Networks, System};

/// The machine's hostname, or `unknown`.
pub fn hostname() -> String {
    System::host_name()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// One sample of the machine's load.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub hostname: String,
    pub cpu_percent: f32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    /// Of the filesystem holding the state directory.
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
    /// Non-loopback IP addresses, sorted.
    pub addresses: Vec<String>,
}

pub struct Machine {
    system: System,
    disks: Disks,
    networks: Networks,
    /// The disk figures are those of the filesystem holding this path.
    state_dir: PathBuf,
    /// A sample younger than this is handed out again (0: always sample afresh).
    reuse_for: Duration,
    last: Option<(Instant, Sample)>,
}

impl Machine {
    pub fn new(state_dir: &Path) -> Self {
        let mut system = System::new();
        system.refresh_cpu_usage();
        Self {
            system,
            disks: Disks::new_with_refreshed_list(),
            networks: Networks::new_with_refreshed_list(),
            state_dir: state_dir
                .canonicalize()
                .unwrap_or_else(|_| state_dir.to_path_buf()),
            reuse_for: Duration::ZERO,
            last: None,
        }
    }

    /// Hands out the same sample for `reuse_for` (a swarm of agents sharing one machine
    /// samples it once, not once per agent).
    pub fn reusing_samples_for(mut self, reuse_for: Duration) -> Self {
        self.reuse_for = reuse_for;
        self
    }

    /// Refreshes and samples. Reads `/proc` and `statfs`: call it off the async runtime
    /// (`spawn_blocking`).
    pub fn sample(&mut self) -> Sample {
        if let Some((at, sample)) = &self.last {
            if at.elapsed() < self.reuse_for {
                return sample.clone();
            }
        }
        let sample = self.fresh_sample();
        if !self.reuse_for.is_zero() {
            self.last = Some((Instant::now(), sample.clone()));
        }
        sample
    }

    fn fresh_sample(&mut self) -> Sample {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        // Re-list disks and interfaces: mounts and addresses change (DHCP, VPN).
        self.disks.refresh(true);
        self.networks.refresh(true);
        let (disk_used_bytes, disk_total_bytes) = self.disk_usage();
        Sample {
            hostname: hostname(),
            cpu_percent: self.system.global_cpu_usage(),
            memory_used_bytes: self.system.used_memory(),
            memory_total_bytes: self.system.total_memory(),
            disk_used_bytes,
            disk_total_bytes,
            addresses: self.addresses(),
        }
    }

    /// Used and total bytes of the mount with the longest mount point that holds the
    /// state directory.
    fn disk_usage(&self) -> (u64, u64) {
        self.disks
            .list()
            .iter()
            .filter(|d| self.state_dir.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len())
            .map(|d| {
                let total = d.total_space();
                (total.saturating_sub(d.available_space()), total)
            })
            .unwrap_or((0, 0))
    }

    fn addresses(&self) -> Vec<String> {
        let mut addrs: Vec<String> = self
            .networks
            .values()
            .flat_map(|data| data.ip_networks())
            .map(|n| n.addr)
            .filter(|a| !a.is_loopback() && !a.is_unspecified())
            .map(|a| a.to_string())
            .collect();
        addrs.sort();
        addrs.dedup();
        addrs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_has_memory_and_no_loopback() {
        let mut m = Machine::new(Path::new("/"));
        let s = m.sample();
        assert!(s.memory_total_bytes > 0);
        assert!(s.memory_used_bytes <= s.memory_total_bytes);
        assert!(s.disk_used_bytes <= s.disk_total_bytes);
        assert!(!s.addresses.iter().any(|a| a == "127.0.0.1" || a == "::1"));
        assert!(!s.hostname.is_empty());
    }
}
