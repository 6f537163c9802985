//! What a pipe runs over: the [`Transport`] trait, which says how a
//! connection splits into a read half and a write half, its
//! implementations for tokio's sockets (and, with the `child-stdio`
//! feature, transport-stream's `Stream`), and [`Joined`], which makes any
//! other byte stream a transport.
//!
//! The pipe reads and writes a connection from different tasks at once
//! (see [`BackedPipe`](crate::BackedPipe)), so it keeps each connection as
//! two halves. Whether those halves can work at the same time is a
//! property of the concrete transport, so the transport says it: a socket
//! splits into independent halves, a child's stdio into its stdout and
//! its stdin, and anything else into halves that share one lock.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

mod unix;

/// A connection a pipe can run over: a byte stream that knows how to split
/// into a read half and a write half.
///
/// [`BackedPipe`](crate::BackedPipe) takes connections as `impl Transport`
/// (from a [`Reconnector`](crate::Reconnector), from
/// [`BackedPipe::resume`](crate::BackedPipe::resume), from a
/// [`Listener`](crate::Listener)'s sources) and splits each at once; the
/// pipe itself carries no transport type. Implemented for
/// [`TcpStream`] and [`UnixStream`] (halves that never wait for each
/// other), for transport-stream's `Stream` with the
/// `child-stdio` feature (stdout and stdin), for `Box<dyn Transport>`,
/// and for [`Joined`], which takes any other `AsyncRead + AsyncWrite`.
///
/// ```
/// use backedpipe::{BackedPipe, Joined, Options, Transport};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Sockets are transports as they are; other streams through `Joined`.
/// let (socket, _) = tokio::net::UnixStream::pair().unwrap();
/// let (memory, _) = tokio::io::duplex(1024);
/// let transports: Vec<Box<dyn Transport>> = vec![Box::new(socket), Box::new(Joined::new(memory))];
///
/// let pipe = BackedPipe::passive(Options::new());
/// for conn in transports {
///     pipe.resume(conn).unwrap();
/// }
/// assert_eq!(pipe.stats().independent_halves, 1);
/// assert_eq!(pipe.stats().shared_halves, 1);
/// # }
/// ```
///
/// Implement it for a transport whose halves really are independent (two
/// descriptors, or a split that takes no lock shared by both
/// directions); for one that is not, [`Joined`] does it.
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Splits the connection into its read half and its write half. The
    /// pipe drops both when it is done with the connection: dropping them
    /// must end it as dropping the whole connection would.
    fn into_halves(self: Box<Self>) -> Halves;
}

/// Splits `conn` (boxed once, as [`Transport::into_halves`] takes it).
pub(crate) fn halves(conn: impl Transport) -> Halves {
    Box::new(conn).into_halves()
}

/// A connection's read half, as a pipe holds it.
type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;

/// A connection's write half, as a pipe holds it.
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// The two halves of a connection (see [`Transport::into_halves`]), and
/// whether they can read and write at the same time; a pipe counts
/// connections by it in its [`Stats`](crate::Stats).
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct Halves {
    pub(crate) read: ReadHalf,
    pub(crate) write: WriteHalf,
    pub(crate) split: Split,
}

/// How a connection's halves relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Split {
    /// Reading and writing never wait for each other.
    Independent,
    /// Each call takes one lock shared by both halves.
    Shared,
}

impl Halves {
    /// Halves that read and write at the same time without waiting for
    /// each other, e.g. a socket's own split or two pipes.
    pub fn independent(
        read: impl AsyncRead + Send + Unpin + 'static,
        write: impl AsyncWrite + Send + Unpin + 'static,
    ) -> Halves {
        Halves { read: Box::new(read), write: Box::new(write), split: Split::Independent }
    }

    /// Halves that take one lock shared by both directions for each call,
    /// as [`tokio::io::split`]'s do: a read and a write never run at the
    /// same time.
    pub fn shared(
        read: impl AsyncRead + Send + Unpin + 'static,
        write: impl AsyncWrite + Send + Unpin + 'static,
    ) -> Halves {
        Halves { read: Box::new(read), write: Box::new(write), split: Split::Shared }
    }
}

impl std::fmt::Debug for Halves {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Halves").field("split", &self.split).finish_non_exhaustive()
    }
}

impl Transport for TcpStream {
    fn into_halves(self: Box<Self>) -> Halves {
        let (read, write) = (*self).into_split();
        Halves::independent(read, write)
    }
}

impl Transport for UnixStream {
    /// Independent halves that ask the reactor only for what they wait
    /// for: the read half for reading, the write half for room to write
    /// only while the socket is full. (A Unix socket registered for room
    /// to write is woken each time its peer reads.)
    fn into_halves(self: Box<Self>) -> Halves {
        unix::halves(*self)
    }
}

impl Transport for Box<dyn Transport> {
    fn into_halves(self: Box<Self>) -> Halves {
        <dyn Transport>::into_halves(*self)
    }
}

#[cfg(feature = "child-stdio")]
#[cfg_attr(docsrs, doc(cfg(feature = "child-stdio")))]
impl Transport for transport_stream::Stream {
    /// The child's stdout and its stdin: two pipes, independent.
    fn into_halves(self: Box<Self>) -> Halves {
        let (read, write) = (*self).into_split();
        Halves::independent(read, write)
    }
}

/// Any byte stream as a [`Transport`] whose halves share one lock: it is
/// split with [`tokio::io::split`], so a read and a write on it never run
/// at the same time (each call holds the lock only for itself, so neither
/// waits for the other to have data or room). A pipe over it still reads
/// and writes, taking turns; for a transport whose directions can work at
/// once, implement [`Transport`] with its own split instead.
///
/// ```
/// use backedpipe::{BackedPipe, Joined, Options};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let server = BackedPipe::passive(Options::new());
/// let (ours, theirs) = tokio::io::duplex(64 << 10);
/// server.resume(Joined::new(theirs)).unwrap();
/// # drop(ours);
/// # }
/// ```
#[derive(Debug)]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct Joined<T> {
    io: T,
}

impl<T> Joined<T> {
    /// Wraps `io`.
    pub fn new(io: T) -> Joined<T> {
        Joined { io }
    }

    /// The stream inside.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// The stream inside, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.io
    }

    /// Unwraps the stream.
    pub fn into_inner(self) -> T {
        self.io
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for Joined<T> {
    fn into_halves(self: Box<Self>) -> Halves {
        let (read, write) = tokio::io::split(self.io);
        Halves::shared(read, write)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Joined<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Joined<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sockets_split_independently_and_joined_streams_share_a_lock() {
        let (unix, _peer) = UnixStream::pair().unwrap();
        assert_eq!((Box::new(unix) as Box<dyn Transport>).into_halves().split, Split::Independent);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        assert_eq!(Box::new(tcp).into_halves().split, Split::Independent);
        let (memory, _peer) = tokio::io::duplex(64);
        let boxed: Box<dyn Transport> = Box::new(Joined::new(memory));
        assert_eq!(Box::new(boxed).into_halves().split, Split::Shared);
    }
}
