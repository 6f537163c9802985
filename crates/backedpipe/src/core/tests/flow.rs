//! Unit tests of the core's flow, with the helpers of the core's tests
//! and a link that moves a socket buffer's worth per round: a resume
//! whose replay the server must partly skip (bytes of the abandoned
//! connection arrived after WELCOME), and the write-ahead bound around a
//! loss.

use std::time::{Duration, Instant};

use super::*;

/// Takes up to `limit` bytes `core` wants to send on `generation`, as a
/// socket buffer of that size would.
fn take(now: Instant, core: &mut Core, generation: Generation, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(transmit) = core.poll_transmit(generation) else { break };
        let bytes: Vec<u8> = transmit.parts().concat();
        if bytes.is_empty() {
            break;
        }
        let count = bytes.len().min(limit - out.len());
        core.transmitted(now, generation, count);
        out.extend_from_slice(&bytes[..count]);
    }
    out
}

/// Moves bytes both ways, at most a socket buffer's worth (64 KiB) per
/// direction and round, until nothing moves; the bytes moved.
fn settle_in_rounds(now: Instant, client: &mut Core, cg: Generation, server: &mut Core, sg: Generation) -> usize {
    const SOCKET_BYTES: usize = 64 << 10;
    let mut total = 0;
    for _ in 0..10_000 {
        let to_server = take(now, client, cg, SOCKET_BYTES);
        server.handle_read(now, sg, &to_server);
        let to_client = take(now, server, sg, SOCKET_BYTES);
        client.handle_read(now, cg, &to_client);
        if to_server.is_empty() && to_client.is_empty() {
            break;
        }
        total += to_server.len() + to_client.len();
    }
    total
}

/// The client abandons a connection the server still uses; the bytes it
/// sent there reach the server after WELCOME and before PROOF, so the
/// server skips that much of the replay. The replay and the bytes after
/// it must still flow at once: no timeout passes in this test.
#[test]
fn a_resume_that_skips_late_bytes_of_the_old_connection_keeps_flowing() {
    let options = options().max_payload_bytes(16 << 10).ack_interval_bytes(1 << 30);
    let now = Instant::now();
    let mut client = Core::active(options.clone());
    let mut server = Core::passive(options, SessionId::from_bytes([9; 16]));
    let cg1 = client.connect(now, nonce(1)).unwrap();
    let sg1 = server.accept(now, nonce(2)).unwrap();
    settle_in_rounds(now, &mut client, cg1, &mut server, sg1);
    assert_eq!(client.state(), ConnectionState::Connected);

    let data: Vec<u8> = (0..600_000u64).map(|seq| pattern(true, seq)).collect();
    let mut written = client.write(&data).unwrap();
    // Sent on the old connection, held on the way.
    let late = take(now, &mut client, cg1, usize::MAX);
    assert!(late.len() > 200_000);

    // The client gives up on it (a forced reconnect): HELLO, WELCOME.
    let cg2 = client.connect(now, nonce(3)).unwrap();
    let sg2 = server.accept(now, nonce(4)).unwrap();
    let hello = take(now, &mut client, cg2, usize::MAX);
    server.handle_read(now, sg2, &hello);
    let welcome = take(now, &mut server, sg2, usize::MAX);
    client.handle_read(now, cg2, &welcome);
    assert_eq!(client.state(), ConnectionState::Connected);
    written += client.write(&data[written..]).unwrap();
    // PROOF and the start of the replay, as far as the socket takes them.
    let proof_and_replay = take(now, &mut client, cg2, 50_000);

    // The old connection's bytes arrive first, then PROOF: the server
    // now has to skip what it got twice.
    server.handle_read(now, sg1, &late);
    server.handle_read(now, sg2, &proof_and_replay);
    assert_eq!(server.current_generation(), Some(sg2));

    let mut received = read_all(&mut server);
    for _ in 0..100 {
        if written < data.len() {
            written += client.write(&data[written..]).unwrap();
        }
        settle_in_rounds(now, &mut client, cg2, &mut server, sg2);
        received.extend(read_all(&mut server));
        if received.len() == data.len() {
            break;
        }
    }
    assert_eq!(received.len(), data.len(), "the resumed stream stalled");
    assert!(received == data, "the resumed stream is not the written one");
    assert_eq!(client.state(), ConnectionState::Connected);
    assert_eq!(server.state(), ConnectionState::Connected);
}

/// Connects `client` and `server` on new connections; their generations.
fn handshake(now: Instant, client: &mut Core, server: &mut Core, byte: u8) -> (Generation, Generation) {
    let cg = client.connect(now, nonce(byte)).unwrap();
    let sg = server.accept(now, nonce(byte + 1)).unwrap();
    for _ in 0..10 {
        let to_server = take(now, client, cg, usize::MAX);
        server.handle_read(now, sg, &to_server);
        let to_client = take(now, server, sg, usize::MAX);
        client.handle_read(now, cg, &to_client);
        if client.state() == ConnectionState::Connected && server.state() == ConnectionState::Connected {
            break;
        }
    }
    (cg, sg)
}

/// Right after a loss the write-ahead bound still holds (beyond what the
/// lost connection had taken); after the grace the send buffer fills; a
/// new connection brings the bound back.
#[test]
fn the_write_ahead_bound_outlives_a_brief_loss_only() {
    let unsent = 64 << 10;
    let grace = Duration::from_millis(500);
    let options = options().max_unsent_bytes(unsent).reconnect_grace(grace).send_buffer_bytes(1 << 20);
    let now = Instant::now();
    let mut client = Core::active(options.clone());
    let mut server = Core::passive(options, SessionId::from_bytes([9; 16]));
    // Before any connection the buffer takes what it can hold.
    assert_eq!(client.write_capacity(), 1 << 20);
    let (cg, _) = handshake(now, &mut client, &mut server, 1);
    assert_eq!(client.write_capacity(), unsent);
    client.write(&vec![7; 10_000]).unwrap();
    let sent = take(now, &mut client, cg, 4000);
    assert_eq!(client.write_capacity(), unsent - (10_000 - (sent.len() - HEADER_LEN)));

    // A brief loss: still bounded, from what the lost connection took.
    client.connection_lost(now, cg);
    assert_eq!(client.state(), ConnectionState::Disconnected);
    assert_eq!(client.write_capacity(), unsent - (10_000 - (sent.len() - HEADER_LEN)));
    let deadline = client.poll_timeout().expect("the grace ends");
    assert_eq!(deadline, now + grace);
    client.handle_timeout(now + grace / 2);
    assert!(client.write_capacity() < unsent);

    // Really away: the buffer fills towards its cap, and the writer hears.
    let later = now + grace;
    std::iter::from_fn(|| client.poll_event()).for_each(drop);
    client.handle_timeout(later);
    assert!(std::iter::from_fn(|| client.poll_event()).any(|event| matches!(event, Event::Writable)));
    assert_eq!(client.write_capacity(), (1 << 20) - 10_000);

    // Connected again: the bound is back.
    server.connection_lost(later, server.current_generation().unwrap());
    handshake(later, &mut client, &mut server, 3);
    assert_eq!(client.state(), ConnectionState::Connected);
    // (The handshake above also carried the replay: nothing is unsent.)
    assert_eq!(client.write_capacity(), unsent);
}
