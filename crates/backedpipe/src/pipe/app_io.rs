//! The application's calls: reads, writes, flushes, shutdown and close.
//! They do the current connection's I/O inline, with the state unlocked
//! during each system call and the connection's half held instead (the
//! locks and their order are in `state`): a read takes DATA payload
//! straight into the caller's buffer, a write lends the caller's bytes to
//! the connection.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, ReadBuf};

use super::conn_io::{ReceiveUntil, Received, STASH_BYTES, Sent, Wrote};
use super::hub::{Wakes, WriterCall};
use super::now;
use super::state::{Inner, Party, Shared, StateGuard, lock_half, try_half};
use crate::core::{ConnectionState, Generation, ReadOutcome};
use crate::error::Error;
use crate::send_queue::MIN_SHARED_CHUNK;

/// Room on the stack for a DATA frame's header and the control frames
/// (an ACK, a PING, a PONG) that go before it in the same write.
const HEAD_ON_STACK: usize = 96;

impl Shared {
    /// After input on `generation`: events, then whatever the core wants to
    /// send on the current connection (ACKs, pongs).
    fn after_input(&self, inner: &mut Inner, now: Instant) {
        inner.process_events(now, &self.hub, Party::Reader);
        if let Some(generation) = inner.core.current_generation() {
            inner.transmit(now, generation, &mut self.write_cx());
            inner.process_events(now, &self.hub, Party::Reader);
        }
    }

    /// Writes what the core has for `generation` until done or blocked, as
    /// [`Inner::transmit`] does, except that DATA payload is written with
    /// the state unlocked, from shared references to the send buffer's
    /// chunks ([`Transmit::payload_bytes`](crate::core::Transmit::payload_bytes)):
    /// the connection's write half is held instead, so that no one else
    /// writes to it meanwhile, and the core is told the write is out (see
    /// [`Core::lend_transmit`](crate::core::Core::lend_transmit)). Others
    /// who find the half taken leave their frames in the core; they are
    /// written here before the half is let go, while the state is held.
    fn write_out<'a>(&'a self, mut inner: StateGuard<'a>, now: Instant, generation: Generation) -> StateGuard<'a> {
        let Some(index) = inner.conn_index(generation) else { return inner };
        let writer = Arc::clone(&inner.conns[index].writer);
        let Some(mut conn) = try_half(&writer) else { return inner };
        let mut cx = self.write_cx();
        let mut sent = Sent::Blocked;
        while let Some(transmit) = inner.core.poll_transmit(generation) {
            if transmit.is_empty() {
                break;
            }
            let outcome = if transmit.payload_seq().is_some() {
                // The frame header, after the control frames that go
                // with it (a few dozen bytes at most).
                let header = transmit.parts()[0];
                let mut on_stack = [0u8; HEAD_ON_STACK];
                let on_heap;
                let head: &[u8] = if let Some(room) = on_stack.get_mut(..header.len()) {
                    room.copy_from_slice(header);
                    room
                } else {
                    on_heap = header.to_vec();
                    &on_heap
                };
                let [first, second] = transmit.payload_bytes();
                inner.core.lend_transmit(generation);
                drop(inner);
                let slices = [io::IoSlice::new(head), io::IoSlice::new(&first), io::IoSlice::new(&second)];
                let outcome = Pin::new(&mut conn.io).poll_write_vectored(&mut cx, &slices);
                inner = self.lock();
                outcome
            } else {
                let slices = transmit.io_slices();
                Pin::new(&mut conn.io).poll_write_vectored(&mut cx, &slices)
            };
            match inner.wrote(now, generation, &mut conn, outcome) {
                Wrote::Bytes => sent = Sent::Progress,
                Wrote::Blocked => break,
                Wrote::Failed => return inner,
            }
        }
        inner.finish_transmit(now, generation, &mut conn, &mut cx, sent);
        drop(conn);
        inner
    }

    pub(super) fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let _span = self.span.enter();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // Take part in the runtime's cooperative budget: a task that reads
        // buffered bytes in a loop still lets the driver and others run.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        self.hub.register_reader(cx.waker());
        let mut inner = self.lock();
        let now = now();
        let mut rounds = 0;
        let result = loop {
            let was_full = inner.core.recv_buffered() >= inner.options.recv_buffer_bytes;
            match inner.core.read(buf.initialize_unfilled()) {
                ReadOutcome::Data(count) => {
                    buf.advance(count);
                    if was_full {
                        // The driver paused reading for lack of room.
                        self.hub.wake_driver();
                    }
                    // Buffered bytes were only the start of a payload: the
                    // rest may go straight into the caller's buffer now.
                    if buf.remaining() > 0
                        && let Some(generation) = inner.core.current_generation()
                    {
                        inner = self.read_io(inner, now, generation, buf, ReadScope::PayloadOnly).0;
                    }
                    break Poll::Ready(Ok(()));
                }
                ReadOutcome::EndOfStream => break Poll::Ready(Ok(())),
                ReadOutcome::Failed(err) => break Poll::Ready(Err(err.into())),
                ReadOutcome::Pending => {}
            }
            let Some(generation) = inner.core.current_generation() else { break Poll::Pending };
            if inner.conn_index(generation).is_none() {
                break Poll::Pending;
            }
            rounds += 1;
            if rounds > 64 {
                // Bounded so that a stream of control frames cannot keep
                // this task (and its thread) to itself.
                cx.waker().wake_by_ref();
                break Poll::Pending;
            }
            let outcome;
            (inner, outcome) = self.read_io(inner, now, generation, buf, ReadScope::Anything);
            match outcome {
                AppRead::Data => break Poll::Ready(Ok(())),
                AppRead::Again => {}
                AppRead::Blocked => break Poll::Pending,
            }
        };
        drop(inner);
        if result.is_ready() {
            coop.made_progress();
            self.hub.clear_reader();
            self.hub.reading();
        }
        result
    }

    /// One read from connection `generation` for the application: DATA
    /// payload straight into `buf` if the core allows it now, otherwise
    /// (if `scope` allows) the next frames into the core.
    ///
    /// The state is unlocked during the system call: the connection's read
    /// half is held instead, so that no one else reads from it meanwhile,
    /// and the core is told what was read before anyone else may read. A
    /// connection the pipe gave up on meanwhile keeps what was read from it
    /// (the next connection replays it).
    fn read_io<'a>(
        &'a self,
        mut inner: StateGuard<'a>,
        now: Instant,
        generation: Generation,
        buf: &mut ReadBuf<'_>,
        scope: ReadScope,
    ) -> (StateGuard<'a>, AppRead) {
        let Some(index) = inner.conn_index(generation) else { return (inner, AppRead::Blocked) };
        let reader = Arc::clone(&inner.conns[index].reader);
        let mut io = match try_half(&reader) {
            Some(io) => io,
            None => {
                // The half is held only by one of the pipe's tasks in a
                // system call; wait for it without the state (lock order
                // rule 1 in `state`).
                drop(inner);
                let io = lock_half(&reader);
                inner = self.lock();
                if inner.core.current_generation() != Some(generation) || inner.core.recv_buffered() > 0 {
                    return (inner, AppRead::Again);
                }
                io
            }
        };
        let direct = inner.core.direct_read_len(generation);
        let stash = direct == 0
            && scope == ReadScope::Anything
            && inner.core.between_payloads(generation)
            && inner.core.recv_buffered() < inner.options.recv_buffer_bytes.saturating_sub(STASH_BYTES);
        if direct == 0 && !stash {
            drop(io);
            if scope == ReadScope::PayloadOnly {
                return (inner, AppRead::Blocked);
            }
            // The rest of a payload goes into the core's buffer (it holds
            // bytes the application has not taken yet): under the lock.
            let outcome = inner.receive(now, generation, &mut self.read_cx(), ReceiveUntil::Payload);
            let result = match outcome {
                Received::Progress | Received::More => AppRead::Again,
                Received::Blocked => {
                    if inner.core.recv_target(generation).is_none() && inner.core.recv_buffered() == 0 {
                        // Nothing to read into: only a closed connection
                        // gets here; the driver handles it.
                        self.hub.wake_driver();
                    }
                    AppRead::Blocked
                }
                Received::Lost => {
                    inner.core.connection_lost(now, generation);
                    AppRead::Again
                }
            };
            if !matches!(result, AppRead::Blocked) {
                self.after_input(&mut inner, now);
            }
            return (inner, result);
        }
        drop(inner);
        let mut stash_buf = [MaybeUninit::<u8>::uninit(); STASH_BYTES];
        let mut read_buf = if stash {
            ReadBuf::uninit(&mut stash_buf)
        } else {
            let unfilled = buf.initialize_unfilled();
            let limit = direct.min(unfilled.len());
            ReadBuf::new(&mut unfilled[..limit])
        };
        let outcome = Pin::new(&mut **io).poll_read(&mut self.read_cx(), &mut read_buf);
        let count = read_buf.filled().len();
        let mut inner = self.lock();
        let result = match outcome {
            Poll::Ready(Ok(())) if count > 0 => {
                if stash {
                    inner.core.handle_read(now, generation, read_buf.filled());
                    AppRead::Again
                } else if inner.core.direct_read_len(generation) >= count {
                    inner.core.direct_read_done(now, generation, count);
                    buf.advance(count);
                    AppRead::Data
                } else {
                    AppRead::Again
                }
            }
            Poll::Ready(_) => {
                inner.core.connection_lost(now, generation);
                AppRead::Again
            }
            Poll::Pending => AppRead::Blocked,
        };
        // The core knows what was read: others may read now.
        drop(io);
        if !matches!(result, AppRead::Blocked) {
            self.after_input(&mut inner, now);
        }
        (inner, result)
    }

    /// Writes `chunk` whole, without a copy: the `write_chunk` of the pipe
    /// and of its write halves.
    pub(super) async fn write_chunk(&self, mut chunk: Bytes) -> Result<(), Error> {
        while !chunk.is_empty() {
            let taken = std::future::poll_fn(|cx| self.poll_write(cx, WriteSource::Chunk(&chunk))).await?;
            chunk.advance(taken);
        }
        Ok(())
    }

    /// Writes from `source`: takes what the send buffer has room for and
    /// hands what waits to the connection; how many bytes were taken.
    pub(super) fn poll_write(&self, cx: &mut Context<'_>, source: WriteSource<'_>) -> Poll<Result<usize, Error>> {
        let _span = self.span.enter();
        if source.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // A writer filling the send buffer while disconnected never meets
        // a blocking transport: the budget makes it yield now and then.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        self.hub.register_writer(cx.waker(), WriterCall::Write);
        // Bytes to copy are copied before the state is locked: the reader
        // and the driver need the state meanwhile.
        let taken = source.into_taken(self);
        let mut inner = self.lock();
        if inner.core.current_generation().is_none()
            && inner.core.state() != ConnectionState::Closed
            && self.hub.driver_woken()
        {
            // Without a connection, a writer could fill the whole send
            // buffer before the driver (woken to reconnect, and as likely
            // as not on this thread) gets to run: let it run first.
            drop(inner);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let now = now();
        let mut result = Poll::Pending;
        for _ in 0..2 {
            let written = match &taken {
                Taken::Small(data) => inner.core.write(data),
                Taken::Chunk(chunk) => inner.core.write_chunk(chunk.clone()),
            };
            match written {
                Err(err) => {
                    result = Poll::Ready(Err(err));
                    break;
                }
                Ok(0) => {}
                Ok(count) => result = Poll::Ready(Ok(count)),
            }
            // Hand the bytes to the connection now (or, when the buffer
            // was full, make room by sending what waits), and take in
            // acknowledgements that arrived meanwhile.
            if let Some(generation) = inner.core.current_generation() {
                inner = self.write_out(inner, now, generation);
                // Readiness reaches the runtime only now and then while it
                // is busy; a writer with more than an acknowledgement
                // interval outstanding looks for them itself (cheap: a
                // transport not known to be readable is not even asked).
                // Acknowledgements taken in late let the send buffer grow.
                let ack_overdue = inner.core.unacked_bytes() as u64 > inner.options.ack_interval_bytes;
                let read_ready = !self.hub.reader_busy() && self.hub.read_ready.swap(false, Ordering::Acquire);
                if (read_ready || ack_overdue) && !self.hub.reader_waiting() {
                    self.hub.claim_read();
                    match inner.receive(now, generation, &mut self.read_cx(), ReceiveUntil::Blocked) {
                        Received::Lost => inner.core.connection_lost(now, generation),
                        Received::More => {
                            self.hub.read_ready.store(true, Ordering::Release);
                            self.hub.wake_driver();
                        }
                        Received::Progress | Received::Blocked => {}
                    }
                }
                inner.process_events(now, &self.hub, Party::Writer);
            }
            if result.is_ready() {
                break;
            }
        }
        let needs_acks = result.is_pending() && inner.core.awaits_acknowledgements();
        drop(inner);
        if result.is_ready() {
            coop.made_progress();
            self.hub.clear_writer();
            self.hub.writing();
        } else if needs_acks {
            self.hub.register_writer(cx.waker(), WriterCall::WriteAwaitingAcks);
        }
        result
    }

    pub(super) fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _span = self.span.enter();
        self.hub.register_writer(cx.waker(), WriterCall::Flush);
        let mut inner = self.lock();
        let now = now();
        let result = if let Some(err) = inner.core.failure() {
            Poll::Ready(Err(err.clone().into()))
        } else if inner.core.state() == ConnectionState::Closed {
            Poll::Ready(Err(Error::Closed.into()))
        } else {
            if let Some(generation) = inner.core.current_generation() {
                inner.transmit(now, generation, &mut self.write_cx());
                inner.process_events(now, &self.hub, Party::Writer);
            }
            // Without a connection the bytes wait in the send buffer for
            // the next one (they are replayed then): unless configured to
            // wait for it, there is nothing to wait for.
            let flushed = match inner.core.current_generation() {
                None => !inner.options.flush_waits_for_connection,
                Some(generation) => {
                    inner.core.all_transmitted()
                        && inner
                            .conn_index(generation)
                            .is_some_and(|i| try_half(&inner.conns[i].writer).is_some_and(|side| !side.flush_pending))
                }
            };
            if flushed { Poll::Ready(Ok(())) } else { Poll::Pending }
        };
        drop(inner);
        if result.is_ready() {
            self.hub.clear_writer();
        }
        result
    }

    pub(super) fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _span = self.span.enter();
        self.hub.register_writer(cx.waker(), WriterCall::Shutdown);
        let mut inner = self.lock();
        let now = now();
        let result = match inner.core.shutdown_write() {
            // Completed before the pipe ended (e.g. the peer then closed).
            _ if inner.core.is_shutdown_complete() => Poll::Ready(Ok(())),
            Err(err) => Poll::Ready(Err(err.into())),
            Ok(()) => {
                if let Some(generation) = inner.core.current_generation() {
                    inner.transmit(now, generation, &mut self.write_cx());
                    inner.process_events(now, &self.hub, Party::Writer);
                }
                if inner.core.is_shutdown_complete() { Poll::Ready(Ok(())) } else { Poll::Pending }
            }
        };
        drop(inner);
        if result.is_ready() {
            self.hub.clear_writer();
        }
        result
    }

    pub(super) fn close(&self) {
        let _span = self.span.enter();
        let mut inner = self.lock();
        let now = now();
        inner.core.close(now);
        // One non-blocking attempt to tell the peer; the driver finishes it.
        let generations: Vec<Generation> = inner.core.generations().collect();
        for generation in generations {
            inner.transmit(now, generation, &mut self.write_cx());
        }
        inner.process_events(now, &self.hub, Party::Other);
        drop(inner);
        self.hub.wake(Wakes::ALL);
    }

    /// Closes, then waits until every connection has taken its close
    /// report (or was lost), at most `timeout`; whether the peer was told.
    pub(super) async fn close_gracefully(&self, timeout: Duration) -> bool {
        let (connected, abandoned_before) = {
            let inner = self.lock();
            (inner.core.current_generation().is_some(), inner.core.abandoned_reports())
        };
        self.close();
        let reported = async {
            loop {
                let drained = self.hub.drained.notified();
                tokio::pin!(drained);
                drained.as_mut().enable();
                if self.lock().conns.is_empty() {
                    return;
                }
                drained.await;
            }
        };
        tokio::time::timeout(timeout, reported).await.is_ok()
            && connected
            && self.lock().core.abandoned_reports() == abandoned_before
    }
}

/// Where the bytes of an application's write come from.
pub(super) enum WriteSource<'a> {
    /// The caller's buffer: copied (unless it is short) into a chunk of
    /// the pipe's copy storage.
    Borrowed(&'a [u8]),
    /// A chunk the send buffer keeps as it is.
    Chunk(&'a Bytes),
}

/// The most bytes of a borrowed buffer one write copies: the write-ahead
/// bound takes no more at once anyway (by default).
const COPY_LIMIT_BYTES: usize = 64 << 10;

impl<'a> WriteSource<'a> {
    fn is_empty(&self) -> bool {
        match self {
            WriteSource::Borrowed(data) => data.is_empty(),
            WriteSource::Chunk(chunk) => chunk.is_empty(),
        }
    }

    /// The bytes to offer the send buffer: a borrowed buffer's start is
    /// copied into a chunk of `shared`'s copy storage here, outside the
    /// state's lock.
    fn into_taken(self, shared: &Shared) -> Taken<'a> {
        match self {
            WriteSource::Borrowed(data) if data.len() < MIN_SHARED_CHUNK => Taken::Small(data),
            WriteSource::Borrowed(data) => Taken::Chunk(shared.copy(&data[..data.len().min(COPY_LIMIT_BYTES)])),
            WriteSource::Chunk(chunk) => Taken::Chunk(chunk.clone()),
        }
    }
}

/// What a write offers the send buffer.
enum Taken<'a> {
    /// Short: the send buffer copies it (with other short writes).
    Small(&'a [u8]),
    /// Kept as it is.
    Chunk(Bytes),
}

/// What one read for the application may take from the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadScope {
    /// DATA payload straight into the caller's buffer, or else the next
    /// frames into the core.
    Anything,
    /// Only DATA payload straight into the caller's buffer: the caller has
    /// bytes to return already.
    PayloadOnly,
}

/// Outcome of one read for the application.
enum AppRead {
    /// Bytes went into the application's buffer.
    Data,
    /// Something changed (frames read, the connection lost or replaced):
    /// look at the state again.
    Again,
    /// Nothing to read now; the transport will wake the reader.
    Blocked,
}
