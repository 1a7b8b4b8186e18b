//! The RIS agent: runs tasks on a remote machine behind NAT.
//!
//! The agent only dials out: AMQP to RabbitMQ (tasks in, results out, control orders in)
//! and a WebSocket heartbeat to the API. Nothing listens on the machine.
//!
//! The binary (`ris-agent enroll`, `ris-agent run`) is a thin shell over this library;
//! a benchmark swarm can run many agents in one process through [`Agent::from_identity`]
//! and [`Agent::run`].
//!
//! # Layout
//!
//! - [`config`]: where the state lives, tunable delays, broker settings.
//! - [`identity`]: the enrolled identity saved as `identity.json` (mode 0600).
//! - [`enroll`]: exchanging a one-time token for an identity through the API.
//! - [`agent`]: [`Agent`], the top-level loop that ties the rest together.
//! - [`supervisor`]: the AMQP connection loop: connect, consume, reconnect.
//! - [`worker`]: the task consumer: accept, journal, report `executing`, ack, run.
//! - [`control`]: the control consumer (cancel, revoke, ping, service orders).
//! - [`executor`]: running one task (shell, http, noop, docker) into a `TaskResult`.
//! - [`docker`]: the local Docker engine (bollard): connection, labels, container ops.
//! - [`service`]: Docker services: desired state on disk and the reconciler.
//! - [`running`]: the registry of running tasks and their cancellation tokens.
//! - [`cancelled`]: memory of cancel orders, so a cancelled assignment is never run.
//! - [`journal`]: on-disk record of accepted tasks, for redelivery and crash recovery.
//! - [`live`]: live output of running shell tasks, batched onto `ris.results`.
//! - [`report`]: publishing results with confirms, falling back to the outbox.
//! - [`outbox`]: on-disk queue of results that could not be published yet.
//! - [`heartbeat`]: the WebSocket heartbeat to the API.
//! - [`trust`]: the platform's signing keys; what the agent believes.
//! - [`machine`]: hostname, load, memory, disk and addresses of this machine.
//! - [`swarm`]: hooks for many agents in one process (shared connection and sampler).

pub mod agent;
pub mod cancelled;
pub mod config;
pub mod control;
pub mod docker;
pub mod enroll;
pub mod executor;
mod fsutil;
pub mod heartbeat;
pub mod identity;
pub mod journal;
pub mod live;
pub mod machine;
pub mod outbox;
pub mod report;
pub mod running;
pub mod service;
pub mod supervisor;
pub mod swarm;
pub mod trust;
pub mod worker;

pub use agent::Agent;
pub use config::AgentConfig;
pub use identity::Identity;
