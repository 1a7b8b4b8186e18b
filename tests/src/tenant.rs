//! One tenant's view of a system: its API key, and the agents it enrolled.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::process::{bin, Launch};
use crate::system::request;
use crate::wait::eventually;

/// An operator of one tenant, holding its API key.
#[derive(Clone)]
pub struct TenantClient {
    pub name: String,
    pub key: String,
    pub api_url: String,
    http: reqwest::Client,
    workdir: PathBuf,
    /// With TLS: the CA bundle agents enroll with (`RIS_AGENT_CA`).
    agent_ca: Option<PathBuf>,
}

/// How to enroll and run an agent ([`TenantClient::agent_with`]).
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `key=value` labels.
    pub labels: Vec<String>,
    pub capacity: u32,
    /// Run `ris-agent run` (and so its tasks) as this `(uid, gid)` instead of the test's
    /// user. Needs the test to run as root. The state directory is handed to that user
    /// and the workdir made traversable. Its use: tell the agent's traffic apart from
    /// everything else, e.g. cut it off from the broker and the API with
    /// `iptables -A OUTPUT -o lo -m owner --uid-owner <uid> -j DROP` and reconnect it by
    /// deleting the rule ([`CutOff`](crate::CutOff) does both).
    pub run_as: Option<(u32, u32)>,
    /// Extra environment for `ris-agent run`.
    pub env: Vec<(String, String)>,
    /// API base URL to enroll against (the agent heartbeats there); default the
    /// tenant's [`TenantClient::api_url`].
    pub api_url: Option<String>,
    /// Docker engine socket for `ris-agent run --docker-socket` (default: the agent's,
    /// `/var/run/docker.sock`). A path where nothing listens makes an agent without
    /// Docker: no `docker` capability, docker work fails `docker_unavailable`.
    pub docker_socket: Option<PathBuf>,
    /// Extra flags for `ris-agent enroll` (e.g. `--client-cert`, `--client-key`).
    pub enroll_args: Vec<String>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            labels: Vec::new(),
            capacity: 2,
            run_as: None,
            env: Vec::new(),
            api_url: None,
            docker_socket: None,
            enroll_args: Vec::new(),
        }
    }
}

impl AgentOptions {
    pub fn new(labels: &[&str], capacity: u32) -> Self {
        Self {
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            capacity,
            ..Self::default()
        }
    }
}

/// A running `ris-agent run` process.
pub struct AgentProc {
    pub id: String,
    pub name: String,
    pub state_dir: PathBuf,
    pub child: Child,
    /// The log file (`agent-<tenant>-<name>.log` in the workdir).
    pub log: PathBuf,
    launch: Launch,
}

impl AgentProc {
    pub fn identity(&self) -> Value {
        let text =
            std::fs::read_to_string(self.state_dir.join("identity.json")).expect("identity.json");
        serde_json::from_str(&text).expect("identity json")
    }

    /// SIGKILL, and reaps the process.
    pub async fn kill(&mut self) {
        drop(self.child.kill().await);
    }

    /// Process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends a signal by name (`"TERM"`, `"STOP"`, `"CONT"`, ...) to the agent process
    /// (not to its tasks' process groups). Panics if `kill` fails.
    pub async fn signal(&self, name: &str) {
        let pid = self.pid().expect("agent is running");
        let status = Command::new("kill")
            .args(["-s", name, &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -s {name} {pid} failed");
    }

    /// Waits for the process to exit by itself (after SIGTERM, say), up to `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Starts `ris-agent run` again with the same state directory, user and environment
    /// (killing the running one first). The log is appended to.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.child = self.launch.spawn(false);
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl TenantClient {
    pub(crate) fn new(
        name: String,
        key: String,
        api_url: String,
        http: reqwest::Client,
        workdir: PathBuf,
        agent_ca: Option<PathBuf>,
    ) -> Self {
        Self {
            name,
            key,
            api_url,
            http,
            workdir,
            agent_ca,
        }
    }

    /// The same tenant, acting with another of its keys.
    pub fn with_key(&self, key: &str) -> TenantClient {
        TenantClient {
            key: key.to_owned(),
            ..self.clone()
        }
    }

    /// Creates a key of this tenant with `role` (and `expires_at` if given) using this
    /// client's key; returns (id, key).
    pub async fn create_key(&self, role: &str, expires_at: Option<&str>) -> (String, String) {
        let mut body = json!({ "name": format!("{role}-key"), "role": role });
        if let Some(at) = expires_at {
            body["expires_at"] = json!(at);
        }
        let (status, resp) = self.request(Method::POST, "/v1/api-keys", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "create {role} key: {resp}");
        (
            resp["id"].as_str().expect("id").to_owned(),
            resp["key"].as_str().expect("key").to_owned(),
        )
    }

    /// Enrolls an agent over HTTP only (no agent process): the enrollment response.
    pub async fn enroll_http(&self, name: &str) -> (StatusCode, Value) {
        let token = self.enrollment_token().await;
        self.enroll_with_token(&token, name).await
    }

    /// `POST /v1/agents/enroll` with `token`.
    pub async fn enroll_with_token(&self, token: &str, name: &str) -> (StatusCode, Value) {
        let body = json!({
            "token": token, "name": name, "capacity": 1,
            "version": "test", "hostname": "test-host",
        });
        self.request(Method::POST, "/v1/agents/enroll", Some(body))
            .await
    }

    /// The system's workdir (logs, agent state directories).
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        request(&self.http, &self.api_url, &self.key, method, path, body).await
    }

    /// GET that must succeed.
    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.request(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// Submits a task; returns its id.
    pub async fn submit(&self, body: Value) -> String {
        let (status, resp) = self.request(Method::POST, "/v1/tasks", Some(body)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "submit: {resp}");
        resp["id"].as_str().expect("task id").to_owned()
    }

    pub async fn enrollment_token(&self) -> String {
        let (status, body) = self
            .request(
                Method::POST,
                "/v1/agents/enrollment-tokens",
                Some(json!({ "ttl_secs": 600 })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "enrollment token: {body}");
        body["token"].as_str().expect("token").to_owned()
    }

    /// Runs `ris-agent enroll` with the given arguments; returns (success, stdout+stderr).
    pub async fn enroll_cmd(
        &self,
        state_dir: &Path,
        token: &str,
        name: &str,
        extra: &[&str],
    ) -> (bool, String) {
        self.enroll_at(&self.api_url, state_dir, token, name, extra)
            .await
    }

    async fn enroll_at(
        &self,
        api_url: &str,
        state_dir: &Path,
        token: &str,
        name: &str,
        extra: &[&str],
    ) -> (bool, String) {
        let mut command = Command::new(bin("ris-agent"));
        if let Some(ca) = &self.agent_ca {
            // `--ca` among `extra` wins over the variable.
            command.env("RIS_AGENT_CA", ca);
        }
        let out = command
            .arg("enroll")
            .args(["--api", api_url, "--token", token, "--name", name])
            .arg("--state-dir")
            .arg(state_dir)
            .args(extra)
            .output()
            .await
            .expect("run ris-agent enroll");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Enrolls an agent and starts `ris-agent run` for it.
    pub async fn agent(&self, name: &str, labels: &[&str], capacity: u32) -> AgentProc {
        self.agent_with(name, AgentOptions::new(labels, capacity))
            .await
    }

    /// Enrolls an agent and starts `ris-agent run` for it, as `opts` say.
    pub async fn agent_with(&self, name: &str, opts: AgentOptions) -> AgentProc {
        let state_dir = self.workdir.join(format!("agent-{}-{name}", self.name));
        let token = self.enrollment_token().await;
        let mut extra: Vec<String> = opts
            .labels
            .iter()
            .flat_map(|l| ["--label".to_owned(), l.clone()])
            .collect();
        extra.extend(["--capacity".to_owned(), opts.capacity.to_string()]);
        extra.extend(opts.enroll_args.iter().cloned());
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let api_url = opts.api_url.as_deref().unwrap_or(&self.api_url);
        let (ok, output) = self
            .enroll_at(api_url, &state_dir, &token, name, &extra)
            .await;
        assert!(ok, "enroll {name}: {output}");
        if let Some((uid, gid)) = opts.run_as {
            hand_over(&self.workdir, &state_dir, uid, gid).await;
        }
        let log = self.workdir.join(format!("agent-{}-{name}.log", self.name));
        let mut launch = Launch::new("ris-agent", log.clone());
        launch.args = vec![
            "run".to_owned(),
            "--state-dir".to_owned(),
            state_dir.to_str().expect("utf-8 path").to_owned(),
        ];
        if let Some(socket) = &opts.docker_socket {
            launch.args.push("--docker-socket".to_owned());
            launch
                .args
                .push(socket.to_str().expect("utf-8 path").to_owned());
        }
        launch.env = opts.env;
        launch.run_as = opts.run_as;
        let child = launch.spawn(true);
        let mut agent = AgentProc {
            id: String::new(),
            name: name.to_owned(),
            state_dir,
            child,
            log,
            launch,
        };
        agent.id = agent.identity()["enrollment"]["agent_id"]
            .as_str()
            .expect("agent id")
            .to_owned();
        agent
    }

    /// Waits until the agent shows `online` in `GET /v1/agents/{id}`.
    pub async fn wait_online(&self, agent: &AgentProc) -> Value {
        eventually(
            &format!("agent {} online", agent.name),
            Duration::from_secs(30),
            || async {
                let view = self.get(&format!("/v1/agents/{}", agent.id)).await;
                (view["status"] == "online").then_some(view)
            },
        )
        .await
    }
}

/// Gives `state_dir` to `uid:gid` and lets that user reach it through the workdir
/// (which `tempfile` creates 0700).
async fn hand_over(workdir: &Path, state_dir: &Path, uid: u32, gid: u32) {
    let mode = std::fs::Permissions::from_mode(0o711);
    std::fs::set_permissions(workdir, mode).expect("chmod workdir");
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(state_dir)
        .status()
        .await
        .expect("run chown");
    assert!(
        status.success(),
        "chown {uid}:{gid} {}",
        state_dir.display()
    );
}
