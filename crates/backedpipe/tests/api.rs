//! The shell's behaviour beyond the seed: Send/Sync of the public types,
//! keepalive against a black hole, the give-up deadline, the status watch
//! (and a watcher calling into the pipe), authentication and bad input
//! against a live session (refused, the live connection untouched),
//! closing, the memory of an idle pipe, and chunks written without a copy
//! among copied writes across cuts.

mod common;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backedpipe::proto::{AuthMethod, Hello, Nonce};
use backedpipe::{BackedPipe, Error, PipeState, Secret};
use bytes::Bytes;
use common::{Hash, Pair, fill, options, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<BackedPipe>();
    send_sync::<backedpipe::OwnedReadHalf>();
    send_sync::<backedpipe::OwnedWriteHalf>();
    send_sync::<backedpipe::ReadHalf<'static>>();
    send_sync::<backedpipe::WriteHalf<'static>>();
    send_sync::<backedpipe::PipeControl>();
    send_sync::<backedpipe::Joined<tokio::io::DuplexStream>>();
    send_sync::<backedpipe::core::Core>();
    send_sync::<Error>();
    send_sync::<backedpipe::Options>();
    send_sync::<backedpipe::Stats>();
    send_sync::<backedpipe::Status>();
    send_sync::<Hello>();
    // A connection's halves move into the pipe; nothing shares them.
    fn send<T: Send>() {}
    send::<backedpipe::Halves>();
    send::<Box<dyn backedpipe::Transport>>();
}

async fn exchange_one(pair: &mut Pair, message: &[u8]) {
    within(5, "write", pair.client.write_all(message)).await.unwrap();
    let mut buf = vec![0; message.len()];
    within(5, "read", pair.server.read_exact(&mut buf)).await.unwrap();
    assert_eq!(buf, message);
}

#[tokio::test]
async fn a_black_holed_connection_is_detected_and_replaced() {
    let mut pair = Pair::new(options(), options());
    within(5, "connect", pair.client.connected()).await.unwrap();
    exchange_one(&mut pair, b"before").await;
    let hole = pair.newest.lock().unwrap().clone().unwrap();
    hole.blackhole();
    let started = Instant::now();
    within(5, "write into the black hole", pair.client.write_all(b"after")).await.unwrap();
    let mut buf = [0; 5];
    within(10, "read after the black hole", pair.server.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"after");
    let idle = common::IDLE_TIMEOUT;
    assert!(started.elapsed() >= idle / 2, "recovered in {:?}: was it really black-holed?", started.elapsed());
    assert_eq!(pair.client.stats().reconnects, 1);
    assert_eq!(pair.dial_count(), 2);
}

#[tokio::test]
async fn the_pipe_gives_up_after_the_deadline() {
    let options = options().backoff(common::backoff().give_up_after(Some(Duration::from_millis(200))));
    let dial = || async { Err::<UnixStream, _>(io::Error::new(io::ErrorKind::ConnectionRefused, "nobody home")) };
    let mut client = BackedPipe::connect(dial, options);
    let failure = within(5, "give up", client.connected()).await.unwrap_err();
    let Error::GaveUp { attempts, last_error } = &failure else { panic!("{failure:?}") };
    assert!(*attempts >= 2);
    assert_eq!(last_error.as_ref().unwrap().kind(), io::ErrorKind::ConnectionRefused);
    let read = within(5, "read", client.read(&mut [0; 4])).await.unwrap_err();
    assert_eq!(read.kind(), io::ErrorKind::TimedOut);
    assert!(client.stats().failed_attempts >= 2);
}

#[tokio::test]
async fn status_follows_the_connection() {
    let pair = Pair::new(options(), options());
    let mut status = pair.client.watch_status();
    let first = within(5, "connect", pair.client.connected()).await.unwrap();
    assert_eq!(status.borrow_and_update().state, PipeState::Connected);
    pair.cut();
    within(5, "leaves connected", status.wait_for(|s| s.state != PipeState::Connected)).await.unwrap();
    let back = *within(5, "back", status.wait_for(|s| s.state == PipeState::Connected)).await.unwrap();
    assert!(back.generation > first);
    pair.client.close();
    within(5, "closed", status.wait_for(|s| s.state == PipeState::Closed)).await.unwrap();
    assert!(pair.client.failure().is_none(), "a plain close is no failure");
}

/// A `wait_for` closure runs under the status channel's lock and may call
/// into the pipe: the pipe must never send a status change while holding
/// its own lock (that would deadlock the two). Run on a thread of its own,
/// so that a deadlock fails the test instead of hanging it.
#[test]
fn a_status_watcher_may_call_into_the_pipe() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let seen = runtime.block_on(async {
            let pair = Pair::new(options(), options());
            within(5, "connect", pair.client.connected()).await.unwrap();
            let control = pair.client.control();
            let mut status = pair.client.watch_status();
            let watcher = tokio::spawn(async move {
                let mut seen = 0u32;
                status
                    .wait_for(|s| {
                        seen += 1;
                        // Keep the channel locked for a while, asking the pipe.
                        for _ in 0..5 {
                            std::hint::black_box(control.stats());
                            std::thread::sleep(Duration::from_micros(100));
                        }
                        s.state == PipeState::Closed
                    })
                    .await
                    .unwrap();
                seen
            });
            for _ in 0..100 {
                within(5, "reconnect", pair.client.force_reconnect()).await.unwrap();
            }
            pair.client.close();
            within(5, "the watcher sees the close", watcher).await.unwrap()
        });
        let _ = done.send(seen);
    });
    let seen = finished.recv_timeout(Duration::from_secs(30)).expect("the pipe and its status watcher deadlocked");
    assert!(seen > 2, "the watcher saw only {seen} states");
}

/// Reads one frame: (type byte, payload), or `None` at EOF.
async fn read_frame(conn: &mut UnixStream) -> Option<(u8, Vec<u8>)> {
    let mut header = [0u8; 5];
    conn.read_exact(&mut header).await.ok()?;
    let len = u32::from_be_bytes(header[1..5].try_into().unwrap()) as usize;
    let mut payload = vec![0; len];
    conn.read_exact(&mut payload).await.ok()?;
    Some((header[0], payload))
}

/// Hands the server a raw connection and returns the test's end.
fn attach(pair: &Pair) -> UnixStream {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let (theirs, _) = common::Faulty::new(theirs);
    pair.server.resume(theirs).unwrap();
    ours
}

fn expect_error_code(frame: Option<(u8, Vec<u8>)>, code: u16) {
    let (kind, payload) = frame.expect("an ERROR frame");
    assert_eq!(kind, 0x1F, "expected ERROR, got frame type {kind:#x}");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), code);
}

#[tokio::test]
async fn attacks_on_a_live_session_are_refused_and_change_nothing() {
    let secure = options().secret(Some(Secret::new(b"a sixteen-byte+ shared secret".to_vec())));
    let mut pair = Pair::new(secure.clone(), secure);
    let generation = within(5, "connect", pair.client.connected()).await.unwrap();
    exchange_one(&mut pair, b"first").await;
    let session = pair.server.session_id();

    // Wrong secret: the right session id, a forged proof.
    let mut conn = attach(&pair);
    let hello = Hello::new(AuthMethod::HmacSha256, session, 0, Nonce::random());
    conn.write_all(&hello.encode()).await.unwrap();
    let (kind, _) = within(5, "WELCOME", read_frame(&mut conn)).await.unwrap();
    assert_eq!(kind, 0x02);
    let mut proof = vec![0x03, 0, 0, 0, 32];
    proof.extend_from_slice(&[0x5A; 32]);
    conn.write_all(&proof).await.unwrap();
    expect_error_code(within(5, "refusal", read_frame(&mut conn)).await, 3);
    assert_eq!(within(5, "EOF", read_frame(&mut conn)).await, None);

    // A wrong session id.
    let mut conn = attach(&pair);
    let hello = Hello::new(AuthMethod::HmacSha256, backedpipe::proto::SessionId::random(), 0, Nonce::random());
    conn.write_all(&hello.encode()).await.unwrap();
    expect_error_code(within(5, "refusal", read_frame(&mut conn)).await, 6);

    // No authentication at all.
    let mut conn = attach(&pair);
    conn.write_all(&Hello::new(AuthMethod::None, session, 0, Nonce::random()).encode()).await.unwrap();
    expect_error_code(within(5, "refusal", read_frame(&mut conn)).await, 3);

    // Garbage, an oversized length, a truncated HELLO.
    for bytes in [&b"GET / HTTP/1.1\r\n\r\n"[..], &[0x01, 0xFF, 0xFF, 0xFF, 0xFF][..]] {
        let mut conn = attach(&pair);
        conn.write_all(bytes).await.unwrap();
        expect_error_code(within(5, "refusal", read_frame(&mut conn)).await, 1);
    }
    let mut conn = attach(&pair);
    conn.write_all(&Hello::new(AuthMethod::HmacSha256, session, 0, Nonce::random()).encode()[..20]).await.unwrap();
    drop(conn);

    // The live connection carried on throughout.
    exchange_one(&mut pair, b"second").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(pair.server.status().generation, generation);
    assert_eq!(pair.client.status().generation, generation);
    assert_eq!(pair.server.stats().reconnects, 0);
    assert!(pair.server.stats().failed_attempts >= 5, "{:?}", pair.server.stats());
    assert!(pair.server.failure().is_none());
}

#[tokio::test]
async fn mismatched_secrets_fail_the_client_for_good() {
    let server_options = options().secret(Some(Secret::new(b"the server's secret".to_vec())));
    let client_options = options().secret(Some(Secret::new(b"not the same secret".to_vec())));
    let pair = Pair::new(client_options, server_options);
    let failure = within(5, "handshake", pair.client.connected()).await.unwrap_err();
    assert!(matches!(failure, Error::AuthenticationFailed), "{failure:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(pair.dial_count(), 1, "an authentication failure is not retried");
    assert!(pair.server.failure().is_none(), "the server's session is untouched");
}

#[tokio::test]
async fn closing_one_side_ends_the_other_after_its_data() {
    let mut pair = Pair::new(options(), options());
    within(5, "connect", pair.client.connected()).await.unwrap();
    within(5, "write", pair.client.write_all(b"last")).await.unwrap();
    within(5, "flush", pair.client.flush()).await.unwrap();
    let mut buf = [0; 4];
    within(5, "read", pair.server.read_exact(&mut buf)).await.unwrap();
    pair.client.close();
    let err = within(5, "peer closed", pair.server.read(&mut buf)).await.unwrap_err();
    assert!(matches!(Error::from_io(&err), Some(Error::PeerClosed)), "{err:?}");
    let err = within(5, "write after close", pair.client.write(b"x")).await.unwrap_err();
    assert!(matches!(Error::from_io(&err), Some(Error::Closed)));
}

#[tokio::test]
async fn an_idle_pipe_holds_no_buffers() {
    let mut pair = Pair::new(options(), options());
    within(5, "connect", pair.client.connected()).await.unwrap();
    let data = vec![3; 8 << 20];
    let writer = async {
        pair.client.write_all(&data).await.unwrap();
        pair.client.flush().await.unwrap();
    };
    let reader = async {
        let mut got = vec![0; 8 << 20];
        pair.server.read_exact(&mut got).await.unwrap();
    };
    within(10, "8 MiB", async { tokio::join!(writer, reader) }).await;
    // Acknowledgements arrive within the ACK delay; buffers are given back
    // by the next keepalive tick.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pair.client.stats().buffer_bytes + pair.server.stats().buffer_bytes > 0 {
        assert!(Instant::now() < deadline, "{:?} / {:?}", pair.client.stats(), pair.server.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_passive_pipe_is_closed_when_dropped() {
    let pair = Pair::new(options(), options());
    within(5, "connect", pair.client.connected()).await.unwrap();
    within(5, "server connected", pair.server.connected()).await.unwrap();
    let Pair { client, server, .. } = pair;
    drop(server);
    let err = within(5, "peer closed", client.connected_then_failure()).await;
    assert!(matches!(err, Error::PeerClosed), "{err:?}");
}

/// Waits for the pipe to fail and returns why.
trait FailureExt {
    async fn connected_then_failure(&self) -> Error;
}

impl FailureExt for BackedPipe {
    async fn connected_then_failure(&self) -> Error {
        let mut status = self.watch_status();
        status.wait_for(|s| s.state == PipeState::Closed).await.unwrap();
        self.failure().unwrap_or(Error::Closed)
    }
}

/// A chunk that records when the last reference to it goes.
struct Tracked {
    bytes: Vec<u8>,
    dropped: Arc<AtomicBool>,
}

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn chunks_and_copied_writes_interleave_across_cuts() {
    let pair = Pair::new(options(), options());
    within(5, "connect", pair.client.connected()).await.unwrap();
    // Sizes that cover short chunks (copied), chunks within one frame and
    // chunks spanning several.
    let sizes = [64 << 10, 8, 1000, 1024, 3000, 200_000, 16, 70_000];
    let total: usize = (0..60).map(|i| sizes[i % sizes.len()]).sum::<usize>().next_multiple_of(8);
    let mut stream = vec![0; total];
    fill(7, 0, &mut stream);
    let mut expected = Hash::default();
    expected.update(&stream);
    let stream = Bytes::from(stream);
    let dropped = Arc::new(AtomicBool::new(false));
    let tracked = Bytes::from_owner(Tracked { bytes: vec![0xEE; 50_000], dropped: Arc::clone(&dropped) });

    let (mut client, mut server) = (pair.client, pair.server);
    let cutter = pair.newest.clone();
    let writer = async {
        let mut at = 0;
        for (index, size) in sizes.iter().cycle().take(60).enumerate() {
            let end = (at + size).min(total);
            if index % 2 == 0 {
                client.write_chunk(stream.slice(at..end)).await.unwrap();
            } else {
                client.write_all(&stream[at..end]).await.unwrap();
            }
            at = end;
            if index % 15 == 7
                && let Some(fault) = cutter.lock().unwrap().as_ref()
            {
                fault.cut();
            }
        }
        client.write_all(&stream[at..]).await.unwrap();
        client.write_chunk(tracked).await.unwrap();
        client.flush().await.unwrap();
        client
    };
    let reader = async {
        let mut got = Hash::default();
        let mut buf = vec![0; 50_000];
        let mut left = total;
        while left > 0 {
            let count = server.read(&mut buf[..left.min(50_000)]).await.unwrap();
            assert!(count > 0);
            got.update(&buf[..count]);
            left -= count;
        }
        server.read_exact(&mut buf).await.unwrap();
        assert!(buf.iter().all(|&byte| byte == 0xEE));
        (got, server)
    };
    let (client, (got, _server)) = within(20, "the stream", async { tokio::join!(writer, reader) }).await;
    assert_eq!(got.finish(), expected.finish());
    assert!(client.stats().reconnects >= 1, "{:?}", client.stats());
    // The send buffer held the chunk itself; it lets go once acknowledged.
    within(5, "acknowledged", client.control().acknowledged()).await.unwrap();
    assert!(dropped.load(Ordering::SeqCst), "the chunk is still referenced after its acknowledgement");
}

#[tokio::test]
async fn a_borrowed_split_reads_and_writes_at_once_and_leaves_the_pipe_whole() {
    let mut pair = Pair::new(options(), options());
    within(5, "connect", pair.client.connected()).await.unwrap();
    let outgoing = Bytes::from(vec![0x42; 300_000]);
    let incoming = vec![0x24; 300_000];
    {
        let (mut reader, mut writer) = pair.server.split();
        let (client, mut got) = (&mut pair.client, vec![0; 300_000]);
        within(10, "both ways at once", async {
            tokio::try_join!(
                async { writer.write_chunk(outgoing.clone()).await.map_err(io::Error::from) },
                reader.read_exact(&mut got),
                client.write_all(&incoming),
            )
        })
        .await
        .unwrap();
        assert_eq!(got, incoming);
    }
    // Whole again: the pipe itself goes on.
    within(5, "write", pair.server.write_all(b"!")).await.unwrap();
    let mut rest = vec![0; 300_001];
    within(5, "read", pair.client.read_exact(&mut rest)).await.unwrap();
    assert_eq!(&rest[..300_000], &outgoing[..]);
    assert_eq!(rest[300_000], b'!');
}
