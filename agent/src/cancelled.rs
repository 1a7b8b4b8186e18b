//! Memory of cancel orders, for assignments that have not started here.
//!
//! A task cancelled while `routing` may still have its assignment waiting in this
//! agent's queue (behind the prefetch window, or held while every slot is busy), or
//! still on its way from a dispatcher: the control queue is separate, so the `cancel`
//! order can overtake the assignment. The control consumer remembers every cancelled
//! id here; when the assignment is handled, the worker finds it, acks the delivery and
//! drops it without running it.
//!
//! The same memory, keyed by `(task, attempt)`, holds revoked attempts: a dispatcher
//! that re-placed the attempts waiting for a lost agent tells the agent (should it come
//! back) not to start them ([`Revoked`]).
//!
//! Bounded both ways: at most [`MAX_IDS`] ids, each kept at most [`KEEP_FOR`]. An
//! assignment that has not shown up by then is not coming.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ris_schemas::ids::TaskId;

/// Most ids remembered; the oldest go first.
pub const MAX_IDS: usize = 10_000;
/// How long an id is remembered.
pub const KEEP_FOR: Duration = Duration::from_secs(3600);

/// Ids of cancelled tasks.
pub type Cancelled = Remembered<TaskId>;
/// Revoked attempts: `(task, attempt)`.
pub type Revoked = Remembered<(TaskId, u32)>;

/// Keys remembered for a while, oldest first. Cheap to share behind an `Arc`.
pub struct Remembered<K> {
    max: usize,
    keep_for: Duration,
    inner: Mutex<Memory<K>>,
}

struct Memory<K> {
    /// In the order they were remembered, with the time.
    order: VecDeque<(Instant, K)>,
    ids: HashSet<K>,
}

impl<K> Default for Memory<K> {
    fn default() -> Self {
        Self {
            order: VecDeque::new(),
            ids: HashSet::new(),
        }
    }
}

impl<K: Copy + Eq + Hash> Default for Remembered<K> {
    fn default() -> Self {
        Self::with_limits(MAX_IDS, KEEP_FOR)
    }
}

impl<K: Copy + Eq + Hash> Remembered<K> {
    pub fn with_limits(max: usize, keep_for: Duration) -> Self {
        Self {
            max: max.max(1),
            keep_for,
            inner: Mutex::new(Memory::default()),
        }
    }

    /// Remembers `task`. A repeat keeps the first time.
    pub fn remember(&self, task: K) {
        let now = Instant::now();
        let mut memory = self.lock();
        memory.forget_expired(now, self.keep_for);
        if memory.ids.insert(task) {
            memory.order.push_back((now, task));
        }
        while memory.order.len() > self.max {
            memory.pop_oldest();
        }
    }

    /// Whether `task` is remembered.
    pub fn contains(&self, task: K) -> bool {
        let mut memory = self.lock();
        memory.forget_expired(Instant::now(), self.keep_for);
        memory.ids.contains(&task)
    }

    pub fn len(&self) -> usize {
        self.lock().ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory<K>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Copy + Eq + Hash> Memory<K> {
    fn forget_expired(&mut self, now: Instant, keep_for: Duration) {
        while self
            .order
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= keep_for)
        {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, id)) = self.order.pop_front() {
            self.ids.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_full_then_forgets_the_oldest() {
        let cancelled = Cancelled::with_limits(3, KEEP_FOR);
        let ids: Vec<TaskId> = (0..4).map(|_| TaskId::new()).collect();
        for id in &ids[..3] {
            cancelled.remember(*id);
        }
        cancelled.remember(ids[0]); // a repeat takes no extra room
        assert_eq!(cancelled.len(), 3);
        cancelled.remember(ids[3]);
        assert!(!cancelled.contains(ids[0]));
        assert!(ids[1..].iter().all(|id| cancelled.contains(*id)));
        assert!(!cancelled.contains(TaskId::new()));
    }

    #[test]
    fn forgets_after_the_keep_time() {
        let cancelled = Cancelled::with_limits(10, Duration::from_millis(30));
        let id = TaskId::new();
        cancelled.remember(id);
        assert!(cancelled.contains(id));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!cancelled.contains(id));
        assert!(cancelled.is_empty());
    }
}
