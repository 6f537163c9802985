//! Client and server through a fault-injecting TCP proxy on loopback: cuts
//! every few milliseconds under full load, the first connection to a
//! server cut at every byte offset of its handshake, a black hole, refused
//! and delayed connections, and a thousand reconnects of one session with
//! the process's descriptors and memory watched.

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backedpipe::dial::TcpDialer;
use backedpipe::server::Listener;
use backedpipe::{BackedPipe, PipeState, Reconnector, Transport};
use common::net::{client_options, expect_pattern, open_fds, rss_kib, send_pattern, server_options, tcp_server};
use common::within;
use faultproxy::{Cut, CutStyle, Proxy};
use tokio::io::AsyncWriteExt;

/// Held by the tests that measure this process's memory and by those that
/// allocate a lot of it, so that no measurement sees another test's
/// buffers come and go; and by the one that opens hundreds of connections
/// in a row, so that its load does not skew the others' counts.
static MEMORY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Streams `total` bytes each way between `client` and `session` at once
/// and checks every byte; returns the pipes' halves when done.
async fn stream_both_ways(client: BackedPipe, session: BackedPipe, total: u64) -> std::io::Result<()> {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = session.into_split();
    let up = async {
        send_pattern(&mut client_write, 1, total, 64 << 10).await?;
        client_write.shutdown().await
    };
    let down = async {
        send_pattern(&mut server_write, 2, total, 64 << 10).await?;
        server_write.shutdown().await
    };
    let check_up = expect_pattern(&mut server_read, 1, total);
    let check_down = expect_pattern(&mut client_read, 2, total);
    tokio::try_join!(up, down, check_up, check_down)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_cut_every_1_to_50_ms_128_mib_each_way_arrive_intact() {
    let _memory = MEMORY.lock().await;
    let (listener, addr) = tcp_server(server_options()).await;
    let proxy = Proxy::start_seeded(addr, 6).await.expect("proxy");
    proxy.set_cut(Cut::RandomTime { min: Duration::from_millis(1), max: Duration::from_millis(50) });
    let client = BackedPipe::connect(TcpDialer::new(proxy.addr().to_string()), client_options());
    let control = client.control();
    let session = within(30, "accept", listener.accept()).await.expect("session");
    let server_control = session.control();

    let started = Instant::now();
    let total: u64 = 128 << 20;
    within(240, "128 MiB each way", stream_both_ways(client, session, total)).await.expect("both directions intact");
    let elapsed = started.elapsed();
    let stats = control.stats();
    let proxy_stats = proxy.stats();
    eprintln!(
        "128 MiB each way through cuts every 1-50 ms: {elapsed:.2?}, {} reconnects, {} failed attempts, {} proxy cuts, \
         {} MiB replayed by the client, {} MiB by the server",
        stats.reconnects,
        stats.failed_attempts,
        proxy_stats.cuts,
        stats.bytes_replayed >> 20,
        server_control.stats().bytes_replayed >> 20,
    );
    assert!(stats.reconnects >= 10, "the proxy cut often: {stats:?}");
    // The client counts a handshake once its PROOF is sent, the server once
    // it verified it: every cut in between (several in a row when the
    // machine is slow) leaves the server one more behind, never ahead.
    let server_stats = server_control.stats();
    assert!(server_stats.reconnects <= stats.reconnects, "server {server_stats:?}, client {stats:?}");
    assert!(server_stats.reconnects >= 10, "the server saw the cuts too: {server_stats:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_connection_is_declared_dead_within_the_keepalive_bound() {
    let (listener, addr) = tcp_server(server_options()).await;
    let proxy = Proxy::start(addr).await.expect("proxy");
    let idle_timeout = common::IDLE_TIMEOUT;
    let mut client = BackedPipe::connect(TcpDialer::new(proxy.addr().to_string()), client_options());
    within(10, "connect", client.connected()).await.unwrap();
    let mut session = within(10, "accept", listener.accept()).await.unwrap();
    within(10, "before", send_pattern(&mut client, 3, 1 << 20, 64 << 10)).await.unwrap();
    within(10, "before", expect_pattern(&mut session, 3, 1 << 20)).await.unwrap();

    proxy.set_black_hole(true);
    let silenced = Instant::now();
    // Bytes written into the hole must arrive after the resume.
    within(10, "write into the hole", client.write_all(b"through the hole")).await.unwrap();
    let mut status = client.watch_status();
    within(10, "declared dead", status.wait_for(|status| status.state != PipeState::Connected)).await.unwrap();
    let detected = silenced.elapsed();
    eprintln!("black hole detected after {detected:.2?} (idle timeout {idle_timeout:?})");
    assert!(detected >= idle_timeout / 2, "not before the bound: {detected:?}");
    assert!(detected < idle_timeout * 3, "within the keepalive bound: {detected:?}");

    proxy.set_black_hole(false);
    within(10, "resumed on a fresh connection", client.connected()).await.expect("resumed");
    let mut got = [0u8; 16];
    within(10, "bytes from the hole", tokio::io::AsyncReadExt::read_exact(&mut session, &mut got)).await.unwrap();
    assert_eq!(&got, b"through the hole");
    assert_eq!(client.stats().reconnects, 1);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_delayed_connections_are_retried_until_they_get_through() {
    let (listener, addr) = tcp_server(server_options()).await;
    let proxy = Proxy::start(addr).await.expect("proxy");
    proxy.set_delay(Duration::from_millis(20));
    let mut client = BackedPipe::connect(TcpDialer::new(proxy.addr().to_string()), client_options());
    within(10, "connect through a delay", client.connected()).await.unwrap();
    let mut session = within(10, "accept", listener.accept()).await.unwrap();

    proxy.refuse_for(Duration::from_millis(400));
    assert_eq!(proxy.cut_all(), 1);
    within(10, "write while refused", send_pattern(&mut client, 4, 256 << 10, 16 << 10)).await.unwrap();
    within(10, "data after the refusals", expect_pattern(&mut session, 4, 256 << 10)).await.unwrap();
    let stats = client.stats();
    assert_eq!(stats.reconnects, 1, "{stats:?}");
    assert!(stats.failed_attempts >= 1, "some dials were refused: {stats:?}");
    assert!(proxy.stats().refused >= 1);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_reconnects_keep_descriptors_and_memory_flat() {
    let _memory = MEMORY.lock().await;
    let (listener, addr) = tcp_server(server_options()).await;
    let proxy = Proxy::start(addr).await.expect("proxy");
    let client = BackedPipe::connect(TcpDialer::new(proxy.addr().to_string()), client_options());
    let control = client.control();
    let session = within(10, "accept", listener.accept()).await.unwrap();
    let session_control = session.control();

    // Data flows all along, 64 KiB at a time, checked at the other end.
    let total: u64 = 256 << 20;
    let flow = tokio::spawn(async move {
        let (client_read, mut client_write) = client.into_split();
        let (mut server_read, server_write) = session.into_split();
        let up = async {
            let mut seq = 0;
            let mut buf = vec![0u8; 64 << 10];
            while seq < total {
                common::fill(5, seq, &mut buf);
                client_write.write_all(&buf).await?;
                seq += buf.len() as u64;
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            client_write.shutdown().await
        };
        let check_up = expect_pattern(&mut server_read, 5, total);
        tokio::try_join!(up, check_up)?;
        std::io::Result::Ok((client_read, server_write))
    });

    let mut baseline = None;
    let reconnects = 1000;
    for round in 1..=reconnects {
        within(20, "connected", control.connected()).await.expect("connected");
        let before = control.stats().reconnects;
        let server_before = session_control.stats().reconnects;
        proxy.cut_all();
        within(20, "reconnect", async {
            // (The status lock must not be held while the pipe is asked for
            // its stats: the pipe publishes its status under its own lock.)
            let mut status = control.watch_status();
            loop {
                let state = status.borrow_and_update().state;
                if state == PipeState::Connected && control.stats().reconnects > before {
                    break;
                }
                status.changed().await.unwrap();
            }
            // The server completes the handshake just after the client.
            let mut status = session_control.watch_status();
            loop {
                let state = status.borrow_and_update().state;
                if state == PipeState::Connected && session_control.stats().reconnects > server_before {
                    break;
                }
                status.changed().await.unwrap();
            }
        })
        .await;
        if round == 100 {
            baseline = Some((open_fds(), rss_kib()));
        }
    }
    let (fds_before, rss_before) = baseline.unwrap();
    let (fds_after, rss_after) = (open_fds(), rss_kib());
    eprintln!(
        "{reconnects} reconnects: descriptors {fds_before} -> {fds_after}, RSS {rss_before} KiB -> {rss_after} KiB"
    );
    // A few descriptors may be in flight (a connection being replaced).
    assert!(fds_after <= fds_before + 6, "descriptors leak: {fds_before} -> {fds_after}");
    assert!(rss_after <= rss_before + 16 * 1024, "memory grows: {rss_before} KiB -> {rss_after} KiB");
    assert!(control.stats().reconnects >= reconnects);
    assert_eq!(listener.stats().sessions, 1);
    assert!(listener.stats().resumes_routed >= reconnects);
    let halves = within(120, "flow", flow).await.unwrap().expect("integrity through a thousand reconnects");
    assert!(session_control.stats().reconnects >= reconnects);
    drop(halves);
    proxy.shutdown().await;
}

/// Dials through a proxy the first time and straight to the server after:
/// only the first connection can be cut.
struct FirstThroughProxy {
    proxy: TcpDialer,
    server: TcpDialer,
    dials: AtomicUsize,
}

impl Reconnector for FirstThroughProxy {
    async fn reconnect(&self) -> io::Result<impl Transport> {
        let conn: Box<dyn Transport> = if self.dials.fetch_add(1, Ordering::SeqCst) == 0 {
            Box::new(self.proxy.reconnect().await?)
        } else {
            Box::new(self.server.reconnect().await?)
        };
        Ok(conn)
    }
}

/// A new client whose first connection the proxy cuts after `bytes` bytes
/// (both directions summed): its request and the session's answer must
/// arrive intact, with no session lost. Returns whether the cut happened.
async fn first_connection_cut_after(listener: &Listener, server: SocketAddr, style: CutStyle, bytes: u64) -> bool {
    let proxy = Proxy::start(server).await.expect("proxy");
    proxy.set_cut_style(style);
    proxy.set_cut(Cut::AfterBytes(bytes));
    let dialer = FirstThroughProxy {
        proxy: TcpDialer::new(proxy.addr().to_string()),
        server: TcpDialer::new(server.to_string()),
        dials: AtomicUsize::new(0),
    };
    let mut client = BackedPipe::connect(dialer, client_options());
    let case = format!("{style:?} cut after {bytes} bytes");
    within(10, &case, async {
        send_pattern(&mut client, 20, 1024, 1024).await.unwrap_or_else(|err| panic!("{case}: request: {err}"));
        let mut session = listener.accept().await.unwrap_or_else(|| panic!("{case}: no session"));
        assert_eq!(session.session_id(), client.session_id(), "{case}: the client's own session");
        expect_pattern(&mut session, 20, 1024).await.unwrap_or_else(|err| panic!("{case}: request: {err}"));
        send_pattern(&mut session, 21, 1024, 1024).await.unwrap_or_else(|err| panic!("{case}: answer: {err}"));
        expect_pattern(&mut client, 21, 1024)
            .await
            .unwrap_or_else(|err| panic!("{case}: answer: {err}; the client's pipe: {:?}", client.failure()));
        assert!(client.failure().is_none(), "{case}: {:?}", client.failure());
        client.close();
        session.close();
    })
    .await;
    let cut = proxy.stats().cuts > 0;
    proxy.shutdown().await;
    cut
}

/// The first connection of every new client cut at each offset from 0 to
/// 400 bytes (HELLO, WELCOME with the server's proof, PROOF, the server's
/// confirmation and the first DATA frames take about 250 and more): the
/// client never loses its session, whether the cut leaves it without a
/// WELCOME, with a WELCOME whose PROOF the server never verified, or with a
/// session the server holds but has not confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_connection_cut_at_any_offset_never_loses_the_session() {
    let _busy = MEMORY.lock().await;
    let (listener, addr) = tcp_server(server_options()).await;
    let started = Instant::now();
    let mut cuts = 0;
    let offsets = 0..400u64;
    for style in [CutStyle::Close, CutStyle::Reset] {
        for bytes in offsets.clone() {
            cuts += u64::from(first_connection_cut_after(&listener, addr, style, bytes).await);
        }
    }
    let stats = listener.stats();
    eprintln!(
        "{} first connections cut at offsets 0..{} ({cuts} cut) in {:.2?}: {} sessions, {} of them started again \
         under an unconfirmed id, {} handshakes failed, {} resumes routed, {} refused as unknown",
        2 * offsets.end,
        offsets.end,
        started.elapsed(),
        stats.sessions_created,
        stats.sessions_created_unconfirmed,
        stats.failed_new_handshakes,
        stats.resumes_routed,
        stats.refused_unknown_session,
    );
    assert_eq!(stats.sessions_created, 2 * offsets.end, "exactly one session per client");
    assert_eq!(stats.refused_unknown_session, 0);
    assert!(stats.sessions_created_unconfirmed > 0, "some cuts fell between WELCOME and the server's PROOF check");
}
