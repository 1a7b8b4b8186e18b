//! Hooks for running many agents in one process (the benchmark swarm, `ris-bench`).
//!
//! A real agent dials its own broker connection and samples its own machine. A swarm of
//! thousands in one process cannot: lapin costs an OS thread and buffers per connection,
//! and RabbitMQ a file descriptor and ~136 KiB each. So [`SwarmLinks`] hands an agent
//! a connection it shares with other agents (each agent still opens its own channels,
//! consumers and publisher on it) and a machine sampler shared by all.
//!
//! The shared connection is authenticated as a broker user with the `impersonator` tag:
//! the agent publishes its results with its own `user_id`, which the dispatcher checks,
//! and only an impersonator may set another user's id. Nothing else changes.

use std::fmt;
use std::sync::{Arc, Mutex};

use ris_broker::lapin::Connection;

use crate::machine::Machine;

/// Channels one agent session keeps open on its connection: the publisher's main
/// channel and its confirm lanes, the task consumer's and the control consumer's.
pub const CHANNELS_PER_AGENT: usize = 1 + crate::supervisor::AGENT_LANES + 2;

/// Channels RabbitMQ allows on one connection (`channel_max`, 2,047 by default). A
/// shared connection carries at most this many divided by [`CHANNELS_PER_AGENT`] agents;
/// past that, the agents whose channels are refused retry their session every second,
/// and the churn alone keeps the broker busy.
pub const CHANNEL_MAX: usize = 2047;

/// What a swarm agent shares with its neighbours.
#[derive(Clone)]
pub struct SwarmLinks {
    /// Shared connection to the tenant's vhost; the agent never closes it.
    pub connection: Arc<Connection>,
    /// One sampler for the whole process (see [`Machine::reusing_samples_for`]).
    pub machine: Arc<Mutex<Machine>>,
}

impl fmt::Debug for SwarmLinks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SwarmLinks")
            .field("connected", &self.connection.status().connected())
            .finish_non_exhaustive()
    }
}
