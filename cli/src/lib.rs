//! `risctl`, the RIS command line: the REST API of `docs/operations.md` for people
//! (aligned tables) and for scripts (`--json` prints the API's JSON as is).
//!
//! # Layout
//! - [`config`]: where the API URL and key come from (flags, `RIS_API`/`RIS_KEY`, the
//!   file `risctl configure` writes);
//! - [`client`]: HTTP, and API and connection errors worded for people;
//! - [`sse`]: reading Server-Sent Events (event and output streams);
//! - [`table`]: the table formatter;
//! - [`commands`]: the command line (clap) and one module per resource.

pub mod client;
pub mod commands;
pub mod config;
pub mod sse;
pub mod table;

pub use commands::{run, Cli};
