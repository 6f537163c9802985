//! The bounded queue between a session's output and one client: chunks of
//! output up to a byte budget, then one final event.
//!
//! The producer (the session's reader) never waits: a push that would exceed
//! the budget empties the queue and either ends it with a "lagged" reason or
//! (with the screen model) marks it as waiting for a repaint: output queued
//! after that point is held back until the repaint arrives and goes first.

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
    /// Bytes that draw the session's screen as it is at this point of the
    /// output, synthesised from the screen model: the first event of a
    /// client attached with `Session::attach_screen` (feature `screen`),
    /// and what a client that fell behind gets in place of the output it
    /// missed. [`Output`](Self::Output) continues exactly after it.
    Repaint(Bytes),
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
    /// The generation of the repaint this queue waits for; output is held
    /// back meanwhile.
    awaiting: Option<u64>,
    /// The last generation handed out.
    generation: u64,
    /// A delivered repaint, taken before any output but the chunks
    /// queued before it was asked for.
    repaint: Option<Bytes>,
    /// How many chunks at the front precede the awaited repaint (they are
    /// delivered while it is awaited).
    before_repaint: usize,
}

/// What a client that overflows its queue gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnLag {
    /// Detached with [`DetachReason::Lagged`].
    Detach,
    /// Its backlog dropped; it waits for a repaint.
    #[cfg_attr(not(feature = "screen"), allow(dead_code))]
    Resync,
}

/// What [`ClientQueue::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// The backlog was dropped: the repaint of this generation is due.
    #[cfg_attr(not(feature = "screen"), allow(dead_code))]
    Resync(u64),
    /// The queue has ended (lagged now, or earlier).
    Ended,
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
    /// emptied and, following `on_lag`, ends with [`DetachReason::Lagged`]
    /// or waits for a repaint.
    pub(crate) fn push(&self, chunk: Bytes, limit_bytes: usize, on_lag: OnLag) -> Pushed {
        let mut inner = self.lock();
        if inner.closed {
            return Pushed::Ended;
        }
        if inner.queued_bytes > 0 && inner.queued_bytes + chunk.len() > limit_bytes {
            inner.chunks = VecDeque::new();
            inner.queued_bytes = 0;
            let pushed = match on_lag {
                OnLag::Detach => {
                    inner.end = Some(End::Detached(DetachReason::Lagged { queue_bytes: limit_bytes }));
                    inner.closed = true;
                    Pushed::Ended
                }
                OnLag::Resync => Pushed::Resync(Self::await_in(&mut inner)),
            };
            drop(inner);
            self.notify.notify_one();
            return pushed;
        }
        inner.queued_bytes += chunk.len();
        inner.chunks.push_back(chunk);
        drop(inner);
        self.notify.notify_one();
        Pushed::Queued
    }

    /// From now on, output is held back until the repaint of the returned
    /// generation is delivered.
    #[cfg_attr(not(feature = "screen"), allow(dead_code))]
    pub(crate) fn await_repaint(&self) -> u64 {
        Self::await_in(&mut self.lock())
    }

    /// Asks for a repaint after the output queued so far: that output is
    /// still delivered, what follows is held back until the repaint of
    /// the returned generation is delivered. `Ok(None)` when a repaint is
    /// awaited already (it comes, and output continues exactly after it);
    /// `Err(())` once the queue has ended.
    #[cfg(feature = "screen")]
    pub(crate) fn repaint_after_queued(&self) -> Result<Option<u64>, ()> {
        let mut inner = self.lock();
        if inner.closed {
            return Err(());
        }
        if inner.awaiting.is_some() {
            return Ok(None);
        }
        let generation = Self::await_in(&mut inner);
        inner.before_repaint = inner.chunks.len();
        Ok(Some(generation))
    }

    fn await_in(inner: &mut Inner) -> u64 {
        inner.generation += 1;
        inner.awaiting = Some(inner.generation);
        inner.repaint = None;
        inner.before_repaint = 0;
        inner.generation
    }

    /// Whether the repaint of `generation` is still wanted.
    #[cfg_attr(not(feature = "screen"), allow(dead_code))]
    pub(crate) fn awaits(&self, generation: u64) -> bool {
        self.lock().awaiting == Some(generation)
    }

    /// Delivers the repaint of `generation`, ahead of the output queued
    /// since it was asked for; ignored if a newer one is due or the client
    /// left.
    #[cfg_attr(not(feature = "screen"), allow(dead_code))]
    pub(crate) fn deliver_repaint(&self, generation: u64, repaint: Bytes) {
        let mut inner = self.lock();
        if inner.awaiting != Some(generation) {
            return;
        }
        inner.awaiting = None;
        inner.repaint = Some(repaint);
        drop(inner);
        self.notify.notify_one();
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
        inner.awaiting = None;
        inner.repaint = None;
        inner.before_repaint = 0;
    }

    /// Takes the next event without waiting.
    pub(crate) fn try_pop(&self) -> Pop {
        let mut inner = self.lock();
        if inner.before_repaint > 0
            && let Some(chunk) = inner.chunks.pop_front()
        {
            inner.before_repaint -= 1;
            inner.queued_bytes -= chunk.len();
            return Pop::Event(Event::Output(chunk));
        }
        if let Some(repaint) = inner.repaint.take() {
            return Pop::Event(Event::Repaint(repaint));
        }
        if inner.awaiting.is_some() {
            return Pop::Empty;
        }
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
        assert_eq!(queue.push(Bytes::from_static(b"ab"), 10, OnLag::Detach), Pushed::Queued);
        queue.close(End::Exited(ExitStatus::Code(3)));
        assert_eq!(queue.push(Bytes::from_static(b"late"), 10, OnLag::Detach), Pushed::Ended);
        assert!(matches!(queue.try_pop(), Pop::Event(Event::Output(chunk)) if chunk == "ab"));
        assert!(matches!(queue.try_pop(), Pop::Event(Event::Exited(ExitStatus::Code(3)))));
        assert!(matches!(queue.try_pop(), Pop::Finished));
    }

    #[test]
    fn overflowing_the_budget_drops_the_backlog_and_reports_lag() {
        let queue = ClientQueue::default();
        // An empty queue takes a chunk larger than the budget.
        assert_eq!(queue.push(Bytes::from(vec![0; 8]), 4, OnLag::Detach), Pushed::Queued);
        assert_eq!(queue.push(Bytes::from_static(b"x"), 4, OnLag::Detach), Pushed::Ended);
        assert!(matches!(queue.try_pop(), Pop::Event(Event::Detached(DetachReason::Lagged { queue_bytes: 4 }))));
        assert!(matches!(queue.try_pop(), Pop::Finished));
    }

    #[test]
    fn overflowing_with_resync_holds_output_until_the_repaint() {
        let queue = ClientQueue::default();
        assert_eq!(queue.push(Bytes::from(vec![0; 8]), 4, OnLag::Resync), Pushed::Queued);
        let Pushed::Resync(first) = queue.push(Bytes::from_static(b"x"), 4, OnLag::Resync) else { panic!() };
        assert_eq!(queue.push(Bytes::from_static(b"ab"), 4, OnLag::Resync), Pushed::Queued);
        assert!(matches!(queue.try_pop(), Pop::Empty));
        // Falling behind again while waiting asks for a newer repaint.
        assert_eq!(queue.push(Bytes::from_static(b"cde"), 4, OnLag::Resync), Pushed::Resync(first + 1));
        queue.deliver_repaint(first, Bytes::from_static(b"stale"));
        assert!(matches!(queue.try_pop(), Pop::Empty));
        assert!(queue.awaits(first + 1));
        assert_eq!(queue.push(Bytes::from_static(b"f"), 4, OnLag::Resync), Pushed::Queued);
        queue.close(End::Exited(ExitStatus::Code(0)));
        queue.deliver_repaint(first + 1, Bytes::from_static(b"screen"));
        assert!(matches!(queue.try_pop(), Pop::Event(Event::Repaint(bytes)) if bytes == "screen"));
        assert!(matches!(queue.try_pop(), Pop::Event(Event::Output(bytes)) if bytes == "f"));
        assert!(matches!(queue.try_pop(), Pop::Event(Event::Exited(_))));
        assert!(matches!(queue.try_pop(), Pop::Finished));
    }

    #[cfg(feature = "screen")]
    #[test]
    fn a_repaint_asked_for_comes_after_the_output_queued_before() {
        let queue = ClientQueue::default();
        assert_eq!(queue.push(Bytes::from_static(b"a"), 64, OnLag::Resync), Pushed::Queued);
        assert_eq!(queue.push(Bytes::from_static(b"b"), 64, OnLag::Resync), Pushed::Queued);
        let Ok(Some(generation)) = queue.repaint_after_queued() else { panic!() };
        assert_eq!(queue.repaint_after_queued(), Ok(None), "one repaint awaited at a time");
        assert_eq!(queue.push(Bytes::from_static(b"c"), 64, OnLag::Resync), Pushed::Queued);
        assert!(matches!(queue.try_pop(), Pop::Event(Event::Output(bytes)) if bytes == "a"));
        assert!(matches!(queue.try_pop(), Pop::Event(Event::Output(bytes)) if bytes == "b"));
        assert!(matches!(queue.try_pop(), Pop::Empty), "what follows waits for the repaint");
        queue.deliver_repaint(generation, Bytes::from_static(b"screen"));
        assert!(matches!(queue.try_pop(), Pop::Event(Event::Repaint(bytes)) if bytes == "screen"));
        assert!(matches!(queue.try_pop(), Pop::Event(Event::Output(bytes)) if bytes == "c"));
        queue.close(End::Exited(ExitStatus::Code(0)));
        assert!(matches!(queue.try_pop(), Pop::Event(Event::Exited(_))));
        assert_eq!(queue.repaint_after_queued(), Err(()));
    }

    #[tokio::test]
    async fn pop_wakes_on_push() {
        let queue = std::sync::Arc::new(ClientQueue::default());
        let consumer = tokio::spawn({
            let queue = queue.clone();
            async move { queue.pop().await }
        });
        tokio::task::yield_now().await;
        queue.push(Bytes::from_static(b"hi"), 10, OnLag::Detach);
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), consumer).await.unwrap().unwrap();
        assert_eq!(event, Some(Event::Output(Bytes::from_static(b"hi"))));
        queue.abandon();
        assert_eq!(queue.pop().await, None);
    }
}
