//! Connections the benches and the report examples can cut from outside:
//! pipes over Unix socket pairs, and a TCP dialer. Each keeps a duplicate
//! of the newest connection's socket in a [`Cutter`]; [`cut`] shuts it down
//! both ways, which both pipes see as a broken connection. And the reader
//! every throughput workload uses, [`read_n`].

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backedpipe::{BackedPipe, Options, Reconnector, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// The newest connection's socket, shared with whoever cuts it.
pub(crate) type Cutter = Arc<Mutex<Option<OwnedFd>>>;

/// Breaks the newest connection (both directions at once).
pub(crate) fn cut(current: &Mutex<Option<OwnedFd>>) {
    if let Some(fd) = current.lock().unwrap().as_ref() {
        let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Both);
    }
}

/// One resume, timed: cuts the newest connection, writes one byte on
/// `client` and returns how long until `peer` has read it. Then waits
/// (untimed) until both sides have finished the new handshake, so that
/// each call measures one whole reconnect.
pub(crate) async fn timed_resume(
    client: &mut BackedPipe,
    peer: &mut BackedPipe,
    current: &Mutex<Option<OwnedFd>>,
) -> Duration {
    let (before, peer_before) = (client.stats().reconnects, peer.stats().reconnects);
    cut(current);
    let started = Instant::now();
    client.write_all(b"x").await.expect("write");
    let mut byte = [0u8; 1];
    peer.read_exact(&mut byte).await.expect("read");
    let elapsed = started.elapsed();
    while client.stats().reconnects == before || peer.stats().reconnects == peer_before {
        tokio::task::yield_now().await;
    }
    elapsed
}

/// A connected pair of pipes; every dial makes a new Unix socket pair and
/// hands one end to the passive side.
pub(crate) async fn unix_pipes(options: Options) -> (BackedPipe, BackedPipe, Cutter) {
    let server = BackedPipe::passive(options.clone());
    let accept = server.control();
    let current: Cutter = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&current);
    let dial = move || {
        let accept = accept.clone();
        let slot = Arc::clone(&slot);
        async move {
            let (ours, theirs) = UnixStream::pair()?;
            *slot.lock().unwrap() = Some(ours.as_fd().try_clone_to_owned()?);
            accept.resume(theirs).map_err(io::Error::from)?;
            Ok(ours)
        }
    };
    let client = BackedPipe::connect(dial, options);
    client.connected().await.expect("connect");
    server.connected().await.expect("connect");
    (client, server, current)
}

/// A TCP dialer that keeps a duplicate of the newest connection's socket.
pub(crate) struct CuttableDialer {
    /// Where to connect.
    pub(crate) addr: std::net::SocketAddr,
    /// The newest connection.
    pub(crate) current: Cutter,
}

impl Reconnector for CuttableDialer {
    async fn reconnect(&self) -> io::Result<impl Transport> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        *self.current.lock().unwrap() = Some(stream.as_fd().try_clone_to_owned()?);
        Ok(stream)
    }
}

/// Reads exactly `bytes` in reads of up to 64 KiB.
pub(crate) async fn read_n<R: AsyncRead + Unpin>(reader: &mut R, bytes: u64) {
    let mut buf = vec![0u8; 64 << 10];
    let mut read = 0;
    while read < bytes {
        let count = reader.read(&mut buf).await.expect("read");
        assert!(count > 0, "unexpected end of stream");
        read += count as u64;
    }
    std::hint::black_box(&buf);
}
