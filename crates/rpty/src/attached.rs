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
use bytes::{Bytes, BytesMut};
use ptysession::framing::{ClientFrame, FrameSink, ServeOutcome, ServerFrame};
use ptysession::{Attachment, DetachReason, Event};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Notify;

/// Output gathered into one write while more is ready at once.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

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

/// Serves one attached client, reading its frames from `reader` and
/// sending frames to `sink` (each batch as one chunk): the replay (for a client
/// that restores the screen, the repaint) and `ReplayEnd`, then output as it comes, and finally the exit status or
/// the reason for detaching (also [`DetachReason::Displaced`] when
/// `displaced` is notified); meanwhile the client's input (unless
/// dropped) and resizes go to the session.
///
/// # Errors
///
/// [`ptysession::Error::Connection`] when the connection fails,
/// [`ptysession::Error::Frame`] when the client breaks the framing.
///
/// # Cancel safety
///
/// Dropping the future detaches the client; a frame may be cut off midway.
pub(crate) async fn serve<R, S>(
    attachment: Attachment,
    mut reader: R,
    mut sink: S,
    input_policy: InputPolicy,
    displaced: &Notify,
) -> Result<ServeOutcome, ptysession::Error>
where
    R: AsyncRead + Unpin,
    S: FrameSink,
{
    let restores_screen = attachment.restores_screen();
    let (replay, mut events, input) = attachment.into_parts();
    let mut out = BytesMut::new();
    // A client restoring the screen gets the repaint as its replay; output
    // continues exactly after it.
    let mut first = None;
    let replay = if restores_screen {
        match events.next().await {
            Some(Event::Repaint(repaint)) => repaint,
            other => {
                first = other;
                Bytes::new()
            }
        }
    } else {
        replay
    };
    ServerFrame::Replay(replay).encode(&mut out);
    ServerFrame::ReplayEnd.encode(&mut out);
    let early_end = first.and_then(|event| encode_event(event, &mut out));
    send(&mut sink, &mut out).await?;
    if let Some(end) = early_end {
        return Ok(end);
    }

    let outgoing = async {
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                () = displaced.notified() => Some(Event::Detached(DetachReason::Displaced)),
            };
            let Some(event) = event else { return Ok(ServeOutcome::Detached(DetachReason::Closed)) };
            let mut end = encode_event(event, &mut out);
            while end.is_none() && out.len() < WRITE_BATCH_BYTES {
                match events.try_next() {
                    Some(event) => end = encode_event(event, &mut out),
                    None => break,
                }
            }
            send(&mut sink, &mut out).await?;
            if let Some(end) = end {
                return Ok(end);
            }
        }
    };
    let incoming = async {
        let mut buf = BytesMut::new();
        loop {
            match read_frame(&mut reader, &mut buf).await? {
                None => return Ok(ServeOutcome::ClientDisconnected),
                Some(ClientFrame::Detach) => return Ok(ServeOutcome::ClientDetached),
                // A closed session ends the outgoing side with its status.
                Some(ClientFrame::Input(data)) => {
                    if input_policy == InputPolicy::Deliver {
                        let _ = input.write(data).await;
                    }
                }
                // Refusals are counted in the session's stats; a detached
                // client is about to be told why.
                Some(ClientFrame::Resize(size)) => {
                    let _ = input.resize(size);
                }
                // rpty's sessions keep a screen model: never refused.
                Some(ClientFrame::Repaint) => {
                    let _ = input.request_repaint();
                }
                Some(_) => {}
            }
        }
    };
    tokio::select! {
        outcome = outgoing => outcome,
        outcome = incoming => outcome,
    }
}

/// Encodes an event; returns how serving ends if it is the final one.
fn encode_event(event: Event, out: &mut BytesMut) -> Option<ServeOutcome> {
    match event {
        // A repaint (a client that fell behind) draws over whatever the
        // terminal shows: to the client it is output like any other.
        Event::Output(data) | Event::Repaint(data) => {
            ServerFrame::Output(data).encode(out);
            None
        }
        Event::Exited(status) => {
            ServerFrame::Exited(status).encode(out);
            Some(ServeOutcome::Exited(status))
        }
        Event::Detached(reason) => {
            ServerFrame::Detached(reason).encode(out);
            Some(ServeOutcome::Detached(reason))
        }
        _ => None,
    }
}

/// Hands the encoded frames in `out` to the sink as one chunk (no copy).
async fn send<S: FrameSink>(sink: &mut S, out: &mut BytesMut) -> Result<(), ptysession::Error> {
    sink.send(out.split().freeze()).await.map_err(ptysession::Error::Connection)
}

/// Reads until a whole client frame is in `buf`; `Ok(None)` at a clean end
/// of stream (between frames). Cancel safe: bytes read stay in `buf`.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> Result<Option<ClientFrame>, ptysession::Error> {
    loop {
        if let Some(frame) = ClientFrame::decode(buf)? {
            return Ok(Some(frame));
        }
        buf.reserve(8 * 1024);
        if reader.read_buf(buf).await.map_err(ptysession::Error::Connection)? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(ptysession::Error::Connection(std::io::ErrorKind::UnexpectedEof.into()))
            };
        }
    }
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
