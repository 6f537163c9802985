//! Moving bytes between the core and a connection: writing what the core
//! has to send, and reading into the core, each on the connection's half
//! alone (tried, never waited for: see the lock order in `state`). The
//! application's own calls (`app_io`) and the driver use them.
//!
//! Between DATA payloads a read takes up to [`STASH_BYTES`] at once, so
//! control frames and the next DATA header cost no read of their own; the
//! payload then goes into the core's buffer, or (in `app_io`) straight
//! into the caller's.
//!
//! A failed write does not end a connection at once: it is read on (for
//! a short while) until it ends, so that an ERROR frame the peer sent
//! before it closed is still seen (see
//! [`Core::write_failed`](crate::core::Core::write_failed)).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::state::{Inner, WriteSide, try_half};
use crate::core::Generation;

/// The most bytes read from a connection in one go between DATA payloads
/// (whole control frames and the start of the next payload).
pub(super) const STASH_BYTES: usize = 4096;

impl Inner {
    /// Writes what the core has for `generation` until done or blocked.
    pub(super) fn transmit(&mut self, now: Instant, generation: Generation, cx: &mut Context<'_>) -> Sent {
        let Some(index) = self.conn_index(generation) else { return Sent::Blocked };
        let writer = Arc::clone(&self.conns[index].writer);
        let Some(mut side) = try_half(&writer) else { return Sent::Blocked };
        self.transmit_on(now, generation, &mut side, cx)
    }

    /// [`Inner::transmit`] with the connection's write half already locked.
    fn transmit_on(
        &mut self,
        now: Instant,
        generation: Generation,
        conn: &mut WriteSide,
        cx: &mut Context<'_>,
    ) -> Sent {
        let mut sent = Sent::Blocked;
        while let Some(transmit) = self.core.poll_transmit(generation) {
            if transmit.is_empty() {
                break;
            }
            let slices = transmit.io_slices();
            let outcome = Pin::new(&mut conn.io).poll_write_vectored(cx, &slices);
            match self.wrote(now, generation, conn, outcome) {
                Wrote::Bytes => sent = Sent::Progress,
                Wrote::Blocked => break,
                Wrote::Failed => return Sent::Progress,
            }
        }
        self.finish_transmit(now, generation, conn, cx, sent)
    }

    /// Accounts for one write to `generation`.
    pub(super) fn wrote(
        &mut self,
        now: Instant,
        generation: Generation,
        conn: &mut WriteSide,
        outcome: Poll<io::Result<usize>>,
    ) -> Wrote {
        let count = match &outcome {
            Poll::Ready(Ok(count)) => *count,
            _ => 0,
        };
        self.core.transmitted(now, generation, count);
        match outcome {
            Poll::Ready(Ok(0)) => {
                self.write_failed(now, generation);
                Wrote::Failed
            }
            Poll::Ready(Ok(_)) => {
                conn.flush_pending = true;
                Wrote::Bytes
            }
            Poll::Ready(Err(err)) => {
                tracing::debug!(%generation, %err, "write failed");
                self.write_failed(now, generation);
                Wrote::Failed
            }
            Poll::Pending => Wrote::Blocked,
        }
    }

    /// Flushes after the writes to `generation`, which did `sent`; what
    /// writing did in all.
    pub(super) fn finish_transmit(
        &mut self,
        now: Instant,
        generation: Generation,
        conn: &mut WriteSide,
        cx: &mut Context<'_>,
        sent: Sent,
    ) -> Sent {
        if conn.flush_pending {
            match Pin::new(&mut conn.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => conn.flush_pending = false,
                Poll::Ready(Err(_)) => {
                    self.write_failed(now, generation);
                    return Sent::Progress;
                }
                Poll::Pending => {}
            }
        }
        sent
    }

    /// Writing to `generation` failed: the core keeps reading it for a
    /// while (see [`Core::write_failed`](crate::core::Core::write_failed));
    /// the driver must arm the timer.
    fn write_failed(&mut self, now: Instant, generation: Generation) {
        self.core.write_failed(now, generation);
        self.rearm_driver = true;
    }

    /// Reads from `generation` into the core as far as `until` says.
    pub(super) fn receive(
        &mut self,
        now: Instant,
        generation: Generation,
        cx: &mut Context<'_>,
        until: ReceiveUntil,
    ) -> Received {
        let Some(index) = self.conn_index(generation) else { return Received::Blocked };
        let recv_limit = self.options.recv_buffer_bytes;
        let reader = Arc::clone(&self.conns[index].reader);
        let Some(mut io) = try_half(&reader) else { return Received::Blocked };
        let core = &mut self.core;
        let mut progress = false;
        let mut stash = [MaybeUninit::<u8>::uninit(); STASH_BYTES];
        // Bounded so that one busy connection cannot starve the others.
        for round in 0.. {
            if round == 64 {
                return Received::More;
            }
            // Between DATA payloads, one read takes the next frames whole
            // (acknowledgements, a DATA header and the first bytes of its
            // payload) instead of one read per header and body.
            let stashing =
                core.between_payloads(generation) && core.recv_buffered() < recv_limit.saturating_sub(STASH_BYTES);
            let outcome = if stashing {
                let mut buf = ReadBuf::uninit(&mut stash);
                let outcome = Pin::new(&mut *io).poll_read(cx, &mut buf);
                if let Poll::Ready(Ok(())) = outcome
                    && !buf.filled().is_empty()
                {
                    core.handle_read(now, generation, buf.filled());
                }
                outcome.map_ok(|()| buf.filled().len())
            } else {
                let Some(target) = core.recv_target(generation) else { break };
                let mut buf = ReadBuf::new(target);
                let outcome = Pin::new(&mut *io).poll_read(cx, &mut buf);
                let count = buf.filled().len();
                if let Poll::Ready(Ok(())) = outcome {
                    core.recv_done(now, generation, count);
                }
                outcome.map_ok(|()| count)
            };
            match outcome {
                Poll::Ready(Ok(count)) => {
                    if count == 0 {
                        return Received::Lost;
                    }
                    progress = true;
                    if core.generations().all(|g| g != generation) {
                        break;
                    }
                    if until == ReceiveUntil::Payload
                        && (core.direct_read_len(generation) > 0 || core.recv_buffered() > 0)
                    {
                        break;
                    }
                }
                Poll::Ready(Err(err)) => {
                    tracing::debug!(%generation, %err, "read failed");
                    return Received::Lost;
                }
                Poll::Pending => break,
            }
        }
        if progress { Received::Progress } else { Received::Blocked }
    }
}

/// How far [`Inner::receive`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReceiveUntil {
    /// Until the connection would block or the receive buffer is full.
    Blocked,
    /// Also until a DATA payload can go straight into the application's
    /// buffer, or the application has bytes to take.
    Payload,
}

/// What writing to a connection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sent {
    /// Bytes went, or writing failed (and the core now reads the
    /// connection until it ends): the state changed.
    Progress,
    /// Nothing went: nothing waits, the write half is busy, or the
    /// transport would block (and will wake the waker given).
    Blocked,
}

/// What reading from a connection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Received {
    /// Bytes came; the transport would now block (and will wake the waker
    /// given), or there is no room for more.
    Progress,
    /// Bytes came and more are waiting: the transport will not wake anyone
    /// for them, so the caller must come back.
    More,
    /// Nothing came: the read half is busy, or the transport will wake the
    /// waker given.
    Blocked,
    /// The connection ended or failed.
    Lost,
}

/// Outcome of one write to a connection.
pub(super) enum Wrote {
    /// Bytes went.
    Bytes,
    /// The transport would block (and will wake the waker given).
    Blocked,
    /// Writing failed; see [`Inner::write_failed`].
    Failed,
}
