//! Admission for one route: at most `max_instances` requests run at once, at most `queue` wait
//! (FIFO) behind them, each for at most the request's deadline. A full queue sheds (429 at
//! once) or blocks (wait up to `block_timeout_ms` for a place, then 503).
//!
//! Two tokio semaphores do the counting; tokio's semaphore is fair, so waiters are served in
//! arrival order and a newcomer can never overtake the queue.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::manifest::{Backpressure, Limits};

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The queue was full and the route sheds: 429.
    Shed,
    /// The queue stayed full for `block_timeout_ms` (block), or the request's deadline passed
    /// while queued: 503.
    QueueTimeout,
}

/// Capacity shared by every route: the server-wide cap on live instances.
pub type GlobalCap = Arc<Semaphore>;

pub struct Pool {
    limits: Limits,
    running: Arc<Semaphore>,
    queue: Arc<Semaphore>,
    global: GlobalCap,
}

/// Held while a request runs; dropping it frees the instance slot.
pub struct Admitted {
    _route: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
    /// Time spent waiting before running.
    pub waited: Duration,
}

/// Figures for the API and metrics.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub struct PoolFigures {
    pub capacity: u32,
    pub busy: u32,
    pub queue_capacity: u32,
    pub queued: u32,
}

impl Pool {
    pub fn new(limits: Limits, global: GlobalCap) -> Self {
        Self {
            running: Arc::new(Semaphore::new(limits.max_instances as usize)),
            queue: Arc::new(Semaphore::new(limits.queue as usize)),
            limits,
            global,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Waits for a slot under the route's rules; `deadline` bounds the whole wait.
    pub async fn admit(&self, deadline: Instant) -> Result<Admitted, Rejection> {
        let started = Instant::now();
        let route = match Arc::clone(&self.running).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let place = self.queue_place(deadline).await?;
                let permit =
                    tokio::time::timeout_at(deadline, Arc::clone(&self.running).acquire_owned())
                        .await
                        .map_err(|_| Rejection::QueueTimeout)?
                        .map_err(|_| Rejection::QueueTimeout)?;
                drop(place);
                permit
            }
        };
        // Route shares may add up to more than the server-wide cap; then requests wait here,
        // holding their route's slot, so they still queue behind their own route.
        let global = tokio::time::timeout_at(deadline, Arc::clone(&self.global).acquire_owned())
            .await
            .map_err(|_| Rejection::QueueTimeout)?
            .map_err(|_| Rejection::QueueTimeout)?;
        Ok(Admitted {
            _route: route,
            _global: global,
            waited: started.elapsed(),
        })
    }

    async fn queue_place(&self, deadline: Instant) -> Result<OwnedSemaphorePermit, Rejection> {
        if let Ok(place) = Arc::clone(&self.queue).try_acquire_owned() {
            return Ok(place);
        }
        match self.limits.backpressure {
            Backpressure::Shed => Err(Rejection::Shed),
            Backpressure::Block => {
                let until = deadline.min(Instant::now() + self.limits.block_timeout());
                tokio::time::timeout_at(until, Arc::clone(&self.queue).acquire_owned())
                    .await
                    .map_err(|_| Rejection::QueueTimeout)?
                    .map_err(|_| Rejection::QueueTimeout)
            }
        }
    }

    pub fn figures(&self) -> PoolFigures {
        PoolFigures {
            capacity: self.limits.max_instances,
            busy: self.limits.max_instances
                - self
                    .running
                    .available_permits()
                    .min(self.limits.max_instances as usize) as u32,
            queue_capacity: self.limits.queue,
            queued: self.limits.queue
                - self
                    .queue
                    .available_permits()
                    .min(self.limits.queue as usize) as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(
        max_instances: u32,
        queue: u32,
        backpressure: Backpressure,
        block_timeout_ms: u64,
    ) -> Limits {
        Limits {
            max_instances,
            queue,
            backpressure,
            block_timeout_ms,
            timeout_ms: 10_000,
            memory_mb: 16,
            max_request_body_bytes: 1024,
            max_response_body_bytes: 1024,
            stack_kb: 512,
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[tokio::test(start_paused = true)]
    async fn shed_admits_capacity_plus_queue_and_rejects_the_rest_at_once() {
        let pool = Arc::new(Pool::new(
            limits(2, 3, Backpressure::Shed, 0),
            Arc::new(Semaphore::new(100)),
        ));
        let running: Vec<_> = [
            pool.admit(far()).await.unwrap(),
            pool.admit(far()).await.unwrap(),
        ]
        .into();
        let mut queued = Vec::new();
        for _ in 0..3 {
            let pool = Arc::clone(&pool);
            queued.push(tokio::spawn(
                async move { pool.admit(far()).await.map(|_| ()) },
            ));
        }
        tokio::task::yield_now().await;
        assert_eq!(pool.figures().queued, 3);
        assert_eq!(pool.admit(far()).await.err(), Some(Rejection::Shed));
        drop(running);
        for q in queued {
            assert!(q.await.unwrap().is_ok());
        }
        assert_eq!(pool.figures().busy, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn block_waits_for_a_queue_place_then_gives_up() {
        let pool = Arc::new(Pool::new(
            limits(1, 1, Backpressure::Block, 50),
            Arc::new(Semaphore::new(100)),
        ));
        let _running = pool.admit(far()).await.unwrap();
        let waiting = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.admit(far()).await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        let started = Instant::now();
        assert_eq!(pool.admit(far()).await.err(), Some(Rejection::QueueTimeout));
        assert_eq!(started.elapsed(), Duration::from_millis(50));
        waiting.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_request_gives_up_at_its_deadline() {
        let pool = Pool::new(
            limits(1, 5, Backpressure::Block, 50),
            Arc::new(Semaphore::new(100)),
        );
        let _running = pool.admit(far()).await.unwrap();
        let deadline = Instant::now() + Duration::from_millis(300);
        assert_eq!(
            pool.admit(deadline).await.err(),
            Some(Rejection::QueueTimeout)
        );
        assert_eq!(pool.figures().queued, 0, "the queue place is given back");
    }

    #[tokio::test(start_paused = true)]
    async fn the_global_cap_bounds_all_routes_together() {
        let global = Arc::new(Semaphore::new(1));
        let a = Pool::new(limits(4, 4, Backpressure::Block, 50), Arc::clone(&global));
        let b = Pool::new(limits(4, 4, Backpressure::Block, 50), Arc::clone(&global));
        let held = a.admit(far()).await.unwrap();
        let deadline = Instant::now() + Duration::from_millis(100);
        assert_eq!(b.admit(deadline).await.err(), Some(Rejection::QueueTimeout));
        drop(held);
        assert!(b.admit(far()).await.is_ok());
    }
}
