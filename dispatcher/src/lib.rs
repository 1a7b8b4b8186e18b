//! The RIS dispatcher.
//!
//! Stateless: every instance consumes the `ris.submit` and `ris.results` queues of every
//! tenant (competing consumers), sweeps PostgreSQL for tasks that still need a place,
//! and keeps nothing in memory that another instance would need. Killing one at any
//! moment loses nothing: unacked deliveries return to their queue, and a placement is
//! recorded (`routing`, attempt n) before its assignment is published.
//!
//! # Layout
//!
//! - [`config`]: configuration from a file plus `RIS_*` environment variables.
//! - [`app`]: [`app::App`] wires the parts and runs them until shutdown.
//! - [`context`]: handles shared by every part.
//! - [`tenants`]: keeps one [`worker`] per tenant, following the `tenants` table.
//! - [`worker`]: one tenant's AMQP connection and its two consumers.
//! - [`submit`]: handles a submission from `ris.submit`.
//! - [`results`]: handles an agent report from `ris.results`.
//! - [`report_batcher`]: applies those reports in batches (group commit).
//! - [`batches`]: records placements, and reads submitted tasks, in batches.
//! - [`dead_letters`]: moves what reaches `ris.dead` into PostgreSQL for the API.
//! - [`jobs`]: drives fleet jobs: dispatches children, stops them on halt or cancel.
//! - [`placement`]: chooses an agent by load and hands it the task.
//! - [`agent_lists`]: each tenant's agent rows, cached briefly for placement.
//! - [`online`]: online agents' load and capabilities, cached for a quarter second.
//! - [`recovery`]: retries with backoff, lost agents, lapsed assignments.
//! - [`reaper`]: notices agents that stopped heartbeating (one instance at a time).
//! - [`services`]: Docker services: keeps agents told (sync), records their reports.
//! - [`sweeper`]: places tasks that wait in PostgreSQL; fails those past their deadline.
//! - [`events`]: publishes task events on `ris.events`.
//! - [`replies`]: sends a task's final outcome to its submitter's `reply_to` queue.
//! - [`gauges`]: queue depth and online-agent gauges; task latency histograms.
//! - [`webhooks`]: signed HTTP deliveries of events to the URLs tenants subscribed.
//! - [`signing`]: signs messages to agents; spots the ones they refused for it.
//! - [`retry`]: retries store calls with backoff while a dependency is down.
//! - [`http`]: `/healthz` and `/metrics`.

pub mod agent_lists;
pub mod app;
pub mod batches;
pub mod config;
pub mod context;
pub mod dead_letters;
pub mod events;
pub mod gauges;
pub mod http;
pub mod jobs;
pub mod online;
pub mod placement;
pub mod reaper;
pub mod recovery;
pub mod replies;
pub mod report_batcher;
pub mod results;
pub mod retry;
pub mod services;
pub mod signing;
pub mod submit;
pub mod sweeper;
pub mod tenants;
pub mod webhooks;
pub mod worker;
