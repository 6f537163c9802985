//! Liveness of a resume over real sockets: the client abandons a
//! connection the server still uses, and the bytes it sent there reach the
//! server after the new connection's WELCOME and before its PROOF, so the
//! server has to skip that much of the replay. A relay in the test holds
//! and releases each direction; the stream must go on at once, not after
//! the idle timeout.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backedpipe::{BackedPipe, Options, PipeControl, PipeState, read_hello};
use common::{fill, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixStream};
use tokio::sync::Notify;

/// Small socket buffers between client and relay, so that what the
/// client can push into a connection whose PROOF is held is far less
/// than what the server will have to skip.
const SOCKET_BUFFER_BYTES: u32 = 64 << 10;
/// What the old connection delivers late, at least.
const LATE_BYTES: usize = 4 << 20;

/// The relay's controls.
#[derive(Default)]
struct Relay {
    /// First connection, client to server: keep what arrives.
    hold_old: AtomicBool,
    held: Mutex<Vec<u8>>,
    /// First connection: hand what was kept to the server.
    deliver_old: Notify,
    /// Second connection, client to server: forward from PROOF on.
    release_new: Notify,
}

/// Relays the client's `number`th connection to the server's pipe.
async fn relay(relay: Arc<Relay>, number: usize, mut client: TcpStream, server: PipeControl) {
    let Ok(hello) = read_hello(&mut client).await else { return };
    let (near, far) = UnixStream::pair().expect("socket pair");
    if server.resume_with_hello(near, hello).is_err() {
        return;
    }
    let (mut client_read, mut client_write) = client.into_split();
    let (mut far_read, mut far_write) = far.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut far_read, &mut client_write).await;
    });
    match number {
        0 => {
            let mut buf = vec![0; 64 << 10];
            loop {
                let count = client_read.read(&mut buf).await.unwrap_or(0);
                if count == 0 {
                    break;
                }
                if relay.hold_old.load(Ordering::SeqCst) {
                    relay.held.lock().unwrap().extend_from_slice(&buf[..count]);
                } else if far_write.write_all(&buf[..count]).await.is_err() {
                    return;
                }
            }
            // The client has abandoned it; the server has not.
            relay.deliver_old.notified().await;
            let held = std::mem::take(&mut *relay.held.lock().unwrap());
            let _ = far_write.write_all(&held).await;
            std::future::pending::<()>().await;
        }
        1 => {
            // HELLO went through; PROOF and what follows wait, in the
            // sockets' buffers only.
            relay.release_new.notified().await;
            let _ = tokio::io::copy(&mut client_read, &mut far_write).await;
        }
        _ => {
            let _ = tokio::io::copy(&mut client_read, &mut far_write).await;
        }
    }
}

async fn dial(addr: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_send_buffer_size(SOCKET_BUFFER_BYTES)?;
    socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES)?;
    socket.connect(addr).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_that_skips_late_bytes_of_the_old_connection_flows_at_once() {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES).unwrap();
    socket.set_send_buffer_size(SOCKET_BUFFER_BYTES).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener: TcpListener = socket.listen(16).unwrap();
    let addr = listener.local_addr().unwrap();

    let controls = Arc::new(Relay::default());
    let server = BackedPipe::passive(Options::new());
    {
        let controls = Arc::clone(&controls);
        let server = server.control();
        tokio::spawn(async move {
            for number in 0.. {
                let Ok((conn, _)) = listener.accept().await else { return };
                tokio::spawn(relay(Arc::clone(&controls), number, conn, server.clone()));
            }
        });
    }

    // Megabytes in flight, unacknowledged, for the server to skip: more
    // than the default bound on unacknowledged bytes lets a writer have.
    let client = BackedPipe::connect(move || dial(addr), Options::new().max_unacked_bytes(16 << 20));
    let client_control = client.control();
    within(10, "first connection", client_control.connected()).await.unwrap();

    // The client writes the test pattern without end; the server checks
    // every byte and counts them.
    let (_client_read, mut client_write) = client.into_split();
    tokio::spawn(async move {
        let mut chunk = vec![0; 64 << 10];
        let mut seq = 0u64;
        loop {
            fill(1, seq, &mut chunk);
            if client_write.write_all(&chunk).await.is_err() {
                return;
            }
            seq += chunk.len() as u64;
        }
    });
    let received = Arc::new(AtomicU64::new(0));
    let (mut server_read, _server_write) = server.into_split();
    let reader = {
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            let mut buf = vec![0; 64 << 10];
            let mut expected = vec![0; (64 << 10) + 16];
            loop {
                let count = server_read.read(&mut buf).await.expect("read");
                assert!(count > 0, "end of stream");
                let seq = received.load(Ordering::SeqCst);
                let start = seq & !7;
                let end = (seq + count as u64).div_ceil(8) * 8;
                let want = &mut expected[..(end - start) as usize];
                fill(1, start, want);
                let offset = (seq - start) as usize;
                assert!(buf[..count] == want[offset..offset + count], "wrong bytes at {seq}");
                received.fetch_add(count as u64, Ordering::SeqCst);
            }
        })
    };
    let wait_for = |limit: Duration, what: &'static str, check: Box<dyn Fn() -> bool + Send>| async move {
        let started = Instant::now();
        while !check() {
            assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        started.elapsed()
    };

    let progress = Arc::clone(&received);
    wait_for(Duration::from_secs(10), "some bytes", Box::new(move || progress.load(Ordering::SeqCst) > 8 << 20)).await;
    // Hold the old connection's bytes until several MiB wait.
    controls.hold_old.store(true, Ordering::SeqCst);
    let held = Arc::clone(&controls);
    wait_for(Duration::from_secs(10), "bytes held", Box::new(move || held.held.lock().unwrap().len() >= LATE_BYTES))
        .await;

    // Reconnect: HELLO and WELCOME go through, PROOF is held.
    let client_status = client_control.clone();
    let reconnect = tokio::spawn(async move { client_control.force_reconnect().await });
    wait_for(
        Duration::from_secs(10),
        "WELCOME received",
        Box::new(move || {
            let status = client_status.status();
            status.state == PipeState::Connected && status.generation.0 >= 2
        }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The old connection's bytes reach the server, still its current one.
    controls.deliver_old.notify_one();
    let before = received.load(Ordering::SeqCst);
    let progress = Arc::clone(&received);
    wait_for(
        Duration::from_secs(10),
        "late bytes read",
        Box::new(move || progress.load(Ordering::SeqCst) >= before + LATE_BYTES as u64),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    // Release PROOF: the server skips the replay up to what it has, and
    // new bytes follow at once.
    let at_release = received.load(Ordering::SeqCst);
    controls.release_new.notify_one();
    let progress = Arc::clone(&received);
    let waited = wait_for(
        Duration::from_secs(2),
        "new bytes after PROOF",
        Box::new(move || progress.load(Ordering::SeqCst) > at_release + (1 << 20)),
    )
    .await;
    assert!(waited <= Duration::from_millis(50), "new bytes only {waited:?} after PROOF");
    within(5, "reconnect", reconnect).await.unwrap().expect("reconnected");
    reader.abort();
}
