//! Helpers for the server tests: configurations with a secret, listeners on
//! loopback, a dialler that can be held shut, byte patterns that are
//! written and checked exactly, and a raw client that speaks the wire
//! format by hand.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use backedpipe::dial::TcpDialer;
use backedpipe::proto::{ErrorCode, FrameHeader, FrameKind, HEADER_LEN};
use backedpipe::server::{Listener, ServerOptions};
use backedpipe::{Options, Reconnector, Secret, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{fill, options};

pub fn secret() -> Secret {
    Secret::new(b"a test secret that is long enough".to_vec())
}

/// The test pipe configuration with the shared secret.
pub fn client_options() -> Options {
    options().secret(Some(secret()))
}

pub fn server_options() -> ServerOptions {
    ServerOptions::new().pipe(client_options())
}

/// A listener on a fresh loopback port.
pub async fn tcp_server(options: ServerOptions) -> (Listener, SocketAddr) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = tcp.local_addr().expect("local address");
    (Listener::tcp(tcp, options).expect("listener"), addr)
}

/// A TCP dialler that fails while its gate is shut, and counts dials.
#[derive(Clone)]
pub struct Gated {
    inner: TcpDialer,
    pub shut: Arc<AtomicBool>,
    pub dials: Arc<AtomicUsize>,
}

impl Gated {
    pub fn new(addr: SocketAddr) -> Gated {
        Gated {
            inner: TcpDialer::new(addr.to_string()),
            shut: Arc::new(AtomicBool::new(false)),
            dials: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn set_shut(&self, shut: bool) {
        self.shut.store(shut, Ordering::SeqCst);
    }
}

impl Reconnector for Gated {
    async fn reconnect(&self) -> io::Result<impl Transport> {
        if self.shut.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "gate shut by the test"));
        }
        self.dials.fetch_add(1, Ordering::SeqCst);
        self.inner.reconnect().await
    }
}

/// Writes `total` bytes of pattern `stream` (a multiple of 8) in chunks of
/// `chunk` bytes.
pub async fn send_pattern<W: AsyncWrite + Unpin>(
    writer: &mut W,
    stream: u64,
    total: u64,
    chunk: usize,
) -> io::Result<()> {
    let mut buf = vec![0u8; chunk];
    let mut seq = 0;
    while seq < total {
        let len = (chunk as u64).min(total - seq) as usize;
        fill(stream, seq, &mut buf[..len]);
        writer.write_all(&buf[..len]).await?;
        seq += len as u64;
    }
    writer.flush().await
}

/// Reads exactly `total` bytes and checks they are pattern `stream`.
pub async fn expect_pattern<R: AsyncRead + Unpin>(reader: &mut R, stream: u64, total: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    let mut expected = vec![0u8; (64 << 10) + 16];
    let mut seq = 0u64;
    while seq < total {
        let want = (buf.len() as u64).min(total - seq) as usize;
        let count = reader.read(&mut buf[..want]).await?;
        if count == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("end of stream after {seq} bytes")));
        }
        let start = seq - seq % 8;
        let end = (seq + count as u64).next_multiple_of(8);
        let window = &mut expected[..(end - start) as usize];
        fill(stream, start, window);
        let offset = (seq - start) as usize;
        if buf[..count] != window[offset..offset + count] {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("wrong bytes at {seq}")));
        }
        seq += count as u64;
    }
    Ok(())
}

/// The frames a raw connection receives until the server closes it.
pub async fn frames_until_close(conn: &mut TcpStream) -> Vec<(FrameKind, Vec<u8>)> {
    let mut frames = Vec::new();
    loop {
        let mut header = [0u8; HEADER_LEN];
        if conn.read_exact(&mut header).await.is_err() {
            return frames;
        }
        let header = FrameHeader::decode(header, 1 << 20).expect("a valid frame header from the server");
        let mut payload = vec![0u8; header.len as usize];
        if conn.read_exact(&mut payload).await.is_err() {
            return frames;
        }
        frames.push((header.kind, payload));
    }
}

/// The code of an ERROR frame's payload.
pub fn error_code(payload: &[u8]) -> ErrorCode {
    ErrorCode::from_u16(u16::from_be_bytes([payload[0], payload[1]]))
}

/// Open descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|dir| dir.count()).unwrap_or(0)
}

/// Resident memory of this process in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("backedpipe-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits (polling every 10 ms) until `check` holds, up to `limit`.
pub async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
