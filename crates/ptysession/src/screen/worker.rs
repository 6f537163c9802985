//! [`Feed`]: the session's screen model on a thread of its own, so that the
//! terminal's reader never parses.
//!
//! The reader appends every output chunk to the feed's work queue in the
//! same critical section (the session's `inner` lock) in which it appends
//! the chunk to the ring and to the clients' queues; resizes and repaint
//! requests are appended under that lock too. The work queue therefore
//! holds output, resizes and requests in exactly the order the clients see
//! them, and a repaint rendered when the worker reaches a request shows the
//! screen at exactly the point where that client's queued output starts:
//! no gap, no duplicate, however far behind the worker runs.
//!
//! The reader waits only when the work queue holds more than its bound of
//! output ([`Options::screen_backlog_bytes`](crate::Options::screen_backlog_bytes)):
//! bursts up to the bound cost it nothing, sustained output runs at the
//! emulator's pace.
//!
//! Locks: `work` (the queue) and `screen` (the emulator) are never held
//! together by the worker; the session takes `work` inside its `inner`
//! lock, never `screen`.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};

use super::{Kind, Screen};
use crate::WindowSize;
use crate::queue::ClientQueue;

/// One item of the worker's queue.
#[derive(Debug)]
enum Work {
    Output(Bytes),
    Resize(WindowSize),
    Repaint { queue: Arc<ClientQueue>, generation: u64, kind: Kind },
    Capture { history: usize, escapes: bool, reply: oneshot::Sender<String> },
}

#[derive(Debug, Default)]
struct WorkQueue {
    items: VecDeque<Work>,
    /// Output bytes queued and not yet applied.
    backlog_bytes: usize,
    /// Output queued since the worker was last woken for it (see
    /// [`Feed::announce`]).
    unannounced: bool,
    /// No more work comes; the worker skips the output still queued (no
    /// one will attach again), answers the repaints asked for, and stops.
    closed: bool,
}

/// The screen model of one session and the queue that feeds it.
#[derive(Debug)]
pub(crate) struct Feed {
    work: Mutex<WorkQueue>,
    /// Wakes the worker.
    ready: Condvar,
    /// Wakes the reader when the backlog went under its bound.
    room: Notify,
    screen: Mutex<Screen>,
    backlog_limit_bytes: usize,
    history_lines: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Feed {
    /// Starts the worker thread of a session's screen model.
    pub(crate) fn start(
        size: WindowSize,
        history_lines: usize,
        backlog_limit_bytes: usize,
    ) -> std::io::Result<Arc<Self>> {
        let feed = Arc::new(Self {
            work: Mutex::new(WorkQueue::default()),
            ready: Condvar::new(),
            room: Notify::new(),
            screen: Mutex::new(Screen::new(size, history_lines)),
            backlog_limit_bytes: backlog_limit_bytes.max(1),
            history_lines,
        });
        let worker = feed.clone();
        let span = tracing::Span::current();
        std::thread::Builder::new().name("ptysession-screen".into()).spawn(move || {
            let _entered = span.enter();
            worker.run();
        })?;
        Ok(feed)
    }

    /// Appends output (under the session's lock). The worker is not woken
    /// for it until [`Feed::announce`] (or other work) says so: the clients
    /// the same output wakes go first.
    pub(crate) fn push_output(&self, chunk: Bytes) {
        let mut work = lock(&self.work);
        work.backlog_bytes += chunk.len();
        work.items.push_back(Work::Output(chunk));
        work.unannounced = true;
    }

    /// Wakes the worker for the output queued since it was last woken.
    ///
    /// On two cores, waking it as the output comes would give it the idle
    /// core just when the client that output is for wakes up: a
    /// keystroke's echo would wait for the model.
    pub(crate) fn announce(&self) {
        if std::mem::take(&mut lock(&self.work).unannounced) {
            self.ready.notify_one();
        }
    }

    /// Appends a resize of the terminal (under the session's lock).
    pub(crate) fn push_resize(&self, size: WindowSize) {
        self.push(Work::Resize(size));
    }

    /// Asks for a repaint for `queue` at this point of the output (under the
    /// session's lock); it is delivered with `generation`.
    pub(crate) fn push_repaint(&self, queue: Arc<ClientQueue>, generation: u64, kind: Kind) {
        self.push(Work::Repaint { queue, generation, kind });
    }

    /// Asks for the screen as text at this point of the output (under the
    /// session's lock); `None` once the model is closed (no answer would
    /// come).
    pub(crate) fn push_capture(&self, history: usize, escapes: bool) -> Option<oneshot::Receiver<String>> {
        let mut work = lock(&self.work);
        if work.closed {
            return None;
        }
        let (reply, answer) = oneshot::channel();
        work.items.push_back(Work::Capture { history, escapes, reply });
        drop(work);
        self.ready.notify_one();
        Some(answer)
    }

    fn push(&self, item: Work) {
        lock(&self.work).items.push_back(item);
        self.ready.notify_one();
    }

    /// Waits until the backlog is within its bound.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub(crate) async fn wait_for_room(&self) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lock(&self.work).backlog_bytes <= self.backlog_limit_bytes {
                return;
            }
            notified.await;
        }
    }

    /// Lets the worker stop: the session is done. Output still queued is
    /// not parsed (it would only take a core from other sessions); a
    /// repaint or capture still asked for is rendered from the screen as
    /// it is, so that no one waits for it for ever.
    pub(crate) fn close(&self) {
        lock(&self.work).closed = true;
        self.ready.notify_one();
    }

    fn run(&self) {
        loop {
            let (item, closed) = {
                let mut work = lock(&self.work);
                loop {
                    work.unannounced = false;
                    if let Some(item) = work.items.pop_front() {
                        break (item, work.closed);
                    }
                    if work.closed {
                        return;
                    }
                    work = self.ready.wait(work).unwrap_or_else(PoisonError::into_inner);
                }
            };
            self.apply(item, closed);
        }
    }

    fn apply(&self, item: Work, closed: bool) {
        match item {
            Work::Output(chunk) => {
                if !closed {
                    self.guarded(|screen| screen.feed(&chunk));
                }
                let mut work = lock(&self.work);
                let was_over = work.backlog_bytes > self.backlog_limit_bytes;
                work.backlog_bytes -= chunk.len();
                let now_over = work.backlog_bytes > self.backlog_limit_bytes;
                drop(work);
                if was_over && !now_over {
                    self.room.notify_waiters();
                }
            }
            Work::Resize(size) => self.guarded(|screen| screen.resize(size)),
            Work::Repaint { queue, generation, kind } => {
                if queue.awaits(generation) {
                    let mut repaint = Vec::new();
                    self.guarded(|screen| repaint = screen.repaint(kind));
                    queue.deliver_repaint(generation, Bytes::from(repaint));
                }
            }
            Work::Capture { history, escapes, reply } => {
                if !reply.is_closed() {
                    let mut text = String::new();
                    self.guarded(|screen| text = screen.capture(history, escapes));
                    let _ = reply.send(text);
                }
            }
        }
    }

    /// Runs `action` on the model; if the emulator panics, the model starts
    /// over empty (at the same size) rather than taking the session down.
    fn guarded(&self, action: impl FnOnce(&mut Screen)) {
        let mut screen = lock(&self.screen);
        if std::panic::catch_unwind(AssertUnwindSafe(|| action(&mut screen))).is_err() {
            tracing::error!("the screen model panicked; it starts over empty");
            let size = screen.size();
            *screen = Screen::new(size, self.history_lines);
        }
    }
}
