//! How a stream ends, through the tokio shell: a pending shutdown always
//! completes when the peer closes, shutdowns on both sides at once and
//! across a cut are acknowledged, a close followed at once by the end of
//! the runtime still tells the peer, a close while a write is on the wire
//! ends the peer's stream cleanly, and flush does not wait for a
//! connection that is not there.

mod common;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use backedpipe::{BackedPipe, Error, PipeState};
use common::{Faulty, Pair, dialer, options, within};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

/// Reads until end of stream or an error; returns the byte count.
async fn drain<R: AsyncRead + Unpin>(reader: &mut R) -> u64 {
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0;
    while let Ok(count @ 1..) = reader.read(&mut buf).await {
        total += count as u64;
    }
    total
}

/// Writes `bytes` in 16 KiB writes, stopping at the first error.
async fn pour<W: AsyncWrite + Unpin>(writer: &mut W, bytes: usize) {
    let chunk = vec![0x42u8; 16 << 10];
    let mut written = 0;
    while written < bytes {
        if writer.write_all(&chunk).await.is_err() {
            return;
        }
        written += chunk.len();
    }
}

/// Whether `err` is the end of a pipe (closed here or by the peer).
fn is_end(err: &std::io::Error) -> bool {
    matches!(Error::from_io(err), Some(Error::PeerClosed | Error::Closed))
}

/// The client ends its stream while the server still sends, then the
/// server closes: in every round the client's pending shutdown completes
/// (acknowledged, or failed because the peer closed), and its reads end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_shutdown_completes_when_the_peer_closes() {
    for round in 0..60usize {
        let pair = Pair::new(options(), options());
        within(5, "connect", pair.client.connected()).await.unwrap();
        within(5, "server connected", pair.server.connected()).await.unwrap();
        let (mut client_read, mut client_write) = pair.client.into_split();
        let (mut server_read, mut server_write) = pair.server.into_split();
        // The client's data exceeds what the server buffers unread, so
        // the end of stream waits behind it.
        let client_bytes = if round % 2 == 0 { 4 << 20 } else { 16 << 10 };
        let reader = tokio::spawn(async move { drain(&mut client_read).await });
        let server_pour = tokio::spawn(async move {
            pour(&mut server_write, 8 << 20).await;
            server_write
        });
        let shutdown = tokio::spawn(async move {
            pour(&mut client_write, client_bytes).await;
            let result = client_write.shutdown().await;
            (result, client_write)
        });
        // Let some of it flow, sometimes read a little, then close.
        tokio::time::sleep(Duration::from_micros((round as u64 % 7) * 300)).await;
        if round % 3 == 0 {
            let mut buf = vec![0u8; 8 << 10];
            let _ = within(5, "server read", server_read.read(&mut buf)).await;
        }
        server_read.control().close();
        let (result, _client_write) = within(5, &format!("shutdown, round {round}"), shutdown).await.unwrap();
        if let Err(err) = &result {
            assert!(is_end(err), "round {round}: {err:?}");
        }
        within(5, &format!("client reads end, round {round}"), reader).await.unwrap();
        let _ = within(5, "server pour", server_pour).await.unwrap();
    }
}

/// Both sides write, end their streams at the same moment and read to the
/// end: both shutdowns are acknowledged and both sides read everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdowns_at_the_same_time_are_both_acknowledged() {
    for round in 0..40usize {
        let pair = Pair::new(options(), options());
        within(5, "connect", pair.client.connected()).await.unwrap();
        let (mut client_read, mut client_write) = pair.client.into_split();
        let (mut server_read, mut server_write) = pair.server.into_split();
        let bytes = (round % 5) * (100 << 10) + 1;
        let one = tokio::spawn(async move {
            pour(&mut client_write, bytes).await;
            client_write.shutdown().await.map(|()| client_write)
        });
        let two = tokio::spawn(async move {
            pour(&mut server_write, bytes).await;
            server_write.shutdown().await.map(|()| server_write)
        });
        let read_one = tokio::spawn(async move { drain(&mut client_read).await });
        let read_two = tokio::spawn(async move { drain(&mut server_read).await });
        let expected = bytes.div_ceil(16 << 10) as u64 * (16 << 10);
        assert_eq!(within(5, "client reads", read_one).await.unwrap(), expected, "round {round}");
        assert_eq!(within(5, "server reads", read_two).await.unwrap(), expected, "round {round}");
        within(5, &format!("client shutdown, round {round}"), one).await.unwrap().unwrap();
        within(5, &format!("server shutdown, round {round}"), two).await.unwrap().unwrap();
    }
}

/// The end of stream (or its acknowledgement) is in flight when the
/// connection is cut: after the reconnect it is acknowledged, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_of_stream_cut_in_flight_is_acknowledged_after_the_reconnect() {
    for round in 0..30u64 {
        let mut pair = Pair::new(options(), options());
        within(5, "connect", pair.client.connected()).await.unwrap();
        within(5, "write", pair.client.write_all(b"last words")).await.unwrap();
        let cut_after = Duration::from_micros(round * 40);
        let newest = Arc::clone(&pair.newest);
        let cutter = tokio::spawn(async move {
            tokio::time::sleep(cut_after).await;
            if let Some(fault) = newest.lock().unwrap().as_ref() {
                fault.cut();
            }
        });
        let mut got = Vec::new();
        let (shutdown, read) = within(10, &format!("round {round}"), async {
            tokio::join!(pair.client.shutdown(), pair.server.read_to_end(&mut got))
        })
        .await;
        shutdown.unwrap();
        read.unwrap();
        assert_eq!(got, b"last words", "round {round}");
        cutter.await.unwrap();
    }
}

/// A pipe closed with `close_gracefully` right before its runtime ends
/// (as a process about to exit does) has told the peer, which fails with
/// `PeerClosed` instead of waiting for a reconnect; also when a DATA frame
/// was half written at the moment of the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_right_before_the_runtime_ends_reaches_the_peer() {
    for round in 0..20usize {
        // Each end of the connection is registered with its own runtime.
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let server = BackedPipe::passive(options());
        server.resume(Faulty::new(UnixStream::from_std(theirs).unwrap()).0).unwrap();
        let ours = Mutex::new(Some(ours));
        let dial = move || {
            let ours = ours.lock().unwrap().take();
            async move {
                let ours = ours.ok_or_else(|| io::Error::other("one connection only"))?;
                UnixStream::from_std(ours)
            }
        };
        let (done_tx, done_rx) = mpsc::channel();
        // The client lives in a runtime of its own, on a thread of its own,
        // and that runtime is dropped right after the close.
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let mut client = BackedPipe::connect(dial, options());
                within(5, "connect", client.connected()).await.unwrap();
                let chunk = vec![7u8; 200 << 10];
                // Large writes that the server reads slowly: a DATA frame is
                // likely half on the wire at the close.
                for _ in 0..(round % 4) {
                    let _ = tokio::time::timeout(Duration::from_millis(20), client.write_all(&chunk)).await;
                }
                let told = within(5, "graceful close", client.close_gracefully(Duration::from_secs(2))).await;
                assert!(told, "the close was not reported");
            });
            drop(runtime);
            done_tx.send(()).unwrap();
        });
        let mut server = server;
        // The client may be gone again before the server saw it connected.
        let _ = within(5, "server connected", server.connected()).await;
        let mut buf = vec![0u8; 64 << 10];
        let err = within(10, &format!("server sees the close, round {round}"), async {
            loop {
                match server.read(&mut buf).await {
                    Ok(0) => panic!("end of stream instead of the close"),
                    Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                    Err(err) => break err,
                }
            }
        })
        .await;
        assert!(matches!(Error::from_io(&err), Some(Error::PeerClosed)), "round {round}: {err:?}");
        tokio::task::spawn_blocking(move || done_rx.recv_timeout(Duration::from_secs(5)))
            .await
            .unwrap()
            .expect("the client thread ends");
        thread.join().unwrap();
    }
}

/// The byte at stream offset `at` in the close-while-writing test.
fn pattern(at: u64) -> u8 {
    (at % 251) as u8
}

/// A close from another task while the application writes without pause,
/// over sockets whose halves work independently (each write's frame goes
/// out with the pipe's state unlocked): the peer reads a byte-exact prefix
/// of the stream, then the close; never a broken frame, never a repeat.
/// (A close landing inside a write's system call, with the write going out
/// in part, is rare here; the core's model test
/// `a_close_during_a_lent_transmit_follows_exactly_the_bytes_written`
/// forces that interleaving.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_while_a_write_is_on_the_wire_ends_the_peer_cleanly() {
    const CHUNK: usize = 64 << 10;
    for round in 0..100u64 {
        let mut server = BackedPipe::passive(options());
        let accept = server.control();
        let dial = move || {
            let accept = accept.clone();
            async move {
                let (ours, theirs) = UnixStream::pair()?;
                accept.resume(theirs)?;
                Ok(ours)
            }
        };
        let mut client = BackedPipe::connect(dial, options());
        within(5, "connect", client.connected()).await.unwrap();
        let control = client.control();
        let writing = tokio::spawn(async move {
            let mut chunk = vec![0u8; CHUNK];
            let mut at = 0u64;
            loop {
                for (i, byte) in chunk.iter_mut().enumerate() {
                    *byte = pattern(at + i as u64);
                }
                if client.write_all(&chunk).await.is_err() {
                    return at;
                }
                at += CHUNK as u64;
            }
        });
        // A reader slower than the writer keeps the socket full, so that
        // writes often go out in part.
        let (progress, mut read_so_far) = tokio::sync::watch::channel(0u64);
        let reading = tokio::spawn(async move {
            let mut buf = vec![0u8; 4 << 10];
            let mut got = 0u64;
            loop {
                match server.read(&mut buf).await {
                    Ok(0) => panic!("end of stream instead of the close after {got} bytes"),
                    Ok(count) => {
                        for (i, byte) in buf[..count].iter().enumerate() {
                            assert_eq!(*byte, pattern(got + i as u64), "byte {} is wrong", got + i as u64);
                        }
                        got += count as u64;
                        progress.send_replace(got);
                    }
                    Err(err) => return (got, err),
                }
            }
        });
        // Close once the stream is well under way, at a different point
        // in each round.
        let close_after = (1 + round % 7) * 100_000;
        within(10, "the stream flows", read_so_far.wait_for(|got| *got >= close_after)).await.unwrap();
        control.close();
        let (got, err) = within(10, &format!("the server sees the close, round {round}"), reading).await.unwrap();
        assert!(matches!(Error::from_io(&err), Some(Error::PeerClosed)), "round {round}: {err:?}");
        let written = within(10, "the writer stops", writing).await.unwrap();
        // Whole writes that returned, plus at most the one that failed.
        assert!(got <= written + CHUNK as u64, "round {round}: read {got}, wrote {written}");
    }
}

/// With `flush_waits_for_connection` off, flush completes while
/// disconnected once the bytes are in the send buffer (they are kept for
/// replay), so a server can queue output for an absent client; the client
/// gets it when it connects. By default flush waits for a connection.
#[tokio::test]
async fn flush_can_complete_while_disconnected_and_the_bytes_follow() {
    let mut waiting = BackedPipe::passive(options());
    within(5, "write", waiting.write_all(b"x")).await.unwrap();
    let flushed = tokio::time::timeout(Duration::from_millis(200), waiting.flush()).await;
    assert!(flushed.is_err(), "the default flush waits for a connection");
    waiting.close();

    let queueing = options().flush_waits_for_connection(false);
    let mut server = BackedPipe::passive(queueing);
    assert_eq!(server.status().state, PipeState::Disconnected);
    within(5, "write while nobody is connected", server.write_all(b"queued for later")).await.unwrap();
    within(5, "flush while nobody is connected", server.flush()).await.unwrap();
    let dials = Arc::new(AtomicUsize::new(0));
    let dial = dialer(server.control(), Arc::clone(&dials), Arc::new(Mutex::new(None)));
    let mut client = BackedPipe::connect(dial, options());
    let mut got = [0u8; 16];
    within(5, "read after connecting", client.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"queued for later");
    // Connected, flush hands the bytes to the connection as before.
    within(5, "write", server.write_all(b"now")).await.unwrap();
    within(5, "flush", server.flush()).await.unwrap();
    let mut got = [0u8; 3];
    within(5, "read", client.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"now");
    assert_eq!(dials.load(Ordering::SeqCst), 1);
}

/// `acknowledged` waits for the peer to have the bytes, across a time
/// without connection, and fails when the pipe ends first.
#[tokio::test]
async fn acknowledged_waits_for_the_peer_and_ends_with_the_pipe() {
    let queueing = options().flush_waits_for_connection(false);
    let mut server = BackedPipe::passive(queueing);
    within(5, "write", server.write_all(&vec![1u8; 100 << 10])).await.unwrap();
    let control = server.control();
    let acked = tokio::spawn(async move { control.acknowledged().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!acked.is_finished(), "acknowledged before any peer existed");
    let dial = dialer(server.control(), Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(None)));
    let client = BackedPipe::connect(dial, options());
    // The client's application reads nothing: its pipe still takes the
    // bytes into its receive buffer and acknowledges them.
    within(5, "acknowledged", acked).await.unwrap().unwrap();
    assert_eq!(server.stats().bytes_sent, 100 << 10);

    // Bytes the peer cannot take any more (it reads nothing and its
    // receive buffer is full) are never acknowledged: closing ends the wait.
    within(5, "write more", server.write_all(&vec![2u8; 2 << 20])).await.unwrap();
    let control = server.control();
    let pending = tokio::spawn(async move { control.acknowledged().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pending.is_finished());
    server.close();
    let err = within(5, "ends with the pipe", pending).await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Closed), "{err:?}");
    drop(client);
}
