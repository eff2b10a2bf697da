//! The node's stop signal: set once from the thread that stops the gateway, awaited by
//! shard tasks on their own executors, so an idle shard sleeps until something happens
//! instead of waking every few milliseconds to look at a flag.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Poll, Waker};

/// Set once when the node stops; [`Shutdown::stopped`] completes from then on.
#[derive(Debug, Default)]
pub(super) struct Shutdown {
    stopping: AtomicBool,
    /// Tasks waiting in [`Shutdown::stopped`], one waker per task.
    waiting: Mutex<Vec<Waker>>,
}

impl Shutdown {
    /// Whether the node is stopping.
    pub(super) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Stops the node: every task waiting in [`Shutdown::stopped`] is woken, whichever
    /// thread it runs on.
    pub(super) fn stop(&self) {
        let waiting = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            self.stopping.store(true, Ordering::Release);
            std::mem::take(&mut *waiting)
        };
        waiting.into_iter().for_each(Waker::wake);
    }

    /// Completes once the node stops. Dropping it early leaves its task's waker behind
    /// until the next wait replaces it or the node stops; a task waits with one waker, so
    /// the list holds at most one per task.
    pub(super) async fn stopped(&self) {
        poll_fn(|cx| {
            // Checked under the lock `stop` takes, so a stop cannot slip in between the
            // check and the registration.
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            if self.is_stopping() {
                return Poll::Ready(());
            }
            match waiting.iter_mut().find(|w| w.will_wake(cx.waker())) {
                Some(w) => w.clone_from(cx.waker()),
                None => waiting.push(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn a_stop_from_another_thread_wakes_every_waiting_executor() {
        let shutdown = Arc::new(Shutdown::default());
        let (done, finished) = std::sync::mpsc::channel();
        for i in 0..2 {
            let (shutdown, done) = (shutdown.clone(), done.clone());
            glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .name(&format!("waiter-{i}"))
                .spawn(move || async move {
                    // Waiting twice from the same task keeps one waker, not two.
                    let first = glommio::timer::sleep(Duration::from_millis(1));
                    futures_lite::future::or(shutdown.stopped(), first).await;
                    shutdown.stopped().await;
                    let _ = done.send(shutdown.is_stopping());
                })
                .expect("executor");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while shutdown.waiting.lock().expect("lock").len() < 2 {
            assert!(Instant::now() < deadline, "the waiters never waited");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Time for both to be in their second wait.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(shutdown.waiting.lock().expect("lock").len(), 2);
        assert!(
            finished.try_recv().is_err(),
            "a waiter finished before the stop"
        );
        shutdown.stop();
        for _ in 0..2 {
            let stopping = finished
                .recv_timeout(Duration::from_secs(5))
                .expect("the stop woke every waiter");
            assert!(stopping);
        }
        // Once stopped, a new wait completes at once.
        futures_lite::future::block_on(shutdown.stopped());
    }
}
