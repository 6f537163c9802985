//! The server side over real loopback sockets: new sessions and resumes
//! routed to them, sessions started under a client's unconfirmed id, peer
//! uid admission, expiry, a full server, a restarted server, and graceful
//! shutdown.

mod common;

use std::time::Duration;

use backedpipe::dial::{TcpDialer, UnixDialer};
use backedpipe::proto::{
    AuthMethod, ErrorCode, FLAG_EOS_RECEIVED, FLAG_UNCONFIRMED, FrameHeader, FrameKind, HEADER_LEN, Hello, Nonce,
    SessionId,
};
use backedpipe::server::{Listener, PeerUid, ServerOptions, ServerStats};
use backedpipe::{BackedPipe, Error, Joined, PipeState};
use common::net::{
    Gated, TempDir, client_options, error_code, eventually, expect_pattern, frames_until_close, send_pattern,
    server_options, tcp_server,
};
use common::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener};

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Listener>();
    check::<ServerOptions>();
    check::<ServerStats>();
    check::<PeerUid>();
    check::<TcpDialer>();
    check::<UnixDialer>();
    #[cfg(feature = "child-stdio")]
    check::<backedpipe::dial::ChildDialer>();
    check::<backedpipe::server::Accepted<TcpStream>>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_clients_get_sessions_and_resumes_reach_them() {
    let (listener, addr) = tcp_server(server_options()).await;
    let total: u64 = 4 << 20;
    let mut clients = Vec::new();
    for index in 0..3u64 {
        let client = BackedPipe::connect(TcpDialer::new(addr.to_string()), client_options());
        clients.push((index, client));
    }
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(within(10, "accept", listener.accept()).await.expect("a session"));
    }
    let mut ids: Vec<_> = sessions.iter().map(|session| session.session_id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "every client has its own session");

    // Each client says which one it is, then both directions stream while
    // the client reconnects again and again.
    let mut tasks = Vec::new();
    for (index, client) in clients {
        let (mut read, mut write) = client.into_split();
        let control = read.control();
        tasks.push(tokio::spawn(async move {
            write.write_all(&index.to_be_bytes()).await?;
            let writer = async {
                send_pattern(&mut write, index, total, 32 << 10).await?;
                write.shutdown().await
            };
            let reader = expect_pattern(&mut read, 100 + index, total);
            let cutter = async {
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    control.force_reconnect().await.map_err(std::io::Error::from)?;
                }
                Ok(())
            };
            tokio::try_join!(writer, reader, cutter)?;
            std::io::Result::Ok(control.stats().reconnects)
        }));
    }
    let mut servers = Vec::new();
    for session in sessions {
        let (mut read, mut write) = session.into_split();
        servers.push(tokio::spawn(async move {
            let mut index = [0u8; 8];
            read.read_exact(&mut index).await?;
            let index = u64::from_be_bytes(index);
            let writer = async {
                send_pattern(&mut write, 100 + index, total, 32 << 10).await?;
                write.shutdown().await
            };
            let reader = async {
                expect_pattern(&mut read, index, total).await?;
                let mut end = [0u8; 1];
                assert_eq!(read.read(&mut end).await?, 0, "end of stream after the data");
                Ok(())
            };
            tokio::try_join!(writer, reader)?;
            // Kept open until the clients are done with their reconnects.
            std::io::Result::Ok((read, write))
        }));
    }
    let mut reconnects = 0;
    for task in tasks {
        reconnects += within(60, "client streams", task).await.expect("task").expect("stream intact");
    }
    for task in servers {
        within(60, "server streams", task).await.expect("task").expect("stream intact");
    }
    assert!(reconnects >= 15, "{reconnects} reconnects");
    let stats = listener.stats();
    assert_eq!(stats.sessions_created, 3);
    assert!(stats.resumes_routed >= 15, "{stats:?}");
    assert_eq!(stats.refused_unknown_session, 0);
}

/// Opens a raw connection, sends `hello` and reads the server's first
/// frame; the connection stays open (a WELCOME waits for a PROOF).
async fn first_answer(addr: std::net::SocketAddr, hello: &Hello) -> (TcpStream, FrameKind, Vec<u8>) {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(&hello.encode()).await.expect("HELLO");
    let mut header = [0u8; HEADER_LEN];
    within(10, "answer", conn.read_exact(&mut header)).await.expect("an answer");
    let header = FrameHeader::decode(header, 0).expect("a handshake or ERROR frame");
    let mut payload = vec![0u8; header.len as usize];
    within(10, "answer", conn.read_exact(&mut payload)).await.expect("its payload");
    (conn, header.kind, payload)
}

/// The session id a WELCOME payload carries.
fn welcome_session(payload: &[u8]) -> SessionId {
    SessionId::from_bytes(payload[4..20].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_id_starts_one_session_and_an_ended_one_none() {
    let (listener, addr) = tcp_server(server_options()).await;
    let unconfirmed = |id, reader_seq| {
        Hello::new(AuthMethod::HmacSha256, id, reader_seq, Nonce::random()).with_flags(FLAG_UNCONFIRMED)
    };

    // An id the server never held, flagged: a session starts under it.
    let id = SessionId::random();
    let (first, kind, payload) = first_answer(addr, &unconfirmed(id, 0)).await;
    assert_eq!((kind, welcome_session(&payload)), (FrameKind::Welcome, id));
    // Another connection for it while its first handshake is under way
    // reaches the same new session: never two sessions with one id.
    let (second, kind, payload) = first_answer(addr, &unconfirmed(id, 0).with_attempt(2)).await;
    assert_eq!((kind, welcome_session(&payload)), (FrameKind::Welcome, id));
    assert_eq!(listener.stats().resumes_routed, 1);
    drop((first, second));
    within(
        10,
        "forgotten",
        eventually(Duration::from_secs(10), "the handshake failed", || listener.stats().failed_new_handshakes == 1),
    )
    .await;

    // A client that never heard from the server has read nothing.
    for hello in [
        unconfirmed(SessionId::random(), 5),
        unconfirmed(SessionId::random(), 0).with_flags(FLAG_UNCONFIRMED | FLAG_EOS_RECEIVED),
    ] {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(&hello.encode()).await.unwrap();
        let frames = within(10, "refusal", frames_until_close(&mut conn)).await;
        assert!(
            matches!(&frames[..], [(FrameKind::Error, payload)] if error_code(payload) == ErrorCode::InvalidSequence),
            "{frames:?}"
        );
    }

    // A session that existed and ended is not started again.
    let client = BackedPipe::connect(TcpDialer::new(addr.to_string()), client_options());
    within(10, "connect", client.connected()).await.unwrap();
    let session = within(10, "accept", listener.accept()).await.unwrap();
    let ended = session.session_id();
    client.close();
    session.close();
    within(
        10,
        "ended",
        eventually(Duration::from_secs(10), "the session left the table", || listener.stats().sessions == 0),
    )
    .await;
    let (mut conn, kind, payload) = first_answer(addr, &unconfirmed(ended, 0)).await;
    assert_eq!((kind, error_code(&payload)), (FrameKind::Error, ErrorCode::SessionUnknown));
    assert!(within(10, "close", frames_until_close(&mut conn)).await.is_empty());
    let stats = listener.stats();
    assert_eq!((stats.sessions_created, stats.sessions_created_unconfirmed), (1, 0), "{stats:?}");
}

#[tokio::test]
async fn tcp_listener_requires_a_secret() {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = server_options().pipe(common::options());
    let err = Listener::tcp(tcp, options).expect_err("no secret on TCP");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn unix_listener_admits_its_own_user_and_refuses_others() {
    let dir = TempDir::new("uid");
    let own = rustix::process::geteuid().as_raw();

    // Default: the server's own user, no secret needed.
    let path = dir.0.join("own.sock");
    let options = ServerOptions::new().pipe(common::options());
    let listener = Listener::unix(UnixListener::bind(&path).unwrap(), options.clone());
    let mut client = BackedPipe::connect(UnixDialer::new(&path), common::options());
    client.write_all(b"hi").await.unwrap();
    let mut session = within(10, "accept", listener.accept()).await.expect("session");
    let mut got = [0u8; 2];
    within(10, "read", session.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"hi");

    // Only another user: refused before the handshake.
    let path = dir.0.join("other.sock");
    let options = options.peer_uid(PeerUid::Only(vec![own.wrapping_add(1)]));
    let strict = Listener::unix(UnixListener::bind(&path).unwrap(), options);
    let refused = BackedPipe::connect(UnixDialer::new(&path), common::options());
    let err = within(10, "refusal", refused.connected()).await.expect_err("refused");
    assert!(matches!(err, Error::AuthenticationFailed), "{err:?}");
    assert_eq!(strict.stats().refused_peer_uid, 1);
    assert_eq!(strict.stats().sessions, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sessions_are_gone_and_a_resume_just_before_expiry_succeeds() {
    let expiry = Duration::from_secs(2);
    let options = server_options().session_expiry(expiry);
    let (listener, addr) = tcp_server(options).await;
    let dialer = Gated::new(addr);
    let mut client = BackedPipe::connect(dialer.clone(), client_options());
    client.write_all(b"one").await.unwrap();
    let mut session = within(10, "accept", listener.accept()).await.expect("session");
    let control = listener.session(session.session_id()).expect("listed");
    let mut got = [0u8; 3];
    within(10, "read", session.read_exact(&mut got)).await.unwrap();

    // Away for 70 % of the expiry, then back: the session is still there.
    dialer.set_shut(true);
    let _ = client.force_reconnect().await;
    within(10, "server sees the client leave", async {
        let mut status = control.watch_status();
        status.wait_for(|status| status.state != PipeState::Connected).await.unwrap();
    })
    .await;
    tokio::time::sleep(expiry.mul_f64(0.7)).await;
    dialer.set_shut(false);
    within(10, "resume before expiry", client.connected()).await.expect("resumed");
    client.write_all(b"two").await.unwrap();
    within(10, "read", session.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"two");
    assert_eq!(listener.stats().sessions_expired, 0);

    // Away for longer than the expiry: gone.
    dialer.set_shut(true);
    let _ = client.force_reconnect().await;
    within(10, "expiry", eventually(Duration::from_secs(10), "expired", || listener.stats().sessions_expired == 1))
        .await;
    assert_eq!(listener.stats().sessions, 0);
    let err = within(10, "server side read", session.read(&mut got)).await.expect_err("closed");
    assert!(matches!(Error::from_io(&err), Some(Error::Closed)), "{err:?}");
    dialer.set_shut(false);
    let err = within(10, "session gone", client.connected()).await.expect_err("session gone");
    assert!(err.is_session_gone(), "{err:?}");
    assert_eq!(listener.stats().refused_unknown_session, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_evicts_the_oldest_disconnected_session_then_refuses() {
    let options = server_options().max_sessions(2);
    let (listener, addr) = tcp_server(options).await;

    let first_dialer = Gated::new(addr);
    let first = BackedPipe::connect(first_dialer.clone(), client_options());
    within(10, "first", first.connected()).await.unwrap();
    let _first_session = within(10, "accept", listener.accept()).await.unwrap();
    let second = BackedPipe::connect(TcpDialer::new(addr.to_string()), client_options());
    within(10, "second", second.connected()).await.unwrap();
    let _second_session = within(10, "accept", listener.accept()).await.unwrap();

    first_dialer.set_shut(true);
    let _ = first.force_reconnect().await;
    let first_id = first.session_id();
    within(10, "first disconnected", async {
        let control = listener.session(first_id).unwrap();
        control.watch_status().wait_for(|status| status.state != PipeState::Connected).await.unwrap();
    })
    .await;

    let third = BackedPipe::connect(TcpDialer::new(addr.to_string()), client_options());
    within(10, "third", third.connected()).await.expect("room made for the third");
    let _third_session = within(10, "accept", listener.accept()).await.unwrap();
    assert_eq!(listener.stats().sessions_evicted, 1);
    assert!(listener.session(first_id).is_none());
    first_dialer.set_shut(false);
    let err = within(10, "evicted", first.connected()).await.expect_err("evicted");
    assert!(err.is_session_gone(), "{err:?}");

    // Both sessions connected: nothing to evict.
    let fourth = BackedPipe::connect(TcpDialer::new(addr.to_string()), client_options());
    let err = within(10, "full", fourth.connected()).await.expect_err("refused");
    assert!(matches!(err, Error::Remote { code: backedpipe::proto::ErrorCode::ServerFull, .. }), "{err:?}");
    assert_eq!(listener.stats().refused_full, 1);
    assert!(second.status().state == PipeState::Connected && third.status().state == PipeState::Connected);
}

#[test]
fn a_restarted_server_tells_clients_their_session_is_gone() {
    let dir = TempDir::new("restart");
    let path = dir.0.join("server.sock");
    let options = ServerOptions::new().pipe(common::options());

    // The first server runs on its own runtime, which is then dropped: its
    // connections vanish without a word, as when the process dies.
    let first = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = first.block_on(async { Listener::unix(UnixListener::bind(&path).unwrap(), options.clone()) });
    let client_runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    client_runtime.block_on(async {
        let mut client = BackedPipe::connect(UnixDialer::new(&path), common::options());
        client.write_all(b"before").await.unwrap();
        let session = first.spawn(async move {
            let mut session = listener.accept().await.expect("session");
            let mut got = [0u8; 6];
            session.read_exact(&mut got).await.unwrap();
            (listener, session)
        });
        let (listener, session) = within(10, "first server", session).await.unwrap();
        // The server's objects outlive its runtime, so that nothing closes
        // them politely.
        let dead_server = (listener, session);
        first.shutdown_background();

        std::fs::remove_file(&path).unwrap();
        let _second = Listener::unix(UnixListener::bind(&path).unwrap(), options.clone());
        let mut buf = [0u8; 1];
        let err = within(20, "session gone", client.read(&mut buf)).await.expect_err("session gone");
        let err = Error::from_io(&err).expect("a pipe error");
        assert!(err.is_session_gone(), "{err:?}");
        drop(dead_server);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_every_stream_after_its_data() {
    let (listener, addr) = tcp_server(server_options()).await;
    let total: u64 = 1 << 20;
    let mut clients = Vec::new();
    for _ in 0..2 {
        let client = BackedPipe::connect(TcpDialer::new(addr.to_string()), client_options());
        within(10, "connect", client.connected()).await.unwrap();
        clients.push(client);
    }
    let mut sessions = Vec::new();
    for (index, _) in clients.iter().enumerate() {
        let mut session = within(10, "accept", listener.accept()).await.unwrap();
        within(10, "server writes", send_pattern(&mut session, index as u64, total, 64 << 10)).await.unwrap();
        sessions.push(session);
    }
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let mut all = Vec::new();
                client.read_to_end(&mut all).await?;
                client.close();
                std::io::Result::Ok(all.len() as u64)
            })
        })
        .collect();
    let started = tokio::time::Instant::now();
    within(20, "shutdown", listener.shutdown(Duration::from_secs(10))).await;
    assert!(started.elapsed() < Duration::from_secs(8), "clients ended their sessions; no need to wait out the grace");
    for reader in readers {
        let received = within(10, "client reads to the end", reader).await.unwrap().expect("clean end of stream");
        assert_eq!(received, total);
    }
    for session in &sessions {
        assert_eq!(session.status().state, PipeState::Closed);
    }
    assert!(within(5, "accept after shutdown", listener.accept()).await.is_none());
    let late = within(5, "connect after shutdown", TcpStream::connect(addr)).await;
    assert!(late.is_err(), "the port is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_stream_of_connections_can_feed_a_listener() {
    // In-memory connections, accepted elsewhere and handed over through a
    // channel, made transports by `Joined`.
    let (tx, rx) = tokio::sync::mpsc::channel::<Joined<tokio::io::DuplexStream>>(4);
    let listener = Listener::new(server_options());
    listener.listen(rx);
    let dial = move || {
        let tx = tx.clone();
        async move {
            let (ours, theirs) = tokio::io::duplex(64 << 10);
            tx.send(Joined::new(theirs)).await.map_err(|_| std::io::Error::other("listener gone"))?;
            std::io::Result::Ok(Joined::new(ours))
        }
    };
    let mut client = BackedPipe::connect(dial, client_options());
    client.write_all(b"in memory").await.unwrap();
    let mut session = within(10, "accept", listener.accept()).await.expect("session");
    client.force_reconnect().await.expect("resumed through the channel");
    let mut got = [0u8; 9];
    within(10, "read", session.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"in memory");
    assert_eq!(listener.stats().resumes_routed, 1);
    // Streams with no split of their own take turns through one lock.
    let stats = client.stats();
    assert_eq!((stats.independent_halves, stats.shared_halves), (0, 2), "{stats:?}");
    let stats = session.stats();
    assert_eq!((stats.independent_halves, stats.shared_halves), (0, 2), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_waiting_to_be_accepted_hold_no_handshake_slot() {
    let options = server_options().max_handshakes(1).accept_backlog(1);
    let (listener, addr) = tcp_server(options).await;
    // Nobody accepts: three new clients still complete their handshakes.
    let mut clients = Vec::new();
    for _ in 0..3 {
        let client = BackedPipe::connect(TcpDialer::new(addr.to_string()), client_options());
        within(10, "handshake without accept", client.connected()).await.expect("connected");
        clients.push(client);
    }
    // And a resume still gets through, once the server has finished the
    // last first handshake (one slot only).
    within(
        10,
        "sessions listed",
        eventually(Duration::from_secs(10), "three sessions", || listener.stats().sessions == 3),
    )
    .await;
    within(10, "resume", clients[0].force_reconnect()).await.expect("resumed");
    assert_eq!(listener.stats().sessions, 3);
    for _ in 0..3 {
        within(10, "accept later", listener.accept()).await.expect("session");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_session_holds_only_what_it_buffers() {
    let (listener, addr) = tcp_server(server_options()).await;
    let dialer = Gated::new(addr);
    let mut client = BackedPipe::connect(dialer.clone(), client_options());
    within(10, "connect", client.connected()).await.unwrap();
    let mut session = within(10, "accept", listener.accept()).await.unwrap();
    // 4 MiB through, nearly all of it acknowledged.
    let total = 4 << 20;
    let (sent, received) =
        tokio::join!(send_pattern(&mut session, 7, total, 64 << 10), expect_pattern(&mut client, 7, total));
    sent.unwrap();
    received.unwrap();

    dialer.set_shut(true);
    let _ = client.force_reconnect().await;
    let control = session.control();
    within(10, "disconnected", control.watch_status().wait_for(|status| status.state != PipeState::Connected))
        .await
        .unwrap();
    // At most the tail the client had not acknowledged yet (one ACK
    // interval, 256 KiB), rounded up; not the 4 MiB of the peak.
    within(
        10,
        "idle buffers released",
        eventually(Duration::from_secs(5), "released", || control.stats().buffer_bytes <= 512 << 10),
    )
    .await;
    // 1 MiB written while the client is away is held, and not much more
    // (what the client had not acknowledged yet, at most one ACK interval,
    // and the ring's rounding).
    // (No flush: it would wait for the client.)
    let mut away = vec![0u8; 1 << 20];
    common::fill(8, 0, &mut away);
    within(10, "write while away", session.write_all(&away)).await.unwrap();
    let held = control.stats().buffer_bytes;
    assert!((1 << 20..=(2 << 20)).contains(&held), "holds {held} bytes");
    dialer.set_shut(false);
    within(10, "resume", client.connected()).await.unwrap();
    within(10, "the held bytes arrive", expect_pattern(&mut client, 8, 1 << 20)).await.unwrap();
}

/// Log lines, written by the test's own subscriber.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn lines_with(&self, pattern: &str) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines().filter(|line| line.contains(pattern)).count()
    }
}

#[test]
fn log_lines_name_their_session_and_side() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_target(false)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    // One thread: every task logs to the subscriber set here.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ids = runtime.block_on(async {
        let (listener, addr) = tcp_server(server_options()).await;
        let mut ids = Vec::new();
        for _ in 0..2 {
            let mut client = BackedPipe::connect(TcpDialer::new(addr.to_string()), client_options());
            within(10, "connect", client.connected()).await.unwrap();
            let mut session = within(10, "accept", listener.accept()).await.expect("session");
            within(10, "resume", client.force_reconnect()).await.unwrap();
            client.write_all(b"x").await.unwrap();
            within(10, "read", session.read_exact(&mut [0])).await.unwrap();
            ids.push(client.session_id().to_string());
            client.close_gracefully(Duration::from_secs(1)).await;
        }
        listener.shutdown(Duration::ZERO).await;
        ids
    });
    assert_ne!(ids[0], ids[1]);
    for id in &ids {
        // Each side's pipe, the server's session and the connection that
        // resumed it say which session they are about.
        assert!(logs.lines_with(&format!("pipe{{side=active session={id}}}")) > 0, "the client's pipe, {id}");
        assert!(logs.lines_with(&format!("session{{id={id}}}:pipe{{side=passive session={id}}}")) > 0, "{id}");
        assert!(logs.lines_with(&format!("connection{{session={id}}}: connection routed")) == 1, "{id}");
    }
}
