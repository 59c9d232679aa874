//! A single-waiter wake-up flag for tasks on one thread (no allocation per notification).

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Context, Poll, Waker};

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
        poll_fn(|cx| self.poll_notified(cx)).await
    }

    /// Ready (and the notification taken) if one was sent; otherwise the task of `cx` is the
    /// waiter, woken by the next one.
    pub(crate) fn poll_notified(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.pending.replace(false) {
            return Poll::Ready(());
        }
        let old = self.waker.take();
        self.waker.set(Some(match old {
            Some(old) if old.will_wake(cx.waker()) => old,
            _ => cx.waker().clone(),
        }));
        Poll::Pending
    }
}
