//! The end-to-end test kit: start a whole RIS system as real processes against the real
//! services, and talk to it the way an operator would.
//!
//! Each [`System`] gets its own PostgreSQL database, its own Redis key prefix and its
//! own admin key; each tenant it creates has a unique name (so a unique vhost). Dropping
//! the system kills its processes, deletes its tenants' vhosts and users, and drops its
//! database, so tests can run side by side and leave nothing behind.
//!
//! Binaries are taken from the cargo target directory the tests were built into
//! (`cargo build --bins` first; `scripts/test.sh` does it), or from `RIS_BIN_DIR`.
//!
//! # Layout
//! - [`system`](System): the API and dispatcher processes (kill and restart them for
//!   fault tests);
//! - [`tenant`](TenantClient): a tenant's API client and its agents
//!   ([`TenantClient::agent_with`], [`AgentProc`]);
//! - [`wait`](eventually): polling with a deadline;
//! - [`jobs`]: fleets whose scripts record agent-side runs, for fleet-job tests;
//! - [`load`]: a load driver and the exactly-once check of fault tests;
//! - [`services`]: restarting the shared RabbitMQ, PostgreSQL and Redis, with a guard that
//!   always brings them back;
//! - [`docker`]: the local test image and the containers agents made (by label);
//! - [`CutOff`]: cutting an agent run as its own uid off the network (iptables), with a
//!   guard that always reconnects it.

mod cleanup;
mod cutoff;
pub mod docker;
pub mod jobs;
pub mod load;
mod process;
pub mod services;
mod system;
mod tenant;
pub mod tls;
mod wait;

pub use cutoff::CutOff;
pub use system::{System, SystemOptions};
pub use tenant::{AgentOptions, AgentProc, TenantClient};
pub use tls::KitTls;
pub use wait::{eventually, wait_for_task};

/// A short random hex string for unique names.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{:08x}", rand::random::<u32>())
}
