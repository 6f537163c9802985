//! The state the application's calls and the driver share: the core, the
//! pipe's connections (each split into a read half and a write half with a
//! lock each), the reconnect bookkeeping and the published status, behind
//! one lock; and the handling of the core's events, which keeps that
//! bookkeeping and wakes whoever waits.
//!
//! # Locks
//!
//! This is the one description of the shell's locks; the rest of the code
//! points here. Every lock is a `std::sync::Mutex` (or a lock inside a
//! tokio primitive), held only for computation and non-blocking system
//! calls, and never across an await.
//!
//! - **A connection's read half** ([`ConnIo::reader`]) guards the
//!   transport's reading half. Whoever reads the connection holds it for
//!   one read and its bookkeeping: the application's read (with the state
//!   unlocked during the system call), or a `receive` under the state.
//! - **A connection's write half** ([`ConnIo::writer`]) guards the
//!   transport's writing half and whether it owes a flush. Whoever writes
//!   the connection holds it for one write and its bookkeeping: the
//!   application's write (with the state unlocked during a lent write), or
//!   a `transmit` under the state.
//! - **The state** ([`Shared::lock`]) guards [`Inner`]: the core, the
//!   connections, the reconnect bookkeeping, the counters and the status
//!   to publish. Everyone takes it, for computation and, on the driver's
//!   and the control paths, non-blocking system calls on halves they only
//!   tried.
//! - **The copy storage** ([`Shared::copies`]) guards the blocks a write
//!   copies the caller's bytes into. The writing task takes it for one
//!   copy, with no other lock held; the driver only tries it, under the
//!   state, to give the blocks back when the pipe is idle.
//! - **The hub's slots** ([`Hub`]) guard who waits for what: the wakers
//!   and the readiness left unclaimed. Everyone takes them, and so does a
//!   transport's wake, for a few assignments.
//! - **The status channel** ([`Shared::status`]) guards the published
//!   [`Status`]. [`StateGuard`]'s drop sends to it; the `wait_for` closures
//!   of those who watch it run under it.
//! - **The forced reconnect's channel** ([`Inner::force`]) guards the one
//!   outcome that concurrent `force_reconnect` calls share; it is sent to
//!   and subscribed under the state.
//! - **A transport's own locks**, below its halves: [`Joined`](crate::Joined)'s
//!   halves share one (`tokio::io::split`'s), transport-stream's halves
//!   each lock their pipe's slot. Each call on a half takes them.
//!
//! The order, outermost first:
//!
//! 0. **A server's session table before any pipe's state.** The
//!    [`Listener`](crate::Listener) routes a connection to its pipe (and
//!    reads a new session's first handshake) under its table's lock; no
//!    pipe locks the table.
//! 1. **A half, then the state.** The holder of a half may wait for the
//!    state; whoever holds the state only ever *tries* a half
//!    ([`try_half`]) and, when it is taken, leaves what it would have sent
//!    in the core: the half's holder sends what others left there before
//!    it lets the half go. To wait for a half, a task first lets go of the
//!    state ([`lock_half`]). No one holds both halves of a connection.
//! 2. **The state, then the forced reconnect's channel and the
//!    `Notify`s** (acknowledgements, drained): nothing is locked under
//!    these.
//! 3. **The status channel only after the state is released.** A
//!    `wait_for` closure runs under the channel's lock and may call into
//!    the pipe, which locks the state; so [`StateGuard`] unlocks first and
//!    then sends what changed.
//! 4. **A transport's own locks**, taken by each call on a half (under
//!    the half, and perhaps the state).
//! 5. **The copy storage on its own.** The writing task takes it with
//!    no other lock held and takes none under it; under the state it is
//!    only tried.
//! 6. **The hub's slots innermost of all.** Everyone takes them, under any
//!    of the above, and so does a transport that delivers a wake while it
//!    holds its own locks; nothing is locked, and no waker is woken, under
//!    them.
//!
//! The application's calls make their system calls with the state
//! unlocked and a half held: a read takes DATA payload straight into the
//! caller's buffer, a write lends the caller's bytes to the connection
//! ([`Core::lend_transmit`](crate::core::Core::lend_transmit)). Whatever
//! happens to the connection meanwhile (another task reports an error on
//! it, the pipe closes) waits for the count of the lent write, so a report
//! never lands inside a half-written DATA frame.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Waker};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::copies::Copies;
use super::hub::{Hub, Readiness, Wakes};
use super::{PipeState, Status};
use crate::core::{ConnectionState, Core, Event, Generation};
use crate::error::Error;
use crate::options::Options;
use crate::transport::{Halves, Split};

/// What a pipe's handles and its driver share: the state behind one
/// lock, the hub, the copy storage and the status channel (see "Locks"
/// above).
pub(super) struct Shared {
    /// The state.
    inner: Mutex<Inner>,
    /// The blocks written bytes are copied into.
    pub(super) copies: Mutex<Copies>,
    /// The bytes of storage `copies` holds, for the statistics.
    pub(super) copies_held: AtomicUsize,
    /// Who waits for what.
    pub(super) hub: Arc<Hub>,
    /// The waker the current connection's read half is polled with: its
    /// readiness goes through the hub.
    pub(super) read_waker: Waker,
    /// The same for the write half.
    pub(super) write_waker: Waker,
    /// The published status.
    pub(super) status: watch::Sender<Status>,
    /// The number of the newest change sent to `status`.
    status_sent: AtomicU64,
    /// The pipe's span (see the module's "Logs"): the driver runs in it,
    /// and the application's calls into the pipe enter it.
    pub(super) span: tracing::Span,
}

impl Shared {
    /// The state of a new pipe around `core`, not yet driven; `active`
    /// when it dials.
    pub(super) fn new(core: Core, options: Options, active: bool, span: tracing::Span) -> Shared {
        let copies = Copies::new(options.max_unacked_bytes.saturating_add(options.max_unsent_bytes));
        let hub = Arc::new(Hub::default());
        let read_waker = Readiness::read_waker(&hub);
        let write_waker = Readiness::write_waker(&hub);
        let inner = Inner {
            core,
            options,
            active,
            conns: Vec::new(),
            current: None,
            redial: Redial {
                failures: 0,
                not_before: None,
                disconnected_since: None,
                attempt: None,
                dialing: false,
                last_error: None,
                rng: fastrand::Rng::new(),
            },
            failed_attempts: 0,
            independent_halves: 0,
            shared_halves: 0,
            force: None,
            force_requested: false,
            rearm_driver: false,
            published: None,
            status_changes: 0,
            unpublished: None,
            span: span.clone(),
            span_has_session: !active,
        };
        let initial = Status {
            state: if active { PipeState::Reconnecting } else { PipeState::Disconnected },
            generation: Generation(0),
        };
        let (status, _) = watch::channel(initial);
        Shared {
            inner: Mutex::new(inner),
            copies: Mutex::new(copies),
            copies_held: AtomicUsize::new(0),
            hub,
            read_waker,
            write_waker,
            status,
            status_sent: AtomicU64::new(0),
            span,
        }
    }

    /// `data` in a chunk of its own, copied into the copy storage (with
    /// no other lock held: see "Locks" above).
    pub(super) fn copy(&self, data: &[u8]) -> bytes::Bytes {
        let mut copies = lock_half(&self.copies);
        let chunk = copies.copy(data);
        self.copies_held.store(copies.held_bytes(), Ordering::Relaxed);
        chunk
    }

    /// Gives the copy storage back if no one is copying (called under the
    /// state when the send buffer is empty: no chunk of it is in flight).
    pub(super) fn release_copies(&self) {
        if let Some(mut copies) = try_half(&self.copies) {
            copies.release();
            self.copies_held.store(0, Ordering::Relaxed);
        }
    }

    /// Locks the state (see "Locks" above for the order).
    pub(super) fn lock(&self) -> StateGuard<'_> {
        StateGuard { guard: Some(self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())), shared: self }
    }

    /// A context whose waker routes the current connection's read
    /// readiness through the hub.
    pub(super) fn read_cx(&self) -> Context<'_> {
        Context::from_waker(&self.read_waker)
    }

    /// The same for write readiness.
    pub(super) fn write_cx(&self) -> Context<'_> {
        Context::from_waker(&self.write_waker)
    }
}

/// The locked state. Dropping it unlocks, then sends a status change made
/// meanwhile to the watch channel (rule 3 of "Locks" above).
pub(super) struct StateGuard<'a> {
    guard: Option<MutexGuard<'a, Inner>>,
    shared: &'a Shared,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        self.guard.as_deref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        self.guard.as_deref_mut().expect("held until dropped")
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        let Some(mut guard) = self.guard.take() else { return };
        let change = guard.unpublished.take();
        drop(guard);
        if let Some((number, new)) = change {
            let sent = &self.shared.status_sent;
            // Two guards dropped at once may send out of order: the
            // channel's own lock orders them, and an older change that
            // comes second is not sent.
            self.shared.status.send_if_modified(|old| {
                if sent.load(Ordering::Relaxed) >= number {
                    return false;
                }
                sent.store(number, Ordering::Relaxed);
                let changed = *old != new;
                *old = new;
                changed
            });
        }
    }
}

/// The pipe's state, behind [`Shared`]'s lock.
pub(super) struct Inner {
    /// The protocol.
    pub(super) core: Core,
    pub(super) options: Options,
    /// The pipe dials (it has a reconnector).
    pub(super) active: bool,
    /// Every connection the core still uses (the current one, handshakes
    /// under way, old ones still sending their close report).
    pub(super) conns: Vec<ConnIo>,
    /// The connection that carries the stream, as of the last event.
    current: Option<Generation>,
    pub(super) redial: Redial,
    /// Dials and handshakes that failed, on the dialling side.
    pub(super) failed_attempts: u64,
    /// Connections taken whose transport split into independent halves.
    pub(super) independent_halves: u64,
    /// Connections taken whose transport split into halves sharing a lock.
    pub(super) shared_halves: u64,
    /// The forced reconnect under way, and the channel its callers wait on.
    pub(super) force: Option<watch::Sender<ForceResult>>,
    /// A forced reconnect asks the driver to drop the current connection.
    pub(super) force_requested: bool,
    /// The core has a new deadline the driver's timer does not know.
    pub(super) rearm_driver: bool,
    /// The newest status, as last computed.
    published: Option<Status>,
    /// How many times the status changed.
    status_changes: u64,
    /// A change not yet sent to the watch channel, with its number: it is
    /// sent once the state's lock is released (see [`StateGuard`]).
    unpublished: Option<(u64, Status)>,
    /// The pipe's span (as [`Shared::span`]), to record the session id in
    /// at the first handshake.
    span: tracing::Span,
    /// Whether the span has the session id yet.
    span_has_session: bool,
}

impl Inner {
    /// Takes a new connection, already split, for `generation`.
    pub(super) fn add_conn(&mut self, generation: Generation, halves: Halves) {
        match halves.split {
            Split::Independent => self.independent_halves += 1,
            Split::Shared => self.shared_halves += 1,
        }
        self.conns.push(ConnIo::new(generation, halves));
    }

    pub(super) fn conn_index(&self, generation: Generation) -> Option<usize> {
        self.conns.iter().position(|conn| conn.generation == generation)
    }

    /// Handles the core's events: drops finished transports, keeps the
    /// reconnect bookkeeping, wakes whoever waits, publishes the status.
    pub(super) fn process_events(&mut self, now: Instant, shared_hub: &Hub, me: Party) {
        let mut wakes = Wakes { driver: std::mem::take(&mut self.rearm_driver), ..Wakes::default() };
        while let Some(event) = self.core.poll_event() {
            match event {
                Event::Connected { generation, .. } => {
                    // The active side learns its session id here.
                    if !std::mem::replace(&mut self.span_has_session, true) {
                        self.span.record("session", tracing::field::display(self.core.session_id()));
                    }
                    self.current = Some(generation);
                    if self.redial.attempt == Some(generation) {
                        self.redial.attempt = None;
                    }
                    self.redial.failures = 0;
                    self.redial.not_before = None;
                    self.redial.disconnected_since = None;
                    self.complete_force(Ok(generation));
                    wakes = Wakes::ALL;
                }
                Event::ConnectionClosed { generation } => {
                    self.conns.retain(|conn| conn.generation != generation);
                    if self.current == Some(generation) {
                        self.current = None;
                        self.redial.disconnected_since.get_or_insert(now);
                    } else if self.redial.attempt == Some(generation) {
                        self.redial.attempt = None;
                        self.attempt_failed(now);
                    }
                    wakes = Wakes::ALL;
                }
                Event::Readable => wakes.reader = true,
                Event::Writable => {
                    wakes.writer = true;
                    shared_hub.acked.notify_waiters();
                }
                Event::Failed(err) => {
                    shared_hub.acked.notify_waiters();
                    self.complete_force(Err(err));
                    wakes = Wakes::ALL;
                }
            }
        }
        if self.core.state() == ConnectionState::Closed {
            self.complete_force(Err(self.core.failure().cloned().unwrap_or(Error::Closed)));
            if self.conns.is_empty() {
                shared_hub.drained.notify_waiters();
            }
        }
        self.publish();
        // The caller is running and looks at the state again before it
        // returns: waking it too would only poll it once more.
        let wakes = wakes.except(me);
        if wakes.any() {
            shared_hub.wake(wakes);
        }
    }

    pub(super) fn attempt_failed(&mut self, now: Instant) {
        self.failed_attempts += 1;
        self.redial.failures = self.redial.failures.saturating_add(1);
        let delay = self.options.backoff.delay(self.redial.failures, self.redial.rng.f64());
        self.redial.not_before = Some(now + delay);
        self.redial.disconnected_since.get_or_insert(now);
        self.complete_force(Err(handshake_failed()));
    }

    pub(super) fn complete_force(&mut self, result: Result<Generation, Error>) {
        if let Some(sender) = self.force.take() {
            sender.send_replace(Some(result));
        }
    }

    pub(super) fn status(&self) -> Status {
        let state = match self.core.state() {
            ConnectionState::Closed => PipeState::Closed,
            ConnectionState::Connected => PipeState::Connected,
            ConnectionState::Handshaking => PipeState::Reconnecting,
            _ if self.redial.dialing => PipeState::Reconnecting,
            _ => PipeState::Disconnected,
        };
        let newest = Generation(self.core.next_generation().0.saturating_sub(1));
        Status { state, generation: self.core.current_generation().unwrap_or(newest) }
    }

    /// Notes the status for the watch channel; it is sent when the lock
    /// is released.
    pub(super) fn publish(&mut self) {
        let new = self.status();
        // Most calls change nothing: skip the channel's lock then.
        if self.published == Some(new) {
            return;
        }
        self.published = Some(new);
        self.status_changes += 1;
        self.unpublished = Some((self.status_changes, new));
    }
}

fn handshake_failed() -> Error {
    Error::Io(Arc::new(io::Error::new(io::ErrorKind::ConnectionAborted, "the handshake did not complete")))
}

/// Who is processing events (and so needs no wake-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Party {
    Reader,
    Writer,
    Driver,
    Other,
}

/// Reconnect bookkeeping of the dialling side.
pub(super) struct Redial {
    /// Consecutive failed attempts.
    pub(super) failures: u32,
    /// Do not dial before this.
    pub(super) not_before: Option<Instant>,
    /// When the pipe last had no connection, if it has none now.
    pub(super) disconnected_since: Option<Instant>,
    /// The generation of the handshake in flight.
    pub(super) attempt: Option<Generation>,
    /// A dial is in flight.
    pub(super) dialing: bool,
    /// The last dial error.
    pub(super) last_error: Option<Arc<io::Error>>,
    rng: fastrand::Rng,
}

type ForceResult = Option<Result<Generation, Error>>;

/// A connection's reading half.
type ReadIo = Box<dyn AsyncRead + Send + Unpin>;

/// A connection's writing half, and whether it owes a flush.
pub(super) struct WriteSide {
    pub(super) io: Box<dyn AsyncWrite + Send + Unpin>,
    pub(super) flush_pending: bool,
}

/// One connection, in two halves, each behind its own lock (see "Locks"
/// above): reading and writing never wait for each other's system calls.
pub(super) struct ConnIo {
    pub(super) generation: Generation,
    /// The read half.
    pub(super) reader: Arc<Mutex<ReadIo>>,
    /// The write half.
    pub(super) writer: Arc<Mutex<WriteSide>>,
}

impl ConnIo {
    fn new(generation: Generation, halves: Halves) -> ConnIo {
        let Halves { read, write, .. } = halves;
        ConnIo {
            generation,
            reader: Arc::new(Mutex::new(read)),
            writer: Arc::new(Mutex::new(WriteSide { io: write, flush_pending: false })),
        }
    }
}

/// Locks a connection half if no one else holds it.
pub(super) fn try_half<S: ?Sized>(half: &Mutex<S>) -> Option<MutexGuard<'_, S>> {
    match half.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// Locks a connection half, waiting for its holder (who holds it only for
/// one system call and its bookkeeping); never with the state held.
pub(super) fn lock_half<S: ?Sized>(half: &Mutex<S>) -> MutexGuard<'_, S> {
    half.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
