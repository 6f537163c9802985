//! Hostile and broken clients against a server with a live session: a
//! wrong secret, a wrong session id, a bogus proof for the live session's
//! id, garbage, a truncated handshake, an oversized length field. Each is
//! refused with the right error, the server keeps serving, and the live
//! session's connection is never replaced or disturbed.

mod common;

use std::time::Duration;

use backedpipe::dial::TcpDialer;
use backedpipe::proto::{AuthMethod, ErrorCode, FrameHeader, FrameKind, Hello, Nonce, PROOF_LEN, SessionId};
use backedpipe::{BackedPipe, Error, Secret};
use common::net::{
    client_options, error_code, expect_pattern, frames_until_close, send_pattern, server_options, tcp_server,
};
use common::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `bytes` on a new raw connection and returns what the server
/// answers before it closes the connection.
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<(FrameKind, Vec<u8>)> {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(bytes).await.expect("send");
    within(10, "server answer", frames_until_close(&mut conn)).await
}

fn only_error(frames: &[(FrameKind, Vec<u8>)]) -> ErrorCode {
    match frames {
        [(FrameKind::Error, payload)] => error_code(payload),
        other => panic!("expected one ERROR frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_are_refused_and_the_live_session_loses_nothing() {
    let options = server_options().pipe(client_options().handshake_timeout(Duration::from_millis(500)));
    let (listener, addr) = tcp_server(options).await;
    let total: u64 = 16 << 20;

    // The session under attack streams both ways throughout.
    let client = BackedPipe::connect(TcpDialer::new(addr.to_string()), client_options());
    within(10, "connect", client.connected()).await.unwrap();
    let session = within(10, "accept", listener.accept()).await.unwrap();
    let live_id = client.session_id();
    let server_control = session.control();
    let client_control = client.control();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = session.into_split();
    let pace = |chunk| async move {
        // Slow enough that the attacks happen while bytes flow.
        tokio::time::sleep(Duration::from_micros(chunk)).await;
    };
    let live = tokio::spawn(async move {
        let up = async {
            for part in 0..64u64 {
                send_pattern(&mut client_write, part, total / 64, 16 << 10).await?;
                pace(20_000).await;
            }
            client_write.shutdown().await
        };
        let down = async {
            for part in 0..64u64 {
                send_pattern(&mut server_write, 1000 + part, total / 64, 16 << 10).await?;
                pace(20_000).await;
            }
            server_write.shutdown().await
        };
        let check_up = async {
            for part in 0..64u64 {
                expect_pattern(&mut server_read, part, total / 64).await?;
            }
            Ok(())
        };
        let check_down = async {
            for part in 0..64u64 {
                expect_pattern(&mut client_read, 1000 + part, total / 64).await?;
            }
            Ok(())
        };
        tokio::try_join!(up, down, check_up, check_down)?;
        std::io::Result::Ok((client_read, client_write, server_read, server_write))
    });

    // 1. A client with the wrong secret: its pipe fails, terminally.
    let wrong = client_options().secret(Some(Secret::new(b"not the secret at all".to_vec())));
    let impostor = BackedPipe::connect(TcpDialer::new(addr.to_string()), wrong);
    let err = within(10, "wrong secret", impostor.connected()).await.expect_err("refused");
    assert!(matches!(err, Error::AuthenticationFailed), "{err:?}");

    // 2. A resume of a session that does not exist.
    let hello = Hello::new(AuthMethod::HmacSha256, SessionId::random(), 0, Nonce::random());
    assert_eq!(only_error(&raw(addr, &hello.encode()).await), ErrorCode::SessionUnknown);

    // 3. A resume of the live session's id without the secret: a WELCOME
    // (the server proves itself first), then the bogus proof is refused.
    let hello = Hello::new(AuthMethod::HmacSha256, live_id, 0, Nonce::random()).with_attempt(u64::MAX);
    let mut bytes = hello.encode();
    bytes.extend_from_slice(&FrameHeader { kind: FrameKind::Proof, len: PROOF_LEN as u32 }.encode());
    bytes.extend_from_slice(&[0xA5; PROOF_LEN]);
    let frames = raw(addr, &bytes).await;
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0].0, FrameKind::Welcome);
    assert_eq!(error_code(&frames[1].1), ErrorCode::AuthenticationFailed);

    // 4. The live session's id with no authentication at all.
    let hello = Hello::new(AuthMethod::None, live_id, 0, Nonce::random());
    assert_eq!(only_error(&raw(addr, &hello.encode()).await), ErrorCode::AuthenticationFailed);

    // 5. Garbage.
    assert_eq!(only_error(&raw(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await), ErrorCode::Protocol);

    // 6. An oversized length field: refused from the header alone.
    let mut oversized = vec![FrameKind::Hello.to_byte()];
    oversized.extend_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(only_error(&raw(addr, &oversized).await), ErrorCode::Protocol);

    // 7. A truncated handshake: half a HELLO, then the client hangs up, or
    // stays silent until the handshake deadline.
    let half = &Hello::new(AuthMethod::HmacSha256, live_id, 0, Nonce::random()).encode()[..40];
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(half).await.unwrap();
    drop(conn);
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(half).await.unwrap();
    let frames = within(10, "handshake deadline", frames_until_close(&mut conn)).await;
    assert!(frames.is_empty(), "{frames:?}");

    // The server keeps serving: a new client gets a session.
    let fresh = BackedPipe::connect(TcpDialer::new(addr.to_string()), client_options());
    within(10, "fresh client", fresh.connected()).await.expect("served");
    let mut fresh_session = within(10, "accept", listener.accept()).await.unwrap();
    let mut fresh = fresh;
    fresh.write_all(b"still here").await.unwrap();
    let mut got = [0u8; 10];
    within(10, "fresh read", fresh_session.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"still here");

    // The live session lost nothing, and its connection was never replaced.
    let halves = within(120, "live stream", live).await.unwrap().expect("live stream intact");
    assert_eq!(client_control.stats().reconnects, 0, "the live connection was never disturbed");
    assert_eq!(server_control.stats().reconnects, 0);
    let stats = listener.stats();
    assert_eq!(stats.refused_unknown_session, 1, "{stats:?}");
    assert!(stats.refused_bad_hello >= 4, "{stats:?}");
    assert_eq!(stats.failed_new_handshakes, 1, "{stats:?}");
    assert_eq!(stats.sessions_created, 2, "{stats:?}");
    assert!(server_control.stats().failed_attempts >= 2, "the bogus resumes reached the session and failed there");
    drop(halves);
}
