//! Helpers shared by the integration tests: a transport wrapper whose
//! connection can be cut or black-holed from the test, pipe pairs over Unix
//! socket pairs, and a deadline for every await.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

pub mod net;

use backedpipe::{BackedPipe, Backoff, Halves, Options, PipeControl, Transport};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// Awaits `future`, failing the test if it takes longer than `seconds`.
pub async fn within<F: Future>(seconds: u64, what: &str, future: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(seconds), future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: no result within {seconds} s"),
    }
}

/// What a test can do to one connection.
#[derive(Default)]
pub struct Fault {
    cut: AtomicBool,
    blackhole: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Fault {
    /// The connection fails now in both directions (as a reset would).
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Whether [`Fault::cut`] was called.
    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// The connection silently stops delivering; writes vanish.
    pub fn blackhole(&self) {
        self.blackhole.store(true, Ordering::SeqCst);
    }

    fn wake(&self) {
        for waker in self.wakers.lock().unwrap().drain(..) {
            waker.wake();
        }
    }

    fn park(&self, cx: &Context<'_>) {
        self.wakers.lock().unwrap().push(cx.waker().clone());
    }
}

/// A transport with a [`Fault`] switch. A socket in it splits into
/// independent halves, each with the same switch.
pub struct Faulty<S> {
    inner: S,
    fault: Switch,
}

/// A connection's hold on its [`Fault`]: dropping it wakes whoever waits
/// on the fault, as the end of a connection would.
struct Switch(Arc<Fault>);

impl Drop for Switch {
    fn drop(&mut self) {
        self.0.wake();
    }
}

impl std::ops::Deref for Switch {
    type Target = Fault;
    fn deref(&self) -> &Fault {
        &self.0
    }
}

impl<S> Faulty<S> {
    pub fn new(inner: S) -> (Faulty<S>, Arc<Fault>) {
        let fault = Arc::new(Fault::default());
        (Faulty::with_fault(inner, Arc::clone(&fault)), fault)
    }

    /// `inner` with the switch `fault`.
    pub fn with_fault(inner: S, fault: Arc<Fault>) -> Faulty<S> {
        Faulty { inner, fault: Switch(fault) }
    }

    /// Splits into halves with `into_split` and puts each behind the same
    /// switch.
    fn split<R, W>(self, into_split: impl FnOnce(S) -> (R, W)) -> Halves
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let Faulty { inner, fault } = self;
        let (read, write) = into_split(inner);
        let read = Faulty::with_fault(read, Arc::clone(&fault.0));
        Halves::independent(read, Faulty::with_fault(write, Arc::clone(&fault.0)))
    }
}

impl Transport for Faulty<UnixStream> {
    fn into_halves(self: Box<Self>) -> Halves {
        self.split(UnixStream::into_split)
    }
}

impl Transport for Faulty<TcpStream> {
    fn into_halves(self: Box<Self>) -> Halves {
        self.split(TcpStream::into_split)
    }
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "cut by the test")
}

impl<S: AsyncRead + Unpin> AsyncRead for Faulty<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.fault.cut.load(Ordering::SeqCst) {
            return Poll::Ready(Err(reset()));
        }
        if self.fault.blackhole.load(Ordering::SeqCst) {
            self.fault.park(cx);
            return Poll::Pending;
        }
        self.fault.park(cx);
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Faulty<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.fault.cut.load(Ordering::SeqCst) {
            return Poll::Ready(Err(reset()));
        }
        if self.fault.blackhole.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.fault.cut.load(Ordering::SeqCst) {
            return Poll::Ready(Err(reset()));
        }
        if self.fault.blackhole.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(bufs.iter().map(|buf| buf.len()).sum()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The idle timeout of [`options`].
pub const IDLE_TIMEOUT: Duration = Duration::from_millis(1000);

/// Timers short enough for tests, long enough for a loaded machine.
pub fn options() -> Options {
    Options::new()
        .keepalive_interval(Duration::from_millis(200))
        .idle_timeout(IDLE_TIMEOUT)
        .handshake_timeout(Duration::from_secs(2))
        .backoff(backoff())
}

/// The reconnect timing of [`options`]: quick retries.
pub fn backoff() -> Backoff {
    Backoff::new().initial_delay(Duration::from_millis(5)).max_delay(Duration::from_millis(100))
}

/// The transport of a [`Pair`].
pub type Conn = Faulty<UnixStream>;

/// Two pipes over Unix socket pairs: every dial of the client makes a new
/// pair and hands one end to the server pipe.
pub struct Pair {
    pub client: BackedPipe,
    pub server: BackedPipe,
    /// Dials so far.
    pub dials: Arc<AtomicUsize>,
    /// The fault switch of the client's newest connection.
    pub newest: Arc<Mutex<Option<Arc<Fault>>>>,
}

impl Pair {
    pub fn new(client_options: Options, server_options: Options) -> Pair {
        let server = BackedPipe::passive(server_options);
        let dials = Arc::new(AtomicUsize::new(0));
        let newest = Arc::new(Mutex::new(None));
        let dial = dialer(server.control(), Arc::clone(&dials), Arc::clone(&newest));
        let client = BackedPipe::connect(dial, client_options);
        Pair { client, server, dials, newest }
    }

    /// Cuts the client's current connection.
    pub fn cut(&self) {
        if let Some(fault) = self.newest.lock().unwrap().as_ref() {
            fault.cut();
        }
    }

    pub fn dial_count(&self) -> usize {
        self.dials.load(Ordering::SeqCst)
    }
}

/// A dialler that connects to `server` over a new Unix socket pair.
pub fn dialer(
    server: PipeControl,
    dials: Arc<AtomicUsize>,
    newest: Arc<Mutex<Option<Arc<Fault>>>>,
) -> impl Fn() -> Pin<Box<dyn Future<Output = io::Result<Conn>> + Send>> + Send + Sync + 'static {
    move || {
        let server = server.clone();
        let dials = Arc::clone(&dials);
        let newest = Arc::clone(&newest);
        Box::pin(async move {
            dials.fetch_add(1, Ordering::SeqCst);
            let (ours, theirs) = UnixStream::pair()?;
            let (ours, fault) = Faulty::new(ours);
            // Both ends share the switch: a cut loses what is in flight.
            let theirs = Faulty::with_fault(theirs, Arc::clone(&fault));
            server.resume(theirs).map_err(io::Error::from)?;
            *newest.lock().unwrap() = Some(fault);
            Ok(ours)
        })
    }
}

/// Fills `buf` with test stream `stream` from position `seq` (both
/// multiples of 8): every 8-byte word is a mix of the stream and position.
pub fn fill(stream: u64, seq: u64, buf: &mut [u8]) {
    assert!(seq.is_multiple_of(8) && buf.len().is_multiple_of(8));
    for (index, chunk) in buf.chunks_exact_mut(8).enumerate() {
        let mut word = (seq / 8 + index as u64) ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        word = (word ^ (word >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        word = (word ^ (word >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        chunk.copy_from_slice(&(word ^ (word >> 31)).to_le_bytes());
    }
}

/// An order-sensitive 64-bit hash whose value does not depend on how the
/// bytes were split into calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hash {
    state: u64,
    carry: [u8; 8],
    carry_len: usize,
    len: u64,
}

impl Hash {
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.carry_len > 0 {
            let take = (8 - self.carry_len).min(bytes.len());
            self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&bytes[..take]);
            self.carry_len += take;
            bytes = &bytes[take..];
            if self.carry_len < 8 {
                return;
            }
            let word = u64::from_le_bytes(self.carry);
            self.mix(word);
            self.carry_len = 0;
        }
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.mix(u64::from_le_bytes(chunk.try_into().unwrap()));
        }
        let rest = chunks.remainder();
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carry_len = rest.len();
    }

    fn mix(&mut self, word: u64) {
        self.state = (self.state ^ word).wrapping_mul(0x0000_0100_0000_01B3).rotate_left(23) ^ 0x9E37_79B9;
    }

    /// The hash of everything so far, and the byte count.
    pub fn finish(&self) -> (u64, u64) {
        let mut state = *self;
        for index in 0..state.carry_len {
            let byte = state.carry[index];
            state.mix(u64::from(byte) | 0x100);
        }
        (state.state, self.len)
    }
}
