//! Live output: a running shell task's stdout and stderr, streamed while it runs.
//!
//! The executor's readers tee what they read into a bounded channel with `try_send`, so
//! the task never waits on it: when the channel is full the piece is dropped (and
//! counted). A batcher per attempt drains the channel and publishes a `task.output`
//! report at most every [`FLUSH_EVERY`], each at most [`MAX_CHUNK`] bytes per stream, and
//! stops after [`MAX_PER_ATTEMPT`] bytes. Publishing failures are dropped too: live output
//! is best effort, the stored result (through the outbox) is what counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::messages::{OutputChunk, OutputStream, ResultMessage};
use ris_schemas::version::V1;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;

/// Pieces the channel holds before new ones are dropped.
pub const CHANNEL_CAPACITY: usize = 64;
/// How often the batcher publishes at most.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// Most bytes of one stream in one message.
pub const MAX_CHUNK: usize = 16 * 1024;
/// Bytes streamed per attempt, after which streaming stops.
pub const MAX_PER_ATTEMPT: usize = 1024 * 1024;

/// The executor's end: cheap to clone, never blocks.
#[derive(Clone)]
pub struct LiveOutput {
    tx: mpsc::Sender<(OutputStream, Vec<u8>)>,
    dropped: Arc<AtomicU64>,
}

impl LiveOutput {
    /// A channel of `capacity` pieces and its receiving end.
    pub fn channel(capacity: usize) -> (Self, LiveReceiver) {
        let (tx, rx) = mpsc::channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        (
            Self {
                tx,
                dropped: dropped.clone(),
            },
            LiveReceiver { rx, dropped },
        )
    }

    /// Offers a piece read from `stream`; drops it (counted) if the channel is full, and
    /// silently once the batcher stopped.
    pub fn offer(&self, stream: OutputStream, bytes: &[u8]) {
        if bytes.is_empty() || self.tx.is_closed() {
            return;
        }
        if let Err(TrySendError::Full(_)) = self.tx.try_send((stream, bytes.to_vec())) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The batcher's end.
pub struct LiveReceiver {
    rx: mpsc::Receiver<(OutputStream, Vec<u8>)>,
    dropped: Arc<AtomicU64>,
}

impl LiveReceiver {
    /// Pieces dropped because the channel was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// What the batcher needs to name its messages.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pub task_id: TaskId,
    pub attempt: u32,
    pub agent_id: AgentId,
}

/// Per-stream pending bytes and the message sequence.
struct Batch {
    attempt: Attempt,
    seq: u64,
    sent: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Bytes dropped because a stream had more than [`MAX_CHUNK`] pending.
    overflow: u64,
}

impl Batch {
    fn new(attempt: Attempt) -> Self {
        Self {
            attempt,
            seq: 0,
            sent: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
            overflow: 0,
        }
    }

    fn push(&mut self, stream: OutputStream, bytes: &[u8]) {
        let buf = match stream {
            OutputStream::Stdout => &mut self.stdout,
            OutputStream::Stderr => &mut self.stderr,
        };
        // Keep at most one message's worth per stream between flushes.
        let room = MAX_CHUNK.saturating_sub(buf.len());
        let keep = room.min(bytes.len());
        buf.extend_from_slice(&bytes[..keep]);
        self.overflow += (bytes.len() - keep) as u64;
    }

    fn exhausted(&self) -> bool {
        self.sent >= MAX_PER_ATTEMPT
    }

    /// The messages to publish now (at most one per stream). With `last`, a trailing
    /// incomplete UTF-8 sequence goes out too (as a replacement character).
    fn take(&mut self, last: bool) -> Vec<ResultMessage> {
        let mut out = Vec::new();
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            if self.exhausted() {
                break;
            }
            let buf = match stream {
                OutputStream::Stdout => &mut self.stdout,
                OutputStream::Stderr => &mut self.stderr,
            };
            let budget = MAX_PER_ATTEMPT - self.sent;
            let mut n = buf.len().min(budget);
            if !last && n == buf.len() {
                n = complete_utf8_prefix(&buf[..n]);
            }
            if n == 0 {
                continue;
            }
            let bytes: Vec<u8> = buf.drain(..n).collect();
            self.sent += n;
            out.push(ResultMessage::Output(OutputChunk {
                v: V1,
                task_id: self.attempt.task_id,
                attempt: self.attempt.attempt,
                agent_id: self.attempt.agent_id,
                stream,
                seq: self.seq,
                data: String::from_utf8_lossy(&bytes).into_owned(),
                sent_at: Utc::now(),
            }));
            self.seq += 1;
        }
        out
    }
}

/// The longest prefix that does not end inside a UTF-8 sequence (invalid bytes elsewhere
/// are left to the lossy conversion).
fn complete_utf8_prefix(bytes: &[u8]) -> usize {
    let mut start = 0;
    loop {
        match std::str::from_utf8(&bytes[start..]) {
            Ok(_) => return bytes.len(),
            // Ends inside a sequence that more bytes may complete.
            Err(e) if e.error_len().is_none() => return start + e.valid_up_to(),
            // Invalid bytes: skip them and look further.
            Err(e) => start += e.valid_up_to() + e.error_len().unwrap_or(1),
        }
    }
}

/// Runs the batcher until every [`LiveOutput`] is dropped (the run ended), publishing
/// with `publish` (whose failures are ignored). Returns once the last chunk went out.
pub fn spawn<F, Fut>(attempt: Attempt, mut rx: LiveReceiver, publish: F) -> JoinHandle<()>
where
    F: Fn(ResultMessage) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut batch = Batch::new(attempt);
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut open = true;
        while open && !batch.exhausted() {
            tokio::select! {
                piece = rx.rx.recv() => match piece {
                    Some((stream, bytes)) => batch.push(stream, &bytes),
                    None => open = false,
                },
                _ = tick.tick() => {
                    for message in batch.take(false) {
                        publish(message).await;
                    }
                }
            }
        }
        if open {
            // Over the per-attempt limit: stop listening (offers now return at once).
            rx.rx.close();
        } else {
            for message in batch.take(true) {
                publish(message).await;
            }
        }
        let dropped = rx.dropped();
        if dropped > 0 || batch.overflow > 0 || batch.exhausted() {
            tracing::debug!(
                dropped_pieces = dropped,
                dropped_bytes = batch.overflow,
                streamed_bytes = batch.sent,
                "live output was not streamed in full"
            );
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn attempt() -> Attempt {
        Attempt {
            task_id: TaskId::new(),
            attempt: 1,
            agent_id: AgentId::new(),
        }
    }

    #[test]
    fn utf8_prefix() {
        assert_eq!(complete_utf8_prefix(b"abc"), 3);
        let e = "é".as_bytes();
        assert_eq!(complete_utf8_prefix(&[b'a', e[0]]), 1);
        assert_eq!(complete_utf8_prefix(&[0xFF, b'a', e[0]]), 2);
        assert_eq!(complete_utf8_prefix(&[0xFF, b'a']), 2);
    }

    #[test]
    fn batch_caps() {
        let mut batch = Batch::new(attempt());
        batch.push(OutputStream::Stdout, &vec![b'x'; MAX_CHUNK + 10]);
        batch.push(OutputStream::Stderr, b"err");
        assert_eq!(batch.overflow, 10);
        let messages = batch.take(false);
        assert_eq!(messages.len(), 2);
        let ResultMessage::Output(first) = &messages[0] else {
            panic!("not output")
        };
        assert_eq!(first.seq, 0);
        assert_eq!(first.data.len(), MAX_CHUNK);
        let ResultMessage::Output(second) = &messages[1] else {
            panic!("not output")
        };
        assert_eq!((second.seq, second.stream), (1, OutputStream::Stderr));
        assert!(batch.take(false).is_empty());
        // Up to the per-attempt limit, then nothing.
        while !batch.exhausted() {
            batch.push(OutputStream::Stdout, &vec![b'y'; MAX_CHUNK]);
            batch.take(false);
        }
        assert_eq!(batch.sent, MAX_PER_ATTEMPT);
        batch.push(OutputStream::Stdout, b"more");
        assert!(batch.take(true).is_empty());
    }

    #[tokio::test]
    async fn never_blocks_and_flushes_at_the_end() {
        let (live, rx) = LiveOutput::channel(2);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let handle = spawn(attempt(), rx, move |m| {
            let sink = sink.clone();
            async move {
                if let ResultMessage::Output(c) = m {
                    sink.lock().unwrap().push(c.data);
                }
            }
        });
        for _ in 0..100 {
            live.offer(OutputStream::Stdout, b"a");
        }
        drop(live);
        handle.await.unwrap();
        let text: String = seen.lock().unwrap().concat();
        assert!(!text.is_empty() && text.len() <= 100, "{text}");
        assert!(text.chars().all(|c| c == 'a'));
    }
}
