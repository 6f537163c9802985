//! A Unix stream socket split into halves that each ask the reactor only
//! for what they wait for.
//!
//! On a Unix stream socket the kernel tells every registration that asks
//! for room to write each time the peer reads (the peer's read frees the
//! room). tokio's `UnixStream` asks for both directions for its whole
//! life, so a pipe over it is woken after every message its peer takes:
//! one wake-up more per keystroke and one more per echo, on the way of
//! both. Here the read half registers the socket for reading; the write
//! half writes at once, and only when the socket is full registers a copy
//! of the descriptor for room to write, which it keeps while writes keep
//! finding the socket full (a bulk stream) and drops once they stop.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

use super::Halves;

/// Writes in a row that found room at once, after which the write half
/// gives up its registration for room to write.
const ROOMY_WRITES: u32 = 32;

/// Splits `stream`; the halves register with the reactor of the current
/// runtime. Outside a runtime, tokio's own split.
pub(super) fn halves(stream: tokio::net::UnixStream) -> Halves {
    if tokio::runtime::Handle::try_current().is_err() {
        let (read, write) = stream.into_split();
        return Halves::independent(read, write);
    }
    match stream.into_std().and_then(|socket| register(socket, Interest::READABLE)) {
        Ok(socket) => {
            let socket = Arc::new(socket);
            let write = WriteHalf { socket: Arc::clone(&socket), room: None, roomy: 0, shut: false };
            Halves::independent(ReadHalf { socket }, write)
        }
        Err(err) => Halves::independent(Broken(err.kind()), Broken(err.kind())),
    }
}

/// Registers `socket` with the reactor of the current runtime for
/// `interest`.
fn register(socket: StdUnixStream, interest: Interest) -> io::Result<AsyncFd<StdUnixStream>> {
    // SAFETY: `StdUnixStream` owns its descriptor: it stays open, and refers
    // to the same socket, until the `AsyncFd` that now owns the stream drops
    // it, and `as_raw_fd` always returns that descriptor.
    let registered = unsafe { AsyncFd::register_with_interest(socket, interest) };
    registered.map_err(io::Error::from)
}

/// The read half: the socket, registered for reading.
struct ReadHalf {
    socket: Arc<AsyncFd<StdUnixStream>>,
}

impl AsyncRead for ReadHalf {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.socket.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|socket| read_now(socket.get_ref(), unfilled)) {
                Ok(Ok(count)) => {
                    buf.advance(count);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(err)) => return Poll::Ready(Err(err)),
                Err(_would_block) => {}
            }
        }
    }
}

/// The write half: writes to the socket directly; `room` is the copy of
/// the descriptor registered for room to write while writes find the
/// socket full.
struct WriteHalf {
    socket: Arc<AsyncFd<StdUnixStream>>,
    room: Option<AsyncFd<StdUnixStream>>,
    /// Writes in a row through `room` that found room at once.
    roomy: u32,
    shut: bool,
}

impl WriteHalf {
    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&StdUnixStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            let Some(room) = &self.room else {
                match retry_interrupted(|| write(self.socket.get_ref())) {
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        // Registered after the refusal: if room came
                        // meanwhile, the registration reports it at once.
                        self.room = Some(register(self.socket.get_ref().try_clone()?, Interest::WRITABLE)?);
                        self.roomy = 0;
                        continue;
                    }
                    result => return Poll::Ready(result),
                }
            };
            let mut guard = ready!(room.poll_write_ready(cx))?;
            match guard.try_io(|socket| retry_interrupted(|| write(socket.get_ref()))) {
                Ok(result) => {
                    self.roomy += 1;
                    if self.roomy >= ROOMY_WRITES {
                        // The stream is no longer held back by its reader.
                        self.room = None;
                    }
                    return Poll::Ready(result);
                }
                Err(_would_block) => self.roomy = 0,
            }
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, |mut socket| socket.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, |mut socket| socket.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.shut = true;
        Poll::Ready(this.socket.get_ref().shutdown(Shutdown::Write))
    }
}

impl Drop for WriteHalf {
    /// As tokio's write half: the peer reads the end of the stream even
    /// while this side's read half lives on.
    fn drop(&mut self) {
        if !self.shut {
            let _ = self.socket.get_ref().shutdown(Shutdown::Write);
        }
    }
}

/// One read, retried when interrupted by a signal.
fn read_now(mut socket: &StdUnixStream, buf: &mut [u8]) -> io::Result<usize> {
    retry_interrupted(|| socket.read(buf))
}

fn retry_interrupted(mut call: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    loop {
        match call() {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            result => return result,
        }
    }
}

/// The halves of a socket that could not be registered: every call fails
/// as registering did, so that the pipe counts the connection lost.
struct Broken(io::ErrorKind);

impl AsyncRead for Broken {
    fn poll_read(self: Pin<&mut Self>, _cx: &mut Context<'_>, _buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Err(self.0.into()))
    }
}

impl AsyncWrite for Broken {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, _buf: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(self.0.into()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Err(self.0.into()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Err(self.0.into()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn pair() -> (ReadHalf, WriteHalf, tokio::net::UnixStream) {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let socket = Arc::new(register(ours.into_std().unwrap(), Interest::READABLE).unwrap());
        let write = WriteHalf { socket: Arc::clone(&socket), room: None, roomy: 0, shut: false };
        (ReadHalf { socket }, write, theirs)
    }

    #[tokio::test]
    async fn small_writes_need_no_registration_for_room() {
        let (mut read, mut write, mut peer) = pair();
        for round in 0..100u8 {
            write.write_all(&[round]).await.unwrap();
            let mut byte = [0];
            peer.read_exact(&mut byte).await.unwrap();
            assert_eq!(byte[0], round);
            assert!(write.room.is_none(), "registered for room to write after {round} writes");
        }
        peer.write_all(b"back").await.unwrap();
        let mut back = [0; 4];
        read.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_socket_waits_for_room_loses_nothing_and_lets_the_registration_go() {
        let (_read, mut write, mut peer) = pair();
        let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 253) as u8).collect();
        let writer = tokio::spawn({
            let data = data.clone();
            async move {
                write.write_all(&data).await.unwrap();
                assert!(write.room.is_some(), "8 MiB fit in the socket without waiting");
                // Once the reader keeps up, the registration goes.
                for _ in 0..100_000 {
                    write.write_all(b"x").await.unwrap();
                    if write.room.is_none() {
                        break;
                    }
                }
                assert!(write.room.is_none(), "still registered for room while the reader keeps up");
                // Dropping the write half ends the stream.
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!writer.is_finished(), "8 MiB fit in the socket");
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), peer.read_to_end(&mut got)).await.unwrap().unwrap();
        tokio::time::timeout(Duration::from_secs(20), writer).await.unwrap().unwrap();
        assert!(got.len() > data.len() && got[..data.len()] == data[..], "bytes lost or reordered");
        assert!(got[data.len()..].iter().all(|&byte| byte == b'x'));
    }
}
