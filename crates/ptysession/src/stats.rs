//! [`Stats`]: counters of what a session has done.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of a session's activity, read with
/// [`Session::stats`](crate::Session::stats).
///
/// ```
/// let stats = ptysession::Stats::default();
/// assert_eq!(stats.bytes_out, 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Bytes the command wrote to the terminal (read from it by the session).
    pub bytes_out: u64,
    /// Bytes of client input written to the terminal.
    pub bytes_in: u64,
    /// Clients attached right now.
    pub clients_attached: u64,
    /// Attaches since the session started.
    pub attaches: u64,
    /// Clients detached because they fell behind the output.
    pub clients_lagged: u64,
    /// Times a client that fell behind had its backlog dropped and replaced
    /// by a repaint of the screen (with the `screen` feature, in place of
    /// being detached).
    pub resyncs: u64,
    /// Window size changes applied to the terminal.
    pub resizes: u64,
    /// Window size changes the terminal refused.
    pub resize_errors: u64,
    /// Input chunks that could not be written to the terminal.
    pub write_errors: u64,
    /// Reads of the terminal that failed (other than the end of output).
    pub read_errors: u64,
}

/// The live counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) bytes_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) attaches: AtomicU64,
    pub(crate) clients_lagged: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) resizes: AtomicU64,
    pub(crate) resize_errors: AtomicU64,
    pub(crate) write_errors: AtomicU64,
    pub(crate) read_errors: AtomicU64,
}

impl Counters {
    /// Adds `count` to a counter.
    pub(crate) fn add(counter: &AtomicU64, count: u64) {
        counter.fetch_add(count, Ordering::Relaxed);
    }

    /// A snapshot, with the number of clients attached right now.
    pub(crate) fn snapshot(&self, clients_attached: usize) -> Stats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            bytes_out: load(&self.bytes_out),
            bytes_in: load(&self.bytes_in),
            clients_attached: clients_attached as u64,
            attaches: load(&self.attaches),
            clients_lagged: load(&self.clients_lagged),
            resyncs: load(&self.resyncs),
            resizes: load(&self.resizes),
            resize_errors: load(&self.resize_errors),
            write_errors: load(&self.write_errors),
            read_errors: load(&self.read_errors),
        }
    }
}
