//! The clients attached through a server: the [`Registry`] that knows
//! them (for `ls`, for `attach -d`, and for the most recently used
//! session), and [`serve`], which carries one client's terminal with the
//! ptysession framing, read-only when asked, until it leaves or another
//! client displaces it.
//!
//! # Locks
//!
//! The registry's one mutex guards its lists; it is never held across an
//! await, and no other lock is taken while it is held.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use backedpipe::{PipeControl, PipeState};
use ptysession::framing::{self, FrameSink, ServeOptions, ServeOutcome};
use ptysession::{Attachment, DetachReason};
use tokio::io::AsyncRead;
use tokio::sync::Notify;

/// The attached clients of every session, and when each session was last
/// used. Sessions are known by their command's pid, which names them for
/// as long as they live, across renames.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_token: u64,
    clients: Vec<Client>,
    /// Session pid → when it was last created, attached to or detached
    /// from (a counter: only the order matters).
    used: HashMap<u32, u64>,
    clock: u64,
}

#[derive(Debug)]
struct Client {
    token: u64,
    session_pid: u32,
    link: Option<PipeControl>,
    displace: Arc<Notify>,
}

/// A client's place in the [`Registry`]; it leaves when this is dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<Registry>,
    token: u64,
    session_pid: u32,
    /// Notified when another client displaces this one.
    pub(crate) displaced: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        inner.clients.retain(|client| client.token != self.token);
        inner.touch(self.session_pid);
    }
}

/// A session's clients, counted for a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ClientCount {
    /// Clients whose connection is down now.
    pub(crate) disconnected: usize,
}

impl Inner {
    fn touch(&mut self, session_pid: u32) {
        self.clock += 1;
        self.used.insert(session_pid, self.clock);
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes that the session was used just now (created, for instance).
    pub(crate) fn touch(&self, session_pid: u32) {
        self.lock().touch(session_pid);
    }

    /// Of `pids`, the session used most recently.
    pub(crate) fn most_recent(&self, pids: impl IntoIterator<Item = u32>) -> Option<u32> {
        let inner = self.lock();
        pids.into_iter().max_by_key(|pid| inner.used.get(pid).copied().unwrap_or(0))
    }

    /// Forgets a session that is done.
    pub(crate) fn forget(&self, session_pid: u32) {
        self.lock().used.remove(&session_pid);
    }

    /// Registers a client of the session; `link` is its connection, when
    /// it can be down and come back.
    pub(crate) fn register(self: &Arc<Self>, session_pid: u32, link: Option<PipeControl>) -> Registration {
        let mut inner = self.lock();
        inner.next_token += 1;
        let token = inner.next_token;
        let displace = Arc::new(Notify::new());
        inner.clients.push(Client { token, session_pid, link, displace: displace.clone() });
        inner.touch(session_pid);
        Registration { registry: self.clone(), token, session_pid, displaced: displace }
    }

    /// Detaches every client of the session but `keep`; returns how many.
    pub(crate) fn displace_others(&self, keep: &Registration) -> usize {
        let inner = self.lock();
        let others: Vec<&Client> = inner
            .clients
            .iter()
            .filter(|client| client.session_pid == keep.session_pid && client.token != keep.token)
            .collect();
        for client in &others {
            // A stored permit: a client that is not yet waiting still sees it.
            client.displace.notify_one();
        }
        others.len()
    }

    /// The session's clients whose connection is down.
    pub(crate) fn count(&self, session_pid: u32) -> ClientCount {
        let inner = self.lock();
        let disconnected = inner
            .clients
            .iter()
            .filter(|client| client.session_pid == session_pid)
            .filter(|client| {
                client.link.as_ref().is_some_and(|link| link.watch_status().borrow().state != PipeState::Connected)
            })
            .count();
        ClientCount { disconnected }
    }
}

/// Whether an attached client's typing reaches the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InputPolicy {
    /// Input is written to the session.
    Deliver,
    /// Input is read and dropped (`attach --read-only`).
    Drop,
}

/// Serves one attached client with ptysession's framing
/// ([`framing::serve_client_with`]), reading its frames from `reader` and
/// sending frames to `sink`: input is dropped under [`InputPolicy::Drop`],
/// and the client is detached with [`DetachReason::Displaced`] when
/// `displaced` is notified.
///
/// # Errors
///
/// As [`framing::serve_client_with`].
pub(crate) async fn serve<R, S>(
    attachment: Attachment,
    reader: R,
    sink: S,
    input_policy: InputPolicy,
    displaced: &Notify,
) -> Result<ServeOutcome, ptysession::Error>
where
    R: AsyncRead + Unpin,
    S: FrameSink,
{
    let options = ServeOptions::new().read_only(input_policy == InputPolicy::Drop);
    let displacement = async {
        displaced.notified().await;
        DetachReason::Displaced
    };
    framing::serve_client_with(attachment, reader, sink, options, displacement).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_recent_session_is_the_last_one_touched_or_left() {
        let registry = Arc::new(Registry::default());
        assert_eq!(registry.most_recent([]), None);
        registry.touch(10);
        registry.touch(20);
        assert_eq!(registry.most_recent([10, 20, 30]), Some(20));
        let client = registry.register(10, None);
        assert_eq!(registry.most_recent([10, 20]), Some(10));
        registry.touch(20);
        drop(client);
        assert_eq!(registry.most_recent([10, 20]), Some(10), "leaving counts as use");
        registry.forget(10);
        assert_eq!(registry.most_recent([20]), Some(20));
    }

    #[tokio::test]
    async fn displacing_wakes_every_other_client_of_the_session_only() {
        let registry = Arc::new(Registry::default());
        let keep = registry.register(1, None);
        let other = registry.register(1, None);
        let elsewhere = registry.register(2, None);
        assert_eq!(registry.displace_others(&keep), 1);
        tokio::time::timeout(std::time::Duration::from_secs(5), other.displaced.notified())
            .await
            .expect("the other client is told");
        let not_told = tokio::time::timeout(std::time::Duration::from_millis(20), elsewhere.displaced.notified());
        assert!(not_told.await.is_err(), "a client of another session is left alone");
        assert_eq!(registry.count(1), ClientCount { disconnected: 0 });
    }
}
