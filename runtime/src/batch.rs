//! Group commit: callers hand items to one worker task, which handles whatever has
//! gathered while it was busy with the previous batch — never waiting for more, so a
//! lone item goes alone — and answers each caller on its own.
//!
//! The API's audit writer and the dispatcher's report batcher are built on it.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

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
    /// caller finding the queue full waits for room.
    pub fn start<F, Fut>(queue: usize, max_batch: usize, mut handle: F) -> Self
    where
        F: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<R>> + Send,
    {
        let (sender, mut pending) = mpsc::channel::<(T, oneshot::Sender<R>)>(queue.max(1));
        let max_batch = max_batch.max(1);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            while pending.recv_many(&mut batch, max_batch).await > 0 {
                let (items, callers): (Vec<T>, Vec<_>) = batch.drain(..).unzip();
                let answers = handle(items).await;
                for (caller, answer) in callers.into_iter().zip(answers) {
                    // The caller may have gone (a request the client gave up on).
                    drop(caller.send(answer));
                }
            }
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
}
