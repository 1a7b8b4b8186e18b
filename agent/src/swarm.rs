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
