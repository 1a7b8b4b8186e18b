//! The local Docker engine, through `bollard` over its unix socket.
//!
//! - [`engine`]: the connection (version negotiated with the engine), probed every few
//!   seconds; the agent advertises the `docker` capability only while it answers.
//! - [`labels`]: who owns a container. Every container the agent creates carries
//!   `ris.managed=true`, `ris.tenant` and `ris.agent`; the agent lists and touches only
//!   containers carrying its own agent id (several agents may share one engine).
//! - [`containers`]: the operations services and tasks are made of (pull when missing,
//!   create + start, list, inspect, remove, logs), with engine errors sorted into the
//!   reason codes operators see.

pub mod containers;
pub mod engine;
pub mod labels;

pub use engine::Engine;
pub use labels::Owner;

/// Reason codes of docker failures, as carried in task results and service reports.
pub mod reason {
    pub const DOCKER_UNAVAILABLE: &str = "docker_unavailable";
    pub const IMAGE_PULL_FAILED: &str = "image_pull_failed";
    pub const PORT_IN_USE: &str = "port_in_use";
    pub const CREATE_FAILED: &str = "create_failed";
    pub const DOCKER_ERROR: &str = "docker_error";
    pub const NOT_MANAGED: &str = "not_managed";
    pub const HEALTH_CHECK_FAILED: &str = "health_check_failed";
}

/// A docker operation that failed, sorted by what an operator can do about it.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The socket is missing or the engine does not answer.
    #[error("docker engine unavailable at {socket}: {message}")]
    Unavailable { socket: String, message: String },
    /// The image is not on the machine and pulling it failed (the engine's message).
    #[error("{0}")]
    PullFailed(String),
    /// A published host port is taken.
    #[error("{0}")]
    PortInUse(String),
    /// The engine refused a request (status code and its message).
    #[error("docker engine error ({status}): {message}")]
    Engine { status: u16, message: String },
    /// The engine refused to create a container from the spec.
    #[error("cannot create the container: {0}")]
    CreateFailed(String),
    /// A container named in a task is not one this agent created.
    #[error("container {0} is not managed by this agent")]
    NotManaged(String),
}

impl DockerError {
    pub fn reason(&self) -> &'static str {
        match self {
            DockerError::Unavailable { .. } => reason::DOCKER_UNAVAILABLE,
            DockerError::PullFailed(_) => reason::IMAGE_PULL_FAILED,
            DockerError::PortInUse(_) => reason::PORT_IN_USE,
            DockerError::Engine { .. } => reason::DOCKER_ERROR,
            DockerError::CreateFailed(_) => reason::CREATE_FAILED,
            DockerError::NotManaged(_) => reason::NOT_MANAGED,
        }
    }

    /// True for "no such container" (removed meanwhile).
    pub fn is_not_found(&self) -> bool {
        matches!(self, DockerError::Engine { status: 404, .. })
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, DockerError::Unavailable { .. })
    }

    /// Sorts a bollard error: transport problems mean the engine is unavailable.
    pub(crate) fn from_bollard(socket: &str, err: bollard::errors::Error) -> Self {
        use bollard::errors::Error as E;
        match err {
            E::DockerResponseServerError {
                status_code,
                message,
            } => {
                if is_port_conflict(&message) {
                    DockerError::PortInUse(message)
                } else {
                    DockerError::Engine {
                        status: status_code,
                        message,
                    }
                }
            }
            E::SocketNotFoundError(_)
            | E::IOError { .. }
            | E::HyperResponseError { .. }
            | E::HyperLegacyError { .. }
            | E::HttpClientError { .. }
            | E::RequestTimeoutError => DockerError::Unavailable {
                socket: socket.to_owned(),
                message: crate::executor::error_chain(&err),
            },
            other => DockerError::Engine {
                status: 0,
                message: other.to_string(),
            },
        }
    }
}

/// Docker's words for a host port that cannot be bound.
fn is_port_conflict(message: &str) -> bool {
    message.contains("port is already allocated") || message.contains("address already in use")
}
