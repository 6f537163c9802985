//! The driver: one task per pipe that dials (on the active side), runs
//! handshakes, keeps the core's timers, moves bytes on every connection
//! the application does not serve, and takes over readiness the
//! application leaves unclaimed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::conn_io::{ReceiveUntil, Received, Sent};
use super::now;
use super::state::{Inner, Party, Shared};
use crate::core::{ConnectionState, Generation};
use crate::error::Error;
use crate::proto::Nonce;
use crate::transport::Halves;

/// The task that drives one pipe; see the module documentation.
pub(super) struct Driver {
    shared: Arc<Shared>,
    dialer: Dialer,
    dial: Option<DialFuture>,
    /// A finished dial, kept until the state can be locked.
    dialed: Option<io::Result<Halves>>,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// When the driver looks at the unclaimed readiness wakes again, while
    /// it watches them (see [`Hub::check_claims`](super::hub::Hub::check_claims)).
    claim_deadline: Option<Instant>,
}

impl Driver {
    /// The driver of `shared`; `dialer` on the active side.
    pub(super) fn new(shared: Arc<Shared>, dialer: Dialer) -> Driver {
        Driver {
            shared,
            dialer,
            dial: None,
            dialed: None,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            claim_deadline: None,
        }
    }
}

impl Future for Driver {
    type Output = ();

    /// Rounds of the steps below, each with the state locked once, until
    /// nothing is left to do now; then the driver waits for a dial, a
    /// deadline or a wake. Bounded, so that a busy pipe still lets other
    /// tasks run.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let shared = Arc::clone(&this.shared);
        shared.hub.register_driver(cx.waker());
        for _ in 0..64 {
            let now = now();
            let mut inner = shared.lock();
            if let Some(dialed) = this.dialed.take() {
                this.take_dialed(&mut inner, now, dialed);
            }
            if this.wind_down(&mut inner).is_ready() {
                return Poll::Ready(());
            }
            keep_time(&mut inner, now);
            if inner.core.is_quiet() {
                // The core gave its buffers back: so does the copy storage
                // (no chunk of it is in flight).
                shared.release_copies();
            }
            let read_current = this.check_claims(now);
            apply_forced_reconnect(&mut inner, now);
            let backlog = this.move_bytes(&mut inner, now, read_current, cx.waker());
            let dial_at = match this.dial_if_due(&mut inner, now) {
                DialWait::None => None,
                DialWait::Until(at) => Some(at),
                DialWait::GaveUp => continue,
            };
            let next_timeout = inner.core.poll_timeout();
            drop(inner);
            if backlog == Backlog::Unannounced {
                // Bytes wait that no readiness will announce: come back
                // after other tasks had their turn.
                cx.waker().wake_by_ref();
            }
            if this.poll_dial(cx).is_ready() {
                continue;
            }
            let next = [next_timeout, dial_at, this.claim_deadline].into_iter().flatten().min();
            if this.sleep_until(next, cx).is_ready() {
                continue;
            }
            return Poll::Pending;
        }
        // Plenty done in one go: let other tasks run, then carry on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Driver {
    /// Takes in a finished dial: the new connection starts its handshake,
    /// or the failure counts against the backoff.
    fn take_dialed(&self, inner: &mut Inner, now: Instant, dialed: io::Result<Halves>) {
        inner.redial.dialing = false;
        match dialed {
            Ok(halves) if inner.core.state() != ConnectionState::Closed => {
                match inner.core.connect(now, Nonce::random()) {
                    Ok(generation) => {
                        inner.add_conn(generation, halves);
                        inner.redial.attempt = Some(generation);
                    }
                    Err(_) => drop(halves),
                }
            }
            Ok(halves) => drop(halves),
            Err(err) => {
                tracing::debug!(%err, "dial failed");
                let err = Arc::new(err);
                inner.redial.last_error = Some(Arc::clone(&err));
                inner.complete_force(Err(Error::Io(err)));
                inner.attempt_failed(now);
            }
        }
        inner.process_events(now, &self.shared.hub, Party::Driver);
    }

    /// Once the pipe has closed: stops dialling, and ends the driver when
    /// no connection is left to finish (close reports still going out).
    fn wind_down(&mut self, inner: &mut Inner) -> Poll<()> {
        if inner.core.state() != ConnectionState::Closed {
            return Poll::Pending;
        }
        self.dial = None;
        inner.redial.dialing = false;
        if !inner.conns.is_empty() {
            return Poll::Pending;
        }
        inner.publish();
        Poll::Ready(())
    }

    /// Looks at the readiness wakes the application has not claimed (see
    /// [`Hub::check_claims`](super::hub::Hub::check_claims)): whether the
    /// driver reads the current connection even while the application's
    /// reader waits on it.
    fn check_claims(&mut self, now: Instant) -> ReadCurrent {
        let hub = &self.shared.hub;
        let claims = hub.check_claims(now, self.claim_deadline);
        self.claim_deadline = claims.watch_until;
        // What is readable now, the driver reads below.
        hub.read_ready.store(false, Ordering::Release);
        if claims.take_over_read { ReadCurrent::Always } else { ReadCurrent::UnlessReaderWaits }
    }

    /// Moves bytes on every connection the application does not serve:
    /// what the core has to send, and what has arrived (on the current
    /// connection only as `read_current` says). `own` wakes the driver for
    /// the connections that are not current, which are the driver's alone;
    /// the current connection's readiness goes through the hub, as the
    /// application may wait on it.
    fn move_bytes(&self, inner: &mut Inner, now: Instant, read_current: ReadCurrent, own: &Waker) -> Backlog {
        let shared = &self.shared;
        let mut backlog = Backlog::Clear;
        for _ in 0..4 {
            let mut progress = false;
            backlog = Backlog::Clear;
            let generations: Vec<Generation> = inner.conns.iter().map(|conn| conn.generation).collect();
            for generation in generations {
                let current = inner.core.current_generation() == Some(generation);
                let (write_waker, read_waker) =
                    if current { (&shared.write_waker, &shared.read_waker) } else { (own, own) };
                if inner.transmit(now, generation, &mut Context::from_waker(write_waker)) == Sent::Progress {
                    progress = true;
                }
                let reads = !current || read_current == ReadCurrent::Always || !shared.hub.reader_waiting();
                if !reads {
                    continue;
                }
                match inner.receive(now, generation, &mut Context::from_waker(read_waker), ReceiveUntil::Blocked) {
                    Received::Lost => {
                        inner.core.connection_lost(now, generation);
                        progress = true;
                    }
                    Received::Progress => progress = true,
                    Received::More => {
                        progress = true;
                        backlog = Backlog::Unannounced;
                    }
                    Received::Blocked => {}
                }
            }
            inner.process_events(now, &shared.hub, Party::Driver);
            if !progress {
                break;
            }
        }
        backlog
    }

    /// Starts a dial when the dialling side has no connection and its
    /// backoff allows, or gives up when the pipe has been disconnected
    /// longer than [`Backoff::give_up_after`](crate::Backoff::give_up_after).
    fn dial_if_due(&mut self, inner: &mut Inner, now: Instant) -> DialWait {
        let Some(dialer) = &self.dialer else { return DialWait::None };
        if self.dial.is_some() || inner.core.state() != ConnectionState::Disconnected {
            return DialWait::None;
        }
        let since = *inner.redial.disconnected_since.get_or_insert(now);
        let give_up = inner.options.backoff.give_up_after.is_some_and(|limit| now >= since + limit);
        if give_up && inner.redial.failures > 0 {
            let error = Error::GaveUp {
                attempts: u64::from(inner.redial.failures),
                last_error: inner.redial.last_error.clone(),
            };
            inner.core.abort(now, error);
            inner.process_events(now, &self.shared.hub, Party::Driver);
            return DialWait::GaveUp;
        }
        match inner.redial.not_before {
            Some(at) if at > now => DialWait::Until(at),
            _ => {
                self.dial = Some(dialer());
                inner.redial.dialing = true;
                inner.publish();
                DialWait::None
            }
        }
    }

    /// Polls the dial in flight; ready when it has finished (its result is
    /// kept for the next round, which locks the state).
    fn poll_dial(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(dial) = self.dial.as_mut() else { return Poll::Pending };
        let result = std::task::ready!(dial.as_mut().poll(cx));
        self.dial = None;
        self.dialed = Some(result);
        Poll::Ready(())
    }

    /// Arms the timer for `next`; ready when that has passed already.
    fn sleep_until(&mut self, next: Option<Instant>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(at) = next else { return Poll::Pending };
        if at <= now() {
            return Poll::Ready(());
        }
        self.timer.as_mut().reset(at.into());
        self.timer.as_mut().poll(cx)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.shared.hub.driver_ended();
    }
}

/// Runs the core's timers that are due.
fn keep_time(inner: &mut Inner, now: Instant) {
    if inner.core.poll_timeout().is_some_and(|at| at <= now) {
        inner.core.handle_timeout(now);
    }
}

/// Drops the current connection if a forced reconnect asked for it, and
/// lets the next dial go at once.
fn apply_forced_reconnect(inner: &mut Inner, now: Instant) {
    if std::mem::take(&mut inner.force_requested) {
        if let Some(generation) = inner.core.current_generation() {
            inner.core.connection_lost(now, generation);
        }
        inner.redial.not_before = None;
        inner.redial.failures = 0;
    }
}

/// Whether the driver reads the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadCurrent {
    /// Only while the application's reader does not wait on it.
    UnlessReaderWaits,
    /// Also while it does: a readiness wake left to the application went
    /// unclaimed.
    Always,
}

/// What [`Driver::move_bytes`] left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backlog {
    /// Nothing, or nothing that readiness will not announce.
    Clear,
    /// Bytes wait on a connection that no readiness will announce.
    Unannounced,
}

/// What the dialling step leaves the driver to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DialWait {
    /// Nothing: a dial is in flight (or has just started), or none is
    /// needed.
    None,
    /// The backoff's delay: the next dial is due then.
    Until(Instant),
    /// The pipe gave up reconnecting and has just closed: look again.
    GaveUp,
}

/// A dial in flight: the transport it opens, already split.
pub(super) type DialFuture = Pin<Box<dyn Future<Output = io::Result<Halves>> + Send>>;

/// Starts a dial; `None` on the passive side.
pub(super) type Dialer = Option<Box<dyn Fn() -> DialFuture + Send + Sync>>;
