//! The shell executor: runs a process in its own process group.
//!
//! `argv` is executed directly; `script` runs through `/bin/sh -c`. The task's `env` is
//! added on top of the agent's environment; stdin is `/dev/null`. Stdout and stderr are
//! read concurrently, each kept up to the output cap and drained past it so the child
//! never blocks on a full pipe. On timeout or cancellation the whole process group gets
//! SIGTERM, then SIGKILL after a grace period, so children the task started die with it.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use ris_schemas::messages::OutputStream;
use ris_schemas::task::{Command as Cmd, Outcome, ShellOutput, ShellSpec, TaskOutput, TaskResult};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{elapsed_ms, reason, unsuccessful, KillGrace, Limits};
use crate::live::LiveOutput;

/// How long output readers may linger after the process group is gone (a process that
/// left the group could still hold the pipe).
const READER_LINGER: Duration = Duration::from_secs(1);
/// How long to wait, after SIGKILL, for the group's members to be reaped.
const REAP_WAIT: Duration = Duration::from_secs(2);

/// Runs a shell task. Never panics; every failure is a result.
pub async fn run(
    spec: &ShellSpec,
    limits: Limits,
    grace: KillGrace,
    cancel: &CancellationToken,
) -> TaskResult {
    run_live(spec, limits, grace, cancel, None).await
}

/// [`run`], also offering what is read from stdout and stderr to `live` (which never
/// blocks the task; see [`crate::live`]).
pub async fn run_live(
    spec: &ShellSpec,
    limits: Limits,
    grace: KillGrace,
    cancel: &CancellationToken,
    live: Option<LiveOutput>,
) -> TaskResult {
    let started = Instant::now();
    let (program, mut cmd) = command(spec);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            return unsuccessful(
                Outcome::Failed,
                reason::SPAWN_FAILED,
                format!("cannot start `{program}`: {e}"),
                started,
                TaskOutput::None,
            )
        }
    };
    // `process_group(0)` makes the child the leader of a group whose id is its pid.
    let pgid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let tee = |stream| live.clone().map(|l| (l, stream));
    let mut stdout = Capture::start(
        child.stdout.take(),
        limits.output_cap,
        tee(OutputStream::Stdout),
    );
    let mut stderr = Capture::start(
        child.stderr.take(),
        limits.output_cap,
        tee(OutputStream::Stderr),
    );
    drop(live);

    let mut exit: Option<io::Result<ExitStatus>> = None;
    let deadline = tokio::time::sleep(limits.timeout);
    tokio::pin!(deadline);
    let stop = loop {
        if exit.is_some() && stdout.done && stderr.done {
            break None;
        }
        tokio::select! {
            status = child.wait(), if exit.is_none() => exit = Some(status),
            _ = &mut stdout.handle, if !stdout.done => stdout.done = true,
            _ = &mut stderr.handle, if !stderr.done => stderr.done = true,
            _ = &mut deadline => break Some((Outcome::TimedOut, grace.on_timeout)),
            _ = cancel.cancelled() => break Some((Outcome::Cancelled, grace.on_cancel)),
        }
    };
    if let Some((_, grace)) = stop {
        if let Some(pgid) = pgid {
            stop_group(&mut child, pgid, grace, &mut exit).await;
        } else if exit.is_none() {
            let _ = child.start_kill();
        }
        if exit.is_none() {
            exit = Some(child.wait().await);
        }
    }
    let (out, out_truncated) = stdout.finish().await;
    let (err, err_truncated) = stderr.finish().await;
    let status = exit.and_then(Result::ok);
    let output = ShellOutput {
        exit_code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        stdout: out,
        stderr: err,
        stdout_truncated: out_truncated,
        stderr_truncated: err_truncated,
    };
    conclude(stop.map(|(o, _)| o), output, limits, started)
}

/// The outcome from how the run ended.
fn conclude(
    stopped: Option<Outcome>,
    output: ShellOutput,
    limits: Limits,
    started: Instant,
) -> TaskResult {
    let error = match stopped {
        Some(Outcome::TimedOut) => Some((
            Outcome::TimedOut,
            reason::TIMEOUT,
            format!("timed out after {} s", limits.timeout.as_secs()),
        )),
        Some(_) => Some((
            Outcome::Cancelled,
            reason::CANCELLED,
            "cancelled".to_owned(),
        )),
        None => match (output.exit_code, output.signal) {
            (Some(0), _) => None,
            (Some(code), _) => Some((
                Outcome::Failed,
                reason::EXIT_STATUS,
                format!("exited with status {code}"),
            )),
            (None, Some(sig)) => Some((
                Outcome::Failed,
                reason::EXIT_STATUS,
                format!("killed by signal {sig}"),
            )),
            (None, None) => Some((
                Outcome::Failed,
                reason::EXIT_STATUS,
                "exit status unknown".to_owned(),
            )),
        },
    };
    match error {
        None => TaskResult {
            outcome: Outcome::Completed,
            reason: None,
            error: None,
            duration_ms: elapsed_ms(started),
            output: TaskOutput::Shell(output),
        },
        Some((outcome, why, text)) => {
            unsuccessful(outcome, why, text, started, TaskOutput::Shell(output))
        }
    }
}

/// The process to start, and the program name for messages.
fn command(spec: &ShellSpec) -> (String, Command) {
    let (program, args): (&str, &[String]) = match &spec.command {
        Cmd::Argv(argv) => match argv.split_first() {
            Some((program, args)) => (program.as_str(), args),
            None => ("", &[]),
        },
        Cmd::Script(script) => ("/bin/sh", std::slice::from_ref(script)),
    };
    let mut cmd = Command::new(program);
    if matches!(spec.command, Cmd::Script(_)) {
        cmd.arg("-c");
    }
    cmd.args(args)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // If the executor itself is dropped, at least the leader dies.
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    (program.to_owned(), cmd)
}

/// SIGTERM to the group; SIGKILL once `grace` has passed with any member still alive.
async fn stop_group(
    child: &mut Child,
    pgid: Pid,
    grace: Duration,
    exit: &mut Option<io::Result<ExitStatus>>,
) {
    if signal_group(pgid, Signal::SIGTERM) == GroupState::Gone {
        return;
    }
    let deadline = Instant::now() + grace;
    loop {
        if exit.is_none() {
            if let Ok(Some(status)) = child.try_wait() {
                *exit = Some(Ok(status));
            }
        }
        // The leader, until reaped, keeps the group alive: only test once it is.
        if exit.is_some() && group_state(pgid) == GroupState::Gone {
            return;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tracing::debug!(
        pgid = pgid.as_raw(),
        "process group outlived its grace: SIGKILL"
    );
    signal_group(pgid, Signal::SIGKILL);
    if exit.is_none() {
        *exit = Some(child.wait().await);
    }
    // Killed members linger as zombies until their parent (or init) reaps them.
    let reaped = Instant::now() + REAP_WAIT;
    while group_state(pgid) == GroupState::Alive && Instant::now() < reaped {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[derive(Debug, PartialEq, Eq)]
enum GroupState {
    Alive,
    Gone,
}

fn signal_group(pgid: Pid, signal: Signal) -> GroupState {
    match killpg(pgid, signal) {
        Err(Errno::ESRCH) => GroupState::Gone,
        Ok(()) | Err(_) => GroupState::Alive,
    }
}

fn group_state(pgid: Pid) -> GroupState {
    match nix::sys::signal::kill(Pid::from_raw(-pgid.as_raw()), None) {
        Err(Errno::ESRCH) => GroupState::Gone,
        Ok(()) | Err(_) => GroupState::Alive,
    }
}

/// One output stream read in the background into a capped buffer.
struct Capture {
    buf: Arc<Mutex<Captured>>,
    handle: JoinHandle<()>,
    done: bool,
}

#[derive(Default)]
struct Captured {
    data: Vec<u8>,
    truncated: bool,
}

impl Capture {
    /// Reads `reader` in the background, keeping up to `cap` bytes and offering every
    /// piece read to `tee`.
    fn start<R: AsyncRead + Unpin + Send + 'static>(
        reader: Option<R>,
        cap: usize,
        tee: Option<(LiveOutput, OutputStream)>,
    ) -> Self {
        let buf = Arc::new(Mutex::new(Captured::default()));
        let sink = buf.clone();
        let handle = tokio::spawn(async move {
            let Some(mut reader) = reader else { return };
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                let n = match reader.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if let Some((live, stream)) = &tee {
                    live.offer(*stream, &chunk[..n]);
                }
                let mut captured = sink.lock().unwrap_or_else(PoisonError::into_inner);
                let room = cap.saturating_sub(captured.data.len());
                let keep = room.min(n);
                captured.data.extend_from_slice(&chunk[..keep]);
                if keep < n {
                    captured.truncated = true;
                }
            }
        });
        Self {
            buf,
            handle,
            done: false,
        }
    }

    /// Waits briefly for the reader to see end of file, then returns what was kept as
    /// lossy UTF-8 and whether anything was dropped.
    async fn finish(mut self) -> (String, bool) {
        if !self.done
            && tokio::time::timeout(READER_LINGER, &mut self.handle)
                .await
                .is_err()
        {
            self.handle.abort();
        }
        let captured = self.buf.lock().unwrap_or_else(PoisonError::into_inner);
        (
            String::from_utf8_lossy(&captured.data).into_owned(),
            captured.truncated,
        )
    }
}
