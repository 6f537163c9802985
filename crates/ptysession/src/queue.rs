//! The bounded queue between a session's output and one client: chunks of
//! output up to a byte budget, then one final event.
//!
//! The producer (the session's reader) never waits: a push that would exceed
//! the budget empties the queue and ends it with a "lagged" reason instead.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::{DetachReason, ExitStatus};

/// What a client receives, in order: output chunks, then at most one of
/// [`Event::Exited`] or [`Event::Detached`], after which there is nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Output of the command, in order, with no gap after the replay.
    Output(Bytes),
    /// The command exited and every byte it wrote has been delivered.
    Exited(ExitStatus),
    /// The client was detached; no more output follows.
    Detached(DetachReason),
}

/// A final event: the queue is closed after it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum End {
    Exited(ExitStatus),
    Detached(DetachReason),
}

impl From<End> for Event {
    fn from(end: End) -> Self {
        match end {
            End::Exited(status) => Event::Exited(status),
            End::Detached(reason) => Event::Detached(reason),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    chunks: VecDeque<Bytes>,
    queued_bytes: usize,
    /// The final event, once decided and not yet taken.
    end: Option<End>,
    /// Set once the final event is decided; nothing is queued after it.
    closed: bool,
}

/// One client's queue.
#[derive(Debug, Default)]
pub(crate) struct ClientQueue {
    inner: Mutex<Inner>,
    notify: Notify,
}

/// What [`ClientQueue::try_pop`] found.
#[derive(Debug)]
pub(crate) enum Pop {
    Event(Event),
    Empty,
    Finished,
}

impl ClientQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `chunk` unless that would put more than `limit_bytes` in the
    /// queue (an empty queue takes any chunk). Over the limit, the queue is
    /// emptied and ends with [`DetachReason::Lagged`]; returns `false`.
    pub(crate) fn push(&self, chunk: Bytes, limit_bytes: usize) -> bool {
        let mut inner = self.lock();
        if inner.closed {
            return false;
        }
        if inner.queued_bytes > 0 && inner.queued_bytes + chunk.len() > limit_bytes {
            inner.chunks = VecDeque::new();
            inner.queued_bytes = 0;
            inner.end = Some(End::Detached(DetachReason::Lagged { queue_bytes: limit_bytes }));
            inner.closed = true;
            drop(inner);
            self.notify.notify_one();
            return false;
        }
        inner.queued_bytes += chunk.len();
        inner.chunks.push_back(chunk);
        drop(inner);
        self.notify.notify_one();
        true
    }

    /// Ends the queue with `end` after what it holds, unless it has ended.
    pub(crate) fn close(&self, end: End) {
        let mut inner = self.lock();
        if !inner.closed {
            inner.closed = true;
            inner.end = Some(end);
            drop(inner);
            self.notify.notify_one();
        }
    }

    /// Ends the queue without a final event and drops what it holds (the
    /// client itself left).
    pub(crate) fn abandon(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.end = None;
        inner.chunks = VecDeque::new();
        inner.queued_bytes = 0;
    }

    /// Takes the next event without waiting.
    pub(crate) fn try_pop(&self) -> Pop {
        let mut inner = self.lock();
        if let Some(chunk) = inner.chunks.pop_front() {
            inner.queued_bytes -= chunk.len();
            return Pop::Event(Event::Output(chunk));
        }
        match inner.end.take() {
            Some(end) => Pop::Event(end.into()),
            None if inner.closed => Pop::Finished,
            None => Pop::Empty,
        }
    }

    /// Waits for the next event; `None` once the final event was taken.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is removed only when it is returned.
    pub(crate) async fn pop(&self) -> Option<Event> {
        loop {
            match self.try_pop() {
                Pop::Event(event) => return Some(event),
                Pop::Finished => return None,
                // A push between `try_pop` and here leaves a permit, so the
                // wake-up is not lost (there is one consumer).
                Pop::Empty => self.notify.notified().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_then_the_final_event_then_nothing() {
        let queue = ClientQueue::default();
        assert!(queue.push(Bytes::from_static(b"ab"), 10));
        queue.close(End::Exited(ExitStatus::Code(3)));
        assert!(!queue.push(Bytes::from_static(b"late"), 10));
        assert!(matches!(queue.try_pop(), Pop::Event(Event::Output(chunk)) if chunk == "ab"));
        assert!(matches!(queue.try_pop(), Pop::Event(Event::Exited(ExitStatus::Code(3)))));
        assert!(matches!(queue.try_pop(), Pop::Finished));
    }

    #[test]
    fn overflowing_the_budget_drops_the_backlog_and_reports_lag() {
        let queue = ClientQueue::default();
        // An empty queue takes a chunk larger than the budget.
        assert!(queue.push(Bytes::from(vec![0; 8]), 4));
        assert!(!queue.push(Bytes::from_static(b"x"), 4));
        assert!(matches!(queue.try_pop(), Pop::Event(Event::Detached(DetachReason::Lagged { queue_bytes: 4 }))));
        assert!(matches!(queue.try_pop(), Pop::Finished));
    }

    #[tokio::test]
    async fn pop_wakes_on_push() {
        let queue = std::sync::Arc::new(ClientQueue::default());
        let consumer = tokio::spawn({
            let queue = queue.clone();
            async move { queue.pop().await }
        });
        tokio::task::yield_now().await;
        queue.push(Bytes::from_static(b"hi"), 10);
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), consumer).await.unwrap().unwrap();
        assert_eq!(event, Some(Event::Output(Bytes::from_static(b"hi"))));
        queue.abandon();
        assert_eq!(queue.pop().await, None);
    }
}
