//! Group commit: callers hand items to one worker task, which handles whatever has
//! gathered while it was busy with the previous batch (or batches: a worker may run a
//! few at once) — never waiting for more, so a lone item goes alone — and answers each
//! caller on its own.
//!
//! The API's audit writer, the dispatcher's report batcher and its placements are built
//! on it.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// A handle on a batch worker; cheap to clone. The worker stops when every handle is
/// gone.
pub struct Batcher<T, R> {
    queue: mpsc::Sender<(T, oneshot::Sender<R>)>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Batcher {
            queue: self.queue.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the worker. `handle` gets up to `max_batch` items, in arrival order, and
    /// returns one answer per item, in the same order. At most `queue` items wait; a
    /// caller finding the queue full waits for room. One batch is handled at a time.
    pub fn start<F, Fut>(queue: usize, max_batch: usize, handle: F) -> Self
    where
        F: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        Self::start_concurrent(queue, max_batch, 1, handle)
    }

    /// Like [`Batcher::start`], with up to `concurrency` batches handled at once. A new
    /// batch starts as soon as an item waits and fewer than `concurrency` are running,
    /// so batches grow only once every slot is busy: more concurrency is less waiting
    /// and smaller batches.
    pub fn start_concurrent<F, Fut>(
        queue: usize,
        max_batch: usize,
        concurrency: usize,
        mut handle: F,
    ) -> Self
    where
        F: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let (sender, mut pending) = mpsc::channel::<(T, oneshot::Sender<R>)>(queue.max(1));
        let (max_batch, concurrency) = (max_batch.max(1), concurrency.max(1));
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            let mut running = JoinSet::new();
            loop {
                if running.len() >= concurrency {
                    running.join_next().await;
                    continue;
                }
                tokio::select! {
                    // A panicked batch leaves its callers without an answer (`None`).
                    Some(_) = running.join_next(), if !running.is_empty() => continue,
                    taken = pending.recv_many(&mut batch, max_batch) => {
                        if taken == 0 {
                            break;
                        }
                    }
                }
                let (items, callers): (Vec<T>, Vec<_>) = batch.drain(..).unzip();
                let answers = handle(items);
                running.spawn(async move {
                    for (caller, answer) in callers.into_iter().zip(answers.await) {
                        // The caller may have gone (a request the client gave up on).
                        drop(caller.send(answer));
                    }
                });
            }
            while running.join_next().await.is_some() {}
        });
        Batcher { queue: sender }
    }

    /// Hands `item` to the worker and waits for its answer. `None`: the worker is gone
    /// (it panicked), or gave no answer for this item.
    pub async fn submit(&self, item: T) -> Option<R> {
        let (caller, answer) = oneshot::channel();
        self.queue.send((item, caller)).await.ok()?;
        answer.await.ok()
    }
}

/// A [`Batcher`] whose items carry a key (a tenant): each batch is split by key, and
/// each key's share goes to `apply` — one call per key, the keys' calls side by side —
/// so one transaction serves one key's items.
pub struct KeyedBatcher<K, T, R> {
    batcher: Batcher<(K, T), Option<R>>,
}

impl<K, T, R> Clone for KeyedBatcher<K, T, R> {
    fn clone(&self) -> Self {
        KeyedBatcher {
            batcher: self.batcher.clone(),
        }
    }
}

impl<K, T, R> KeyedBatcher<K, T, R>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    T: Send + 'static,
    R: Send + 'static,
{
    /// Starts the worker ([`Batcher::start_concurrent`]). `apply` gets one key's items
    /// in arrival order and returns one answer per item, in the same order.
    pub fn start<F, Fut>(queue: usize, max_batch: usize, concurrency: usize, apply: F) -> Self
    where
        F: Fn(K, Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let apply = Arc::new(apply);
        let batcher = Batcher::start_concurrent(queue, max_batch, concurrency, move |items| {
            let apply = apply.clone();
            async move {
                let count = items.len();
                let shares = futures::future::join_all(split_by_key(items).into_iter().map(
                    |(key, positions, items)| {
                        let answers = apply(key, items);
                        async move { (positions, answers.await) }
                    },
                ))
                .await;
                let mut answers: Vec<Option<R>> = (0..count).map(|_| None).collect();
                for (positions, share) in shares {
                    for (i, answer) in positions.into_iter().zip(share) {
                        answers[i] = Some(answer);
                    }
                }
                answers
            }
        });
        KeyedBatcher { batcher }
    }

    /// Hands `item` to the worker under `key` and waits for its answer; `None` as for
    /// [`Batcher::submit`].
    pub async fn submit(&self, key: K, item: T) -> Option<R> {
        self.batcher.submit((key, item)).await.flatten()
    }
}

/// The items of each key, in arrival order, with their positions in `items`.
fn split_by_key<K: Clone + Eq + Hash, T>(items: Vec<(K, T)>) -> Vec<(K, Vec<usize>, Vec<T>)> {
    let mut shares: Vec<(K, Vec<usize>, Vec<T>)> = Vec::new();
    let mut index: HashMap<K, usize> = HashMap::new();
    for (i, (key, item)) in items.into_iter().enumerate() {
        let share = *index.entry(key.clone()).or_insert_with(|| {
            shares.push((key, Vec::new(), Vec::new()));
            shares.len() - 1
        });
        shares[share].1.push(i);
        shares[share].2.push(item);
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_caller_gets_the_answer_for_its_item() {
        let batcher = Batcher::start(16, 4, |items: Vec<u32>| async move {
            items.into_iter().map(|i| i * 10).collect()
        });
        let answers = futures::future::join_all((0..10).map(|i| batcher.submit(i))).await;
        let expected: Vec<Option<u32>> = (0..10).map(|i| Some(i * 10)).collect();
        assert_eq!(answers, expected);
    }

    #[tokio::test]
    async fn an_item_without_an_answer_gets_none() {
        let batcher = Batcher::start(16, 4, |_: Vec<u32>| async move { Vec::<u32>::new() });
        assert_eq!(batcher.submit(1).await, None);
    }

    #[tokio::test]
    async fn concurrent_batches_run_side_by_side() {
        // Each batch waits until two batches are running at once: with concurrency 2
        // both callers are answered; with one batch at a time neither would be.
        let running = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let batcher = Batcher::start_concurrent(16, 1, 2, move |items: Vec<u32>| {
            let running = running.clone();
            async move {
                running.wait().await;
                items
            }
        });
        let both = futures::future::join(batcher.submit(1), batcher.submit(2));
        let answers = tokio::time::timeout(std::time::Duration::from_secs(5), both)
            .await
            .expect("two batches at once");
        assert_eq!(answers, (Some(1), Some(2)));
    }

    #[test]
    fn items_are_split_by_key_in_arrival_order() {
        let shares = split_by_key(vec![("a", 1), ("b", 2), ("a", 3), ("b", 4), ("c", 5)]);
        assert_eq!(
            shares,
            vec![
                ("a", vec![0, 2], vec![1, 3]),
                ("b", vec![1, 3], vec![2, 4]),
                ("c", vec![4], vec![5]),
            ]
        );
    }

    #[tokio::test]
    async fn each_caller_gets_the_answer_of_its_keys_call() {
        let batcher =
            KeyedBatcher::start(64, 8, 2, |key: &'static str, items: Vec<u32>| async move {
                items
                    .into_iter()
                    .map(|i| format!("{key}:{i}"))
                    .collect::<Vec<_>>()
            });
        let key = |i: u32| if i.is_multiple_of(3) { "a" } else { "b" };
        let answers =
            futures::future::join_all((0..20u32).map(|i| batcher.submit(key(i), i))).await;
        let expected: Vec<Option<String>> = (0..20u32)
            .map(|i| Some(format!("{}:{i}", key(i))))
            .collect();
        assert_eq!(answers, expected);
    }
}
