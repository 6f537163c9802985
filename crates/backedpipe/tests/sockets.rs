//! Real sockets: two pipes over Unix socket pairs and over loopback TCP move
//! 256 MiB each way at once while the connection is cut every few MiB (the
//! bytes in flight are lost with it); both streams arrive whole, in order,
//! exactly once (hashes and lengths match), ending in a clean end of stream.

mod common;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use backedpipe::{BackedPipe, Options};
use common::{Fault, Faulty, Hash, fill, within};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};

const TOTAL: u64 = 256 << 20;
const CHUNK: usize = 64 << 10;

/// Writes `TOTAL` bytes of stream `stream`, cutting the connection after
/// every 2..6 MiB; ends the stream; returns the hash of what was written.
async fn write_side<W: AsyncWrite + Unpin>(
    mut writer: W,
    stream: u64,
    cutter: Option<Arc<Mutex<Option<Arc<Fault>>>>>,
    cuts: Arc<AtomicUsize>,
) -> io::Result<(u64, u64)> {
    let mut rng = fastrand::Rng::with_seed(stream);
    let mut hash = Hash::default();
    let mut buf = vec![0; CHUNK];
    let mut next_cut = rng.u64(2 << 20..6 << 20);
    let mut seq = 0;
    while seq < TOTAL {
        fill(stream, seq, &mut buf);
        writer.write_all(&buf).await?;
        hash.update(&buf);
        seq += CHUNK as u64;
        if let Some(cutter) = cutter.as_ref().filter(|_| seq >= next_cut) {
            if let Some(fault) = cutter.lock().unwrap().as_ref().filter(|fault| !fault.is_cut()) {
                fault.cut();
                cuts.fetch_add(1, Ordering::SeqCst);
            }
            next_cut = seq + rng.u64(2 << 20..6 << 20);
        }
    }
    writer.shutdown().await?;
    Ok(hash.finish())
}

/// Reads to the end of stream; returns the hash of what was read.
async fn read_side<R: AsyncRead + Unpin>(mut reader: R) -> io::Result<(u64, u64)> {
    let mut hash = Hash::default();
    let mut buf = vec![0; CHUNK];
    loop {
        let count = reader.read(&mut buf).await?;
        if count == 0 {
            return Ok(hash.finish());
        }
        hash.update(&buf[..count]);
    }
}

async fn exchange(client: BackedPipe, server: BackedPipe, cutter: Arc<Mutex<Option<Arc<Fault>>>>) {
    let client_control = client.control();
    let server_control = server.control();
    let cuts = Arc::new(AtomicUsize::new(0));
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let tasks = (
        tokio::spawn(write_side(client_write, 1, Some(cutter), Arc::clone(&cuts))),
        tokio::spawn(write_side(server_write, 2, None, Arc::clone(&cuts))),
        tokio::spawn(read_side(server_read)),
        tokio::spawn(read_side(client_read)),
    );
    let (client_sent, server_sent, server_got, client_got) =
        within(50, "256 MiB each way", async { tokio::try_join!(tasks.0, tasks.1, tasks.2, tasks.3) }).await.unwrap();
    let (client_sent, server_sent) = (client_sent.unwrap(), server_sent.unwrap());
    let (server_got, client_got) = (server_got.unwrap(), client_got.unwrap());
    assert_eq!(client_sent.1, TOTAL);
    assert_eq!(server_got, client_sent, "client → server stream differs");
    assert_eq!(client_got, server_sent, "server → client stream differs");
    let cuts = cuts.load(Ordering::SeqCst);
    let stats = client_control.stats();
    assert!(cuts >= 30, "only {cuts} cuts");
    assert!(stats.reconnects >= cuts as u64, "{cuts} cuts but {stats:?}");
    assert!(stats.bytes_replayed > 0 || server_control.stats().bytes_replayed > 0, "no cut lost a byte in flight");
    assert_eq!(stats.bytes_received, TOTAL);
    // Sockets split into independent halves, also behind the fault switch.
    assert_eq!(stats.shared_halves, 0, "{stats:?}");
    assert!(stats.independent_halves > stats.reconnects, "{stats:?}");
    assert_eq!(server_control.stats().bytes_received, TOTAL);
}

fn options() -> Options {
    common::options()
        .idle_timeout(std::time::Duration::from_secs(5))
        // A writer may run only a little ahead of a broken connection, so
        // that the cuts land every few MiB of the stream.
        .send_buffer_bytes(2 << 20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_pairs_256_mib_each_way_with_cuts() {
    let server = BackedPipe::passive(options());
    let dials = Arc::new(AtomicUsize::new(0));
    let newest = Arc::new(Mutex::new(None));
    let dial = common::dialer(server.control(), dials, Arc::clone(&newest));
    let client = BackedPipe::connect(dial, options());
    exchange(client, server, newest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_tcp_256_mib_each_way_with_cuts() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = BackedPipe::passive(options());
    let accept = server.control();
    let acceptor = tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else { return };
            conn.set_nodelay(true).unwrap();
            let (conn, _) = Faulty::new(conn);
            if accept.resume(conn).is_err() {
                return;
            }
        }
    });
    let newest = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&newest);
    let dial = move || {
        let slot = Arc::clone(&slot);
        async move {
            let conn = TcpStream::connect(address).await?;
            conn.set_nodelay(true)?;
            // A cut resets the connection: what is in flight is lost.
            conn.set_zero_linger()?;
            let (conn, fault) = Faulty::new(conn);
            *slot.lock().unwrap() = Some(fault);
            Ok(conn)
        }
    };
    let client = BackedPipe::connect(dial, options());
    exchange(client, server, newest).await;
    acceptor.abort();
}

#[tokio::test]
async fn unix_listener_sessions_routed_by_hello() {
    // The shape of a server hosting many sessions: read each connection's
    // HELLO, start a session for a new client, route a resuming one.
    use std::collections::HashMap;

    use backedpipe::proto::SessionId;

    let dir = std::env::temp_dir().join(format!("backedpipe-route-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sock");
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let (new_sessions, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        let mut sessions: HashMap<SessionId, backedpipe::PipeControl> = HashMap::new();
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let Ok(Ok(hello)) =
                tokio::time::timeout(std::time::Duration::from_secs(2), backedpipe::read_hello(&mut conn)).await
            else {
                continue;
            };
            if hello.session_id().is_new() {
                let pipe = BackedPipe::passive(options());
                pipe.resume_with_hello(conn, hello).unwrap();
                sessions.insert(pipe.session_id(), pipe.control());
                let _ = new_sessions.send(pipe);
            } else if let Some(pipe) = sessions.get(&hello.session_id()) {
                let _ = pipe.resume_with_hello(conn, hello);
            }
        }
    });
    let dial_path = path.clone();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let dial_path = dial_path.clone();
        let dial = move || {
            let dial_path = dial_path.clone();
            async move { UnixStream::connect(dial_path).await }
        };
        clients.push(BackedPipe::connect(dial, options()));
    }
    for (index, client) in clients.iter_mut().enumerate() {
        within(5, "connect", client.connected()).await.unwrap();
        within(5, "write", client.write_all(format!("client {index}, part 1;").as_bytes())).await.unwrap();
        within(5, "reconnect", client.force_reconnect()).await.unwrap();
        within(5, "write", client.write_all(b" part 2")).await.unwrap();
        within(5, "shutdown", client.shutdown()).await.unwrap();
    }
    let mut texts = Vec::new();
    for _ in 0..3 {
        let mut pipe = within(5, "accepted", accepted.recv()).await.unwrap();
        let mut text = String::new();
        within(5, "read", pipe.read_to_string(&mut text)).await.unwrap();
        assert_eq!(pipe.stats().reconnects, 1);
        texts.push(text);
    }
    texts.sort();
    assert_eq!(texts, ["client 0, part 1; part 2", "client 1, part 1; part 2", "client 2, part 1; part 2"]);
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes `total` bytes of stream `stream` in writes of odd sizes (from
/// one byte to more than a DATA frame), then ends the stream; the hash of
/// what was written.
async fn write_odd_sizes<W: AsyncWrite + Unpin>(mut writer: W, stream: u64, total: usize) -> io::Result<(u64, u64)> {
    let mut rng = fastrand::Rng::with_seed(stream);
    let mut data = vec![0; total];
    fill(stream, 0, &mut data);
    let mut hash = Hash::default();
    let mut at = 0;
    while at < total {
        let len = [1, 3, 5, 6, 13, 4096, 65_531, 65_536, 70_001][rng.usize(..9)].min(total - at);
        writer.write_all(&data[at..at + len]).await?;
        hash.update(&data[at..at + len]);
        at += len;
    }
    writer.shutdown().await?;
    Ok(hash.finish())
}

/// Reads to the end of stream into buffers of odd sizes; the hash of what
/// was read.
async fn read_odd_sizes<R: AsyncRead + Unpin>(mut reader: R, seed: u64) -> io::Result<(u64, u64)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut hash = Hash::default();
    let mut buf = vec![0; 200_000];
    loop {
        let len = [1, 4, 5, 7, 4097, 65_536, 65_541, 200_000][rng.usize(..8)];
        let count = reader.read(&mut buf[..len]).await?;
        if count == 0 {
            return Ok(hash.finish());
        }
        hash.update(&buf[..count]);
    }
}

/// A read takes DATA payload straight into the caller's buffer, or several
/// frames at once into the pipe, or buffered bytes out of it, depending on
/// where in a frame the connection is and how much room the caller gives.
/// With writes and reads of every size around the frame and header sizes,
/// both ways at once over the sockets' own halves, and reconnects that
/// replay bytes the reader has had already, both streams arrive whole and
/// in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_sockets_odd_write_and_read_sizes_both_ways_with_reconnects() {
    const BYTES: usize = 24 << 20;
    let server = BackedPipe::passive(options());
    let accept = server.control();
    let client = BackedPipe::connect(
        move || {
            let accept = accept.clone();
            async move {
                let (ours, theirs) = UnixStream::pair()?;
                accept.resume(theirs).map_err(io::Error::from)?;
                Ok(ours)
            }
        },
        options(),
    );
    let client_control = client.control();
    let server_control = server.control();
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let reconnects = tokio::spawn(async move {
        // Once the streams are under way.
        while client_control.stats().bytes_received < 1 << 20 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let mut midway = 0;
        for _ in 0..6 {
            let received = client_control.stats().bytes_received;
            if client_control.force_reconnect().await.is_ok() && received < BYTES as u64 {
                midway += 1;
            }
        }
        midway
    });
    let (client_sent, server_sent, server_got, client_got) = within(50, "24 MiB each way", async {
        tokio::try_join!(
            write_odd_sizes(client_write, 1, BYTES),
            write_odd_sizes(server_write, 2, BYTES),
            read_odd_sizes(server_read, 3),
            read_odd_sizes(client_read, 4),
        )
    })
    .await
    .unwrap();
    assert_eq!(client_sent.1, BYTES as u64);
    assert_eq!(server_got, client_sent, "client → server stream differs");
    assert_eq!(client_got, server_sent, "server → client stream differs");
    let midway = within(10, "the reconnects", reconnects).await.unwrap();
    assert!(midway >= 1, "no reconnect while the streams were under way");
    let stats = server_control.stats();
    assert_eq!(stats.shared_halves, 0, "{stats:?}");
}
