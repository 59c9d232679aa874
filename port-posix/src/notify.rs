//! A single-waiter wake-up flag for tasks on one thread (no allocation per notification).

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Wakes the one task waiting on it; a notification sent while nobody waits is kept.
#[derive(Default)]
pub(crate) struct Notify {
    pending: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Notify {
    pub(crate) fn notify(&self) {
        self.pending.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    pub(crate) async fn notified(&self) {
        poll_fn(|cx| {
            if self.pending.replace(false) {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}
