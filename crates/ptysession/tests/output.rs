//! Output delivery: every byte of a fast child reaches the client before its
//! exit status, every client gets the same bytes, a lagging client is
//! detached with a reason and can attach again. (The stalled-client test,
//! which measures memory, is in `resources.rs`.)

mod support;

use std::time::{Duration, Instant};

use ptysession::{DetachReason, Event, ExitStatus, Session};
use support::{TempDir, close, next_event, read_to_end, read_until, sh};

/// Random bytes from a seeded generator.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    std::iter::repeat_with(|| rng.u8(..)).take(len).collect()
}

/// A mismatch report that does not print megabytes.
fn assert_same_bytes(received: &[u8], expected: &[u8]) {
    if received != expected {
        let first_difference = received.iter().zip(expected).position(|(a, b)| a != b);
        panic!(
            "received {} bytes, expected {}; first difference at {first_difference:?}",
            received.len(),
            expected.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mebibytes_then_exit_code_three_all_arrive_in_order() {
    let dir = TempDir::new();
    let data = dir.path().join("data");
    std::fs::write(&data, random_bytes(1, 7_864_320)).unwrap();
    let expected = std::process::Command::new("base64").arg(&data).output().unwrap().stdout;
    assert!(expected.len() > 10 << 20);

    // Raw output (no \n → \r\n) and no echo; `R` says the settings are in
    // place, a line of input starts the flood, and the exit follows at once.
    let script = format!("stty -opost -echo; printf R; read go; base64 '{}'; exit 3", data.display());
    let session = Session::spawn(sh(&script), support::options()).unwrap();
    let mut client = session.attach(None).unwrap();
    let mut received = client.replay().to_vec();
    read_until(&mut client, &mut received, b"R").await;
    client.write("go\n").await.unwrap();
    let (rest, last) = read_to_end(&mut client).await;
    received.extend_from_slice(&rest);

    assert_same_bytes(&received[1..], &expected);
    assert_eq!(last, Some(Event::Exited(ExitStatus::Code(3))));
    assert_eq!(next_event(&mut client).await, None);
    assert_eq!(session.exit_status(), Some(ExitStatus::Code(3)));
    assert_eq!(session.stats().bytes_out, expected.len() as u64 + 1);
    close(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagged_client_attaches_again_and_gets_the_scrollback() {
    let script = "stty -opost -echo; printf R; read go; yes | head -c 300000; printf 'done\\n'; read again";
    let options = support::options().client_queue_bytes(4096).scrollback_bytes(1024);
    let session = Session::spawn(sh(script), options).unwrap();
    let mut client = session.attach(None).unwrap();
    let mut received = client.replay().to_vec();
    read_until(&mut client, &mut received, b"R").await;
    client.write("go\n").await.unwrap();
    // Do not read: wait until the output is over, then look.
    let deadline = Instant::now() + support::WAIT;
    while session.stats().bytes_out < 300_006 {
        assert!(Instant::now() < deadline, "the output did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, last) = read_to_end(&mut client).await;
    assert_eq!(last, Some(Event::Detached(DetachReason::Lagged { queue_bytes: 4096 })));
    assert_eq!(session.clients(), 0);
    assert!(matches!(client.resize(ptysession::WindowSize::new(10, 10)), Err(ptysession::Error::Detached)));

    let again = session.attach(None).unwrap();
    assert!(again.replay().ends_with(b"done\n"));
    assert_eq!(again.replay_seq() + again.replay().len() as u64, 300_006);
    assert_eq!(session.clients(), 1);
    close(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_gets_the_same_output() {
    let script = "stty -opost -echo; printf R; read go; seq 1 20000; exit 7";
    let session = Session::spawn(sh(script), support::options()).unwrap();
    let mut clients: Vec<_> = (0..4).map(|_| session.attach(None).unwrap()).collect();
    let mut first = clients[0].replay().to_vec();
    read_until(&mut clients[0], &mut first, b"R").await;
    clients[0].write("go\n").await.unwrap();
    let expected: String = (1..=20000).map(|n| format!("{n}\n")).collect();
    for (index, client) in clients.iter_mut().enumerate() {
        let mut received = if index == 0 { std::mem::take(&mut first) } else { client.replay().to_vec() };
        let (rest, last) = read_to_end(client).await;
        received.extend_from_slice(&rest);
        assert_same_bytes(&received, format!("R{expected}").as_bytes());
        assert_eq!(last, Some(Event::Exited(ExitStatus::Code(7))));
    }
    close(&session).await;
}
