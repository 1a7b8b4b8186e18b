//! Confirm lanes: channels that each carry at most one publish awaiting its confirm.
//!
//! Why: RabbitMQ sends `basic.return` for an unroutable mandatory message just before
//! its ack, but lapin hands each return to whichever confirm it resolves next (in hash
//! order within a `multiple` ack). With several mandatory publishes in flight on one
//! channel, a return can land on another message's confirm: a routable message reported
//! unroutable and vice versa (reproduced by the concurrent publish test). With one
//! message in flight per channel the pairing is exact, and concurrency comes from having
//! several lanes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lapin::{Channel, ChannelState, ErrorKind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::BrokerError;

/// How long an abandoned lane may take to settle its confirm before it is retired.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A pool of confirm-mode channels, each lent to one publish at a time.
pub(super) struct Lanes {
    idle: Mutex<Vec<Channel>>,
    /// One permit per idle-or-lent lane; closed when no lane is left.
    permits: Arc<Semaphore>,
    live: AtomicUsize,
}

/// A lane lent to one publish. Returned to the pool on drop, unless its channel died.
pub(super) struct Lane {
    channel: Option<Channel>,
    permit: Option<OwnedSemaphorePermit>,
    lanes: Arc<Lanes>,
    settled: bool,
}

impl Lanes {
    pub(super) fn new(channels: Vec<Channel>) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(channels.len())),
            live: AtomicUsize::new(channels.len()),
            idle: Mutex::new(channels),
        })
    }

    /// Waits for an idle lane; fails once every lane's channel has died.
    pub(super) async fn acquire(self: &Arc<Self>) -> Result<Lane, BrokerError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        let channel = self.lock_idle().pop().ok_or_else(closed)?;
        Ok(Lane {
            channel: Some(channel),
            permit: Some(permit),
            lanes: self.clone(),
            settled: false,
        })
    }

    /// Lanes not yet retired.
    pub(super) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Channel>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn put_back(&self, channel: Channel, permit: OwnedSemaphorePermit) {
        self.lock_idle().push(channel);
        drop(permit);
    }

    /// Removes a lane for good (its channel is closed or in an unknown state).
    fn retire(&self, permit: OwnedSemaphorePermit) {
        permit.forget();
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            tracing::warn!("every publisher lane is closed; the publisher must be rebuilt");
            self.permits.close();
        }
    }
}

impl Lane {
    pub(super) fn channel(&self) -> Result<&Channel, BrokerError> {
        self.channel.as_ref().ok_or_else(closed)
    }

    /// Marks the lane's publish as confirmed (or failed): nothing is in flight on it.
    pub(super) fn settled(&mut self) {
        self.settled = true;
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        let (Some(channel), Some(permit)) = (self.channel.take(), self.permit.take()) else {
            return;
        };
        let lanes = self.lanes.clone();
        if !channel.status().connected() {
            return lanes.retire(permit);
        }
        if self.settled {
            return lanes.put_back(channel, permit);
        }
        // Abandoned mid-confirm (cancelled or timed out): reuse only once it settled.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return lanes.retire(permit);
        };
        runtime.spawn(async move {
            let drained = tokio::time::timeout(DRAIN_TIMEOUT, channel.wait_for_confirms()).await;
            if matches!(drained, Ok(Ok(_))) && channel.status().connected() {
                lanes.put_back(channel, permit);
            } else {
                lanes.retire(permit);
            }
        });
    }
}

fn closed() -> BrokerError {
    BrokerError::Amqp(ErrorKind::InvalidChannelState(ChannelState::Closed, "publish").into())
}
