//! The driver: one task per pipe that dials (on the active side), runs
//! handshakes, keeps the core's timers, moves bytes on every connection
//! the application does not serve, and takes over readiness the
//! application leaves unclaimed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::conn_io::{ReceiveUntil, Received, Sent};
use super::now;
use super::state::{Party, Shared};
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

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let shared = Arc::clone(&this.shared);
        shared.hub.register_driver(cx.waker());
        let own_waker = cx.waker().clone();
        for _ in 0..64 {
            let now = now();
            let mut inner = shared.lock();
            if let Some(result) = this.dialed.take() {
                inner.redial.dialing = false;
                match result {
                    Ok(io) if inner.core.state() != ConnectionState::Closed => {
                        match inner.core.connect(now, Nonce::random()) {
                            Ok(generation) => {
                                inner.add_conn(generation, io);
                                inner.redial.attempt = Some(generation);
                            }
                            Err(_) => drop(io),
                        }
                    }
                    Ok(io) => drop(io),
                    Err(err) => {
                        tracing::debug!(%err, "dial failed");
                        let err = Arc::new(err);
                        inner.redial.last_error = Some(Arc::clone(&err));
                        inner.complete_force(Err(Error::Io(err)));
                        inner.attempt_failed(now);
                    }
                }
                inner.process_events(now, &shared.hub, Party::Driver);
            }
            if inner.core.state() == ConnectionState::Closed {
                this.dial = None;
                inner.redial.dialing = false;
                if inner.conns.is_empty() {
                    inner.publish();
                    return Poll::Ready(());
                }
            }
            if inner.core.poll_timeout().is_some_and(|at| at <= now) {
                inner.core.handle_timeout(now);
            }
            let claim_read = this.check_claims(now);
            shared.hub.read_ready.store(false, Ordering::Release);
            if std::mem::take(&mut inner.force_requested) {
                if let Some(generation) = inner.core.current_generation() {
                    inner.core.connection_lost(now, generation);
                }
                inner.redial.not_before = None;
                inner.redial.failures = 0;
            }
            // Move bytes on every connection the application does not serve.
            let mut more = false;
            for _ in 0..4 {
                let mut progress = false;
                more = false;
                let generations: Vec<Generation> = inner.conns.iter().map(|conn| conn.generation).collect();
                for generation in generations {
                    // The current connection's readiness goes through the
                    // hub (the application may wait on it); any other
                    // connection is the driver's alone.
                    let current = inner.core.current_generation() == Some(generation);
                    let (write_waker, read_waker) =
                        if current { (&shared.write_waker, &shared.read_waker) } else { (&own_waker, &own_waker) };
                    if inner.transmit(now, generation, &mut Context::from_waker(write_waker)) == Sent::Progress {
                        progress = true;
                    }
                    if !current || claim_read || !shared.hub.reader_waiting() {
                        let mut cx = Context::from_waker(read_waker);
                        match inner.receive(now, generation, &mut cx, ReceiveUntil::Blocked) {
                            Received::Lost => {
                                inner.core.connection_lost(now, generation);
                                progress = true;
                            }
                            Received::Progress => progress = true,
                            Received::More => {
                                progress = true;
                                more = true;
                            }
                            Received::Blocked => {}
                        }
                    }
                }
                inner.process_events(now, &shared.hub, Party::Driver);
                if !progress {
                    break;
                }
            }
            // Dial when the dialling side has nothing.
            let mut dial_at = None;
            if this.dialer.is_some() && this.dial.is_none() && inner.core.state() == ConnectionState::Disconnected {
                let since = *inner.redial.disconnected_since.get_or_insert(now);
                let give_up = inner.options.backoff.give_up_after.is_some_and(|limit| now >= since + limit);
                if give_up && inner.redial.failures > 0 {
                    let error = Error::GaveUp {
                        attempts: u64::from(inner.redial.failures),
                        last_error: inner.redial.last_error.clone(),
                    };
                    inner.core.abort(now, error);
                    inner.process_events(now, &shared.hub, Party::Driver);
                    continue;
                }
                match inner.redial.not_before {
                    Some(at) if at > now => dial_at = Some(at),
                    _ => {
                        if let Some(dialer) = &this.dialer {
                            this.dial = Some(dialer());
                            inner.redial.dialing = true;
                            inner.publish();
                        }
                    }
                }
            }
            let next_timeout = inner.core.poll_timeout();
            drop(inner);
            if more {
                // Bytes wait that no readiness will announce: come back
                // after other tasks had their turn.
                cx.waker().wake_by_ref();
            }

            if let Some(dial) = this.dial.as_mut()
                && let Poll::Ready(result) = dial.as_mut().poll(cx)
            {
                this.dial = None;
                this.dialed = Some(result);
                continue;
            }

            let next = [next_timeout, dial_at, this.claim_deadline].into_iter().flatten().min();
            if let Some(at) = next {
                if at <= self::now() {
                    continue;
                }
                this.timer.as_mut().reset(at.into());
                if this.timer.as_mut().poll(cx).is_ready() {
                    continue;
                }
            }
            return Poll::Pending;
        }
        // Plenty done in one go: let other tasks run, then carry on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Driver {
    /// Looks at the readiness wakes the application has not claimed (see
    /// [`Hub::check_claims`](super::hub::Hub::check_claims)); returns
    /// whether the driver should read the current connection itself.
    fn check_claims(&mut self, now: Instant) -> bool {
        let claims = self.shared.hub.check_claims(now, self.claim_deadline);
        self.claim_deadline = claims.watch_until;
        claims.take_over_read
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.shared.hub.driver_ended();
    }
}

pub(super) type DialFuture = Pin<Box<dyn Future<Output = io::Result<Halves>> + Send>>;

/// Starts a dial; `None` on the passive side.
pub(super) type Dialer = Option<Box<dyn Fn() -> DialFuture + Send + Sync>>;
