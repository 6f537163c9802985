//! The behaviours of the pipe this crate descends from, through the tokio
//! shell: write before connect, exact replay, invalid-sequence and
//! data-loss errors against a hand-written peer that follows
//! docs/protocol.md byte for byte, shared forced reconnects, close during a
//! dial, close unblocking reads and writes, and stale generations.

mod common;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backedpipe::{BackedPipe, Error, PipeState};
use common::{Pair, options, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{Notify, mpsc};

type Dial = std::pin::Pin<Box<dyn Future<Output = io::Result<UnixStream>> + Send>>;

/// A dialler whose connections' other ends go to the test.
fn raw_dialer(dials: Arc<AtomicUsize>) -> (impl Fn() -> Dial + Send + Sync, mpsc::UnboundedReceiver<UnixStream>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let dial = move || {
        let sender = sender.clone();
        let dials = Arc::clone(&dials);
        Box::pin(async move {
            dials.fetch_add(1, Ordering::SeqCst);
            let (ours, theirs) = UnixStream::pair()?;
            sender.send(theirs).map_err(|_| io::Error::other("test gone"))?;
            Ok(ours)
        }) as Dial
    };
    (dial, receiver)
}

/// Reads one frame: (type byte, payload), or `None` at EOF.
async fn read_frame(conn: &mut UnixStream) -> Option<(u8, Vec<u8>)> {
    let mut header = [0u8; 5];
    conn.read_exact(&mut header).await.ok()?;
    let len = u32::from_be_bytes(header[1..5].try_into().unwrap()) as usize;
    assert!(len <= 1 << 20, "absurd frame length {len}");
    let mut payload = vec![0; len];
    conn.read_exact(&mut payload).await.ok()?;
    Some((header[0], payload))
}

/// A WELCOME (no authentication) saying the server has read `reader_seq`.
fn welcome(reader_seq: u64) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 72];
    frame.extend_from_slice(&2u16.to_be_bytes()); // version
    frame.push(0); // auth: none
    frame.push(0); // flags
    frame.extend_from_slice(&[0x11; 16]); // session id
    frame.extend_from_slice(&reader_seq.to_be_bytes());
    frame.extend_from_slice(&(64u64 << 20).to_be_bytes()); // send buffer
    frame.extend_from_slice(&65536u32.to_be_bytes()); // max payload
    frame.extend_from_slice(&[0x22; 32]); // nonce
    frame
}

/// Reads the client's HELLO, checks its fixed fields, and returns its
/// reader sequence number, session id and flags.
async fn expect_hello(conn: &mut UnixStream) -> (u64, [u8; 16], u8) {
    let (kind, payload) = within(5, "HELLO", read_frame(conn)).await.expect("HELLO");
    assert_eq!(kind, 0x01);
    assert_eq!(&payload[..4], b"BKPP");
    assert_eq!(u16::from_be_bytes([payload[4], payload[5]]), 2);
    let session: [u8; 16] = payload[8..24].try_into().unwrap();
    let reader_seq = u64::from_be_bytes(payload[24..32].try_into().unwrap());
    (reader_seq, session, payload[7])
}

#[tokio::test]
async fn write_before_connect_is_delivered_after_connect() {
    let server = BackedPipe::passive(options());
    let gate = Arc::new(Notify::new());
    let accept = server.control();
    let dial = {
        let gate = Arc::clone(&gate);
        move || {
            let gate = Arc::clone(&gate);
            let accept = accept.clone();
            async move {
                gate.notified().await;
                let (ours, theirs) = UnixStream::pair()?;
                accept.resume(theirs)?;
                Ok(ours)
            }
        }
    };
    let mut client = BackedPipe::connect(dial, options());
    within(5, "write while disconnected", client.write_all(b"written before any connection")).await.unwrap();
    assert_eq!(client.status().state, PipeState::Reconnecting);
    gate.notify_one();
    let mut server = server;
    let mut buf = vec![0; 29];
    within(5, "read", server.read_exact(&mut buf)).await.unwrap();
    assert_eq!(buf, b"written before any connection");
}

#[tokio::test]
async fn reconnect_replays_exactly_the_missing_bytes() {
    let recv_buffer_bytes = 256 << 10;
    let client_options = options().max_unsent_bytes(4 << 20);
    let server_options = options()
        .recv_buffer_bytes(recv_buffer_bytes)
        .ack_interval_bytes(16 << 20) // nothing acknowledged before the cut
        .ack_delay(Duration::from_secs(30));
    let mut pair = Pair::new(client_options, server_options);
    within(5, "connect", pair.client.connected()).await.unwrap();
    let total = 1 << 20;
    let mut data = vec![0; total];
    common::fill(7, 0, &mut data);
    within(5, "write", pair.client.write_all(&data)).await.unwrap();
    let mut got = vec![0; total];
    within(5, "first part", pair.server.read_exact(&mut got[..300_000])).await.unwrap();
    // Cut while bytes are in flight: the server's receive buffer is full
    // (it reads no more) and the client has transmitted beyond it.
    let buffered = 300_000 + recv_buffer_bytes as u64;
    within(5, "bytes in flight", async {
        while pair.server.stats().bytes_received < buffered || pair.client.stats().bytes_sent <= buffered {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    pair.cut();
    within(10, "rest", pair.server.read_exact(&mut got[300_000..])).await.unwrap();
    assert!(got == data, "stream differs after the replay");
    let client = pair.client.stats();
    let server = pair.server.stats();
    assert_eq!(server.bytes_received, total as u64, "duplicates or losses");
    assert_eq!(client.bytes_sent - client.bytes_replayed, total as u64, "sent once plus exactly the replay");
    assert!(client.bytes_replayed > 0, "the cut should have needed a replay: {client:?} {server:?}");
    assert_eq!(client.reconnects, 1);
}

#[tokio::test]
async fn remote_sequence_ahead_is_invalid_sequence_and_the_connection_is_closed() {
    let dials = Arc::new(AtomicUsize::new(0));
    let (dial, mut conns) = raw_dialer(Arc::clone(&dials));
    let mut client = BackedPipe::connect(dial, options());
    within(5, "write", client.write_all(&[5; 100])).await.unwrap();
    let mut conn = within(5, "dial", conns.recv()).await.unwrap();
    expect_hello(&mut conn).await;
    conn.write_all(&welcome(1000)).await.unwrap();
    // PROOF (empty), then ERROR with code 4, then the connection closes.
    assert_eq!(within(5, "PROOF", read_frame(&mut conn)).await, Some((0x03, vec![])));
    let (kind, payload) = within(5, "ERROR", read_frame(&mut conn)).await.expect("ERROR frame");
    assert_eq!(kind, 0x1F);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4);
    assert_eq!(within(5, "EOF", read_frame(&mut conn)).await, None);
    let failure = within(5, "failure", client.connected()).await.unwrap_err();
    assert!(matches!(failure, Error::InvalidSequence { remote_seq: 1000, written: 100 }), "{failure:?}");
    let read = within(5, "read after failure", client.read(&mut [0; 8])).await.unwrap_err();
    assert!(matches!(Error::from_io(&read), Some(Error::InvalidSequence { .. })));
    // Terminal: never retried.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(dials.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn remote_sequence_older_than_the_buffer_is_data_loss() {
    let dials = Arc::new(AtomicUsize::new(0));
    let (dial, mut conns) = raw_dialer(Arc::clone(&dials));
    let mut client = BackedPipe::connect(dial, options());
    within(5, "write", client.write_all(&[5; 100])).await.unwrap();
    let mut conn = within(5, "dial", conns.recv()).await.unwrap();
    expect_hello(&mut conn).await;
    conn.write_all(&welcome(0)).await.unwrap();
    assert_eq!(within(5, "PROOF", read_frame(&mut conn)).await, Some((0x03, vec![])));
    let (kind, payload) = within(5, "DATA", read_frame(&mut conn)).await.unwrap();
    assert_eq!((kind, payload.len()), (0x10, 100));
    // Acknowledge all 100 bytes, then drop the connection.
    let mut ack = vec![0x11, 0, 0, 0, 9];
    ack.extend_from_slice(&100u64.to_be_bytes());
    ack.push(0);
    conn.write_all(&ack).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(conn);
    // The client comes back; this "server" now claims to have read only 40.
    let mut conn = within(5, "second dial", conns.recv()).await.unwrap();
    let (reader_seq, session, flags) = expect_hello(&mut conn).await;
    assert_eq!((reader_seq, session), (0, [0x11; 16]), "the client resumes the session it was given");
    assert_eq!(flags, 0, "the ACK after the PROOF confirmed the session");
    conn.write_all(&welcome(40)).await.unwrap();
    assert_eq!(within(5, "PROOF", read_frame(&mut conn)).await, Some((0x03, vec![])));
    let (kind, payload) = within(5, "ERROR", read_frame(&mut conn)).await.expect("ERROR frame");
    assert_eq!((kind, u16::from_be_bytes([payload[0], payload[1]])), (0x1F, 5));
    assert_eq!(within(5, "EOF", read_frame(&mut conn)).await, None);
    let failure = within(5, "failure", client.connected()).await.unwrap_err();
    assert!(matches!(failure, Error::DataLoss { remote_seq: 40, retained_start: 100 }), "{failure:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(dials.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn three_concurrent_forced_reconnects_share_one_dial() {
    let pair = Pair::new(options(), options());
    let first = within(5, "connect", pair.client.connected()).await.unwrap();
    assert_eq!(pair.dial_count(), 1);
    let (a, b, c) = within(5, "forced reconnects", async {
        tokio::join!(pair.client.force_reconnect(), pair.client.force_reconnect(), pair.client.force_reconnect())
    })
    .await;
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!((a, b), (b, c));
    assert!(a > first);
    assert_eq!(pair.dial_count(), 2);
    assert_eq!(pair.client.stats().reconnects, 1);
}

/// Tells the test when it is dropped.
struct DropSignal(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(sender) = self.0.take() {
            let _ = sender.send(());
        }
    }
}

#[tokio::test]
async fn close_during_a_blocked_dial_returns_at_once_and_cancels_it() {
    let (dropped_sender, dropped) = tokio::sync::oneshot::channel();
    let dropped_sender = std::sync::Mutex::new(Some(dropped_sender));
    let dials = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&dials);
    let dial = move || {
        counter.fetch_add(1, Ordering::SeqCst);
        let guard = DropSignal(dropped_sender.lock().unwrap().take());
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Err::<UnixStream, _>(io::Error::other("never"))
        }
    };
    let client = BackedPipe::connect(dial, options());
    within(5, "dial starts", async {
        while dials.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let started = Instant::now();
    client.close();
    assert!(started.elapsed() < Duration::from_millis(100), "close took {:?}", started.elapsed());
    within(2, "the dial is dropped", dropped).await.unwrap();
    assert_eq!(client.status().state, PipeState::Closed);
    client.close(); // idempotent
    assert!(matches!(client.force_reconnect().await, Err(Error::Closed)));
}

#[tokio::test]
async fn close_unblocks_a_pending_read_and_a_pending_write() {
    let small = options().send_buffer_bytes(1024);
    let dial = || async { std::future::pending::<io::Result<UnixStream>>().await };
    let client = BackedPipe::connect(dial, small);
    let control = client.control();
    let (mut reader, mut writer) = client.into_split();
    let read = tokio::spawn(async move { reader.read(&mut [0; 16]).await });
    let write = tokio::spawn(async move { writer.write_all(&[1; 4096]).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!read.is_finished() && !write.is_finished(), "both should wait while disconnected");
    control.close();
    let read = within(2, "read unblocked", read).await.unwrap().unwrap_err();
    let write = within(2, "write unblocked", write).await.unwrap().unwrap_err();
    assert!(matches!(Error::from_io(&read), Some(Error::Closed)), "{read:?}");
    assert!(matches!(Error::from_io(&write), Some(Error::Closed)), "{write:?}");
}

#[tokio::test]
async fn the_old_connection_ending_after_a_reconnect_changes_nothing() {
    let mut pair = Pair::new(options(), options());
    within(5, "connect", pair.client.connected()).await.unwrap();
    let old = pair.newest.lock().unwrap().clone().unwrap();
    let second = within(5, "reconnect", pair.client.force_reconnect()).await.unwrap();
    // The first connection now fails outright on both ends.
    old.cut();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(pair.client.status().generation, second);
    assert_eq!(pair.client.status().state, PipeState::Connected);
    assert_eq!(pair.dial_count(), 2);
    assert_eq!(pair.client.stats().reconnects, 1);
    assert_eq!(pair.server.stats().reconnects, 1);
    within(5, "write", pair.client.write_all(b"ping")).await.unwrap();
    let mut buf = [0; 4];
    within(5, "read", pair.server.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn a_failed_handshake_leaves_the_pipe_retrying() {
    let server = BackedPipe::passive(options());
    let accept = server.control();
    let dials = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&dials);
    let dial = move || {
        let accept = accept.clone();
        let attempt = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let (ours, theirs) = UnixStream::pair()?;
            if attempt == 0 {
                // The first "server" hangs up in the middle of the handshake.
                drop(theirs);
            } else {
                accept.resume(theirs)?;
            }
            Ok(ours)
        }
    };
    let mut client = BackedPipe::connect(dial, options());
    within(5, "write", client.write_all(b"still delivered")).await.unwrap();
    within(5, "connect", client.connected()).await.unwrap();
    let mut server = server;
    let mut buf = [0; 15];
    within(5, "read", server.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"still delivered");
    assert_eq!(dials.load(Ordering::SeqCst), 2);
    assert_eq!(client.stats().failed_attempts, 1);
    assert_eq!(client.stats().reconnects, 0, "the first completed handshake is no reconnect");
}
