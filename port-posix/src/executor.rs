//! The tasks of one worker thread: spawned, scheduled when woken, run in turn.
//!
//! A run queue of [`async_task`] tasks and no more. `async-executor` (of the smol family, which
//! DESIGN.md names and this module replaces) also keeps every live task in a slab so that it
//! can cancel them when the executor is dropped, and wraps each future to remove it from there:
//! about 40 B per task, that is per connection, and 20 KB of code. Here nothing outlives the
//! executor that matters: [`LocalExecutor::run`] returns when the worker stops, the process
//! ends after, and a task woken after the executor is gone is dropped by its waker
//! ([`RunQueue::push`]).
//!
//! Wakers are `Send`: a wake from another thread queues the task under the queue's lock and
//! wakes the thread's [`crate::reactor::block_on`]; the task still runs on its own thread
//! (`async_task::spawn_local` checks that).

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use async_task::Runnable;

/// Tasks run before the thread looks at its sockets again, so that tasks that keep waking
/// themselves do not starve the others' input (`async-executor` uses 200).
const RUNS_PER_TURN: usize = 200;

/// Runs the tasks spawned on it, on the thread that created it.
pub(crate) struct LocalExecutor {
    queue: Arc<RunQueue>,
}

/// The tasks woken and not yet run, and how to wake the thread that runs them.
#[derive(Default)]
struct RunQueue {
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    runnables: VecDeque<Runnable>,
    /// Wakes the thread's `block_on` (set while [`LocalExecutor::run`] runs).
    thread: Option<Waker>,
    /// The executor is gone: tasks woken from now on are dropped.
    closed: bool,
}

impl RunQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A task that panicked while the lock was held left no broken state: a queue.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Schedules a woken task.
    fn push(&self, runnable: Runnable) {
        let mut state = self.lock();
        if state.closed {
            drop(state);
            // Dropping the runnable drops its future (outside the lock: it may wake others).
            drop(runnable);
            return;
        }
        state.runnables.push_back(runnable);
        // Under the lock, by reference (no clone per wake): the thread's waker is
        // `block_on`'s, which sets a flag and, while the thread sleeps, writes an eventfd.
        if let Some(thread) = &state.thread {
            thread.wake_by_ref();
        }
    }

    fn pop(&self) -> Option<Runnable> {
        self.lock().runnables.pop_front()
    }
}

impl LocalExecutor {
    pub(crate) fn new() -> LocalExecutor {
        LocalExecutor {
            queue: Arc::new(RunQueue::default()),
        }
    }

    /// Starts `future` as a task of this executor; it runs while [`LocalExecutor::run`] does.
    /// The task runs to completion on its own (nothing waits for its result).
    ///
    /// Boxed, so that the task code is compiled once for every such future (a worker's few
    /// long-lived tasks; 1 to 2 KB of code each otherwise).
    pub(crate) fn spawn(&self, future: impl Future<Output = ()> + 'static) {
        let future: Pin<Box<dyn Future<Output = ()>>> = Box::pin(future);
        self.spawn_unboxed(future);
    }

    /// [`LocalExecutor::spawn`] without the box: for the task of every connection, whose
    /// memory counts (one allocation instead of two).
    pub(crate) fn spawn_unboxed(&self, future: impl Future<Output = ()> + 'static) {
        let queue = self.queue.clone();
        let (runnable, task) =
            async_task::spawn_local(future, move |runnable| queue.push(runnable));
        task.detach();
        runnable.schedule();
    }

    /// Runs the tasks until `future` completes, and returns its output.
    pub(crate) async fn run<T>(&self, future: impl Future<Output = T>) -> T {
        let mut future = pin!(future);
        poll_fn(|context| {
            {
                let mut state = self.queue.lock();
                if !state
                    .thread
                    .as_ref()
                    .is_some_and(|thread| thread.will_wake(context.waker()))
                {
                    state.thread = Some(context.waker().clone());
                }
            }
            if let Poll::Ready(output) = future.as_mut().poll(context) {
                return Poll::Ready(output);
            }
            for _ in 0..RUNS_PER_TURN {
                match self.queue.pop() {
                    Some(runnable) => {
                        runnable.run();
                    }
                    None => return Poll::Pending,
                }
            }
            // More to run: let the thread collect its sockets' events first, then go on.
            context.waker().wake_by_ref();
            Poll::Pending
        })
        .await
    }
}

impl Drop for LocalExecutor {
    fn drop(&mut self) {
        let runnables = {
            let mut state = self.queue.lock();
            state.closed = true;
            state.thread = None;
            std::mem::take(&mut state.runnables)
        };
        // Outside the lock: dropping a task's future may wake others.
        drop(runnables);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Notify;
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    #[test]
    fn tasks_run_until_the_main_future_completes() {
        let executor = LocalExecutor::new();
        let log = Rc::new(RefCell::new(Vec::new()));
        let done = Rc::new(Notify::default());
        let ping = Rc::new(Notify::default());
        {
            let (log, ping) = (log.clone(), ping.clone());
            executor.spawn(async move {
                for round in 0..3 {
                    ping.notified().await;
                    log.borrow_mut().push(round);
                }
            });
        }
        {
            let (ping, done) = (ping.clone(), done.clone());
            executor.spawn(async move {
                for _ in 0..3 {
                    ping.notify();
                    futures_lite::future::yield_now().await;
                }
                done.notify();
            });
        }
        crate::reactor::block_on(executor.run(done.notified())).unwrap();
        assert_eq!(*log.borrow(), [0, 1, 2]);
    }

    #[test]
    fn a_task_that_keeps_waking_itself_does_not_starve_the_main_future() {
        let executor = LocalExecutor::new();
        let spins = Rc::new(Cell::new(0u64));
        {
            let spins = spins.clone();
            executor.spawn(async move {
                loop {
                    spins.set(spins.get() + 1);
                    futures_lite::future::yield_now().await;
                }
            });
        }
        // The timer fires through the reactor, which the spinning task must let run.
        crate::reactor::block_on(executor.run(crate::reactor::Timer::after(
            std::time::Duration::from_millis(20),
        )))
        .unwrap();
        assert!(spins.get() > RUNS_PER_TURN as u64);
    }

    #[test]
    fn a_wake_from_another_thread_runs_the_task_on_its_own() {
        let executor = LocalExecutor::new();
        let (send, receive) = std::sync::mpsc::channel::<Waker>();
        let woken = Rc::new(Cell::new(false));
        let thread = std::thread::current().id();
        {
            let woken = woken.clone();
            executor.spawn(async move {
                let mut sent = false;
                poll_fn(|context| {
                    if sent {
                        assert_eq!(std::thread::current().id(), thread);
                        return Poll::Ready(());
                    }
                    sent = true;
                    send.send(context.waker().clone()).unwrap();
                    Poll::Pending
                })
                .await;
                woken.set(true);
            });
        }
        let waker_thread = std::thread::spawn(move || receive.recv().unwrap().wake());
        let woken_check = woken.clone();
        crate::reactor::block_on(executor.run(poll_fn(|context| {
            if woken_check.get() {
                Poll::Ready(())
            } else {
                // Polled again when the task ran (its wake also wakes this thread).
                context.waker().wake_by_ref();
                Poll::Pending
            }
        })))
        .unwrap();
        waker_thread.join().unwrap();
        assert!(woken.get());
    }

    #[test]
    fn a_task_woken_after_the_executor_is_gone_is_dropped() {
        let executor = LocalExecutor::new();
        let (send, receive) = std::sync::mpsc::channel::<Waker>();
        let dropped = Rc::new(Cell::new(false));
        struct OnDrop(Rc<Cell<bool>>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.set(true);
            }
        }
        {
            let guard = OnDrop(dropped.clone());
            executor.spawn(async move {
                let _guard = guard;
                poll_fn(|context| {
                    send.send(context.waker().clone()).unwrap();
                    Poll::<()>::Pending
                })
                .await;
            });
        }
        crate::reactor::block_on(executor.run(futures_lite::future::yield_now())).unwrap();
        let waker = receive.recv().unwrap();
        drop(executor);
        assert!(!dropped.get());
        waker.wake();
        assert!(dropped.get());
    }
}
