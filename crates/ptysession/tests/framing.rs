//! Serving a client over a connection with the framing: replay, live
//! output, input, resize, exit; a client leaving or breaking the framing; a
//! connection too slow to keep up is detached as lagged without slowing the
//! session; a frame sink that takes each batch as it is.

mod support;

use std::time::{Duration, Instant};

use ptysession::framing::{self, ClientReader, ServeOutcome, ServerFrame};
use ptysession::{DetachReason, Error, Event, ExitStatus, Session, WindowSize};
use support::{WAIT, close, contains, read_until, sh};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

/// Reads frames until `needle` is in the output; returns what was read.
async fn frames_until(frames: &mut ClientReader<impl tokio::io::AsyncRead + Unpin>, needle: &[u8]) -> Vec<ServerFrame> {
    let mut output = Vec::new();
    let mut seen = Vec::new();
    while !contains(&output, needle) {
        let frame = tokio::time::timeout(WAIT, frames.next()).await.unwrap().unwrap().expect("a frame");
        if let ServerFrame::Replay(data) | ServerFrame::Output(data) = &frame {
            output.extend_from_slice(data);
        }
        seen.push(frame);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_client_gets_replay_output_and_exit_and_drives_input_and_size() {
    let script = "printf 'hello\\n'; read line; echo \"got $line\"; exit 6";
    let session = Session::spawn(sh(script), support::options()).unwrap();
    // Let the greeting reach the scrollback first.
    let mut observer = session.attach(None).unwrap();
    let mut seen = observer.replay().to_vec();
    read_until(&mut observer, &mut seen, b"hello").await;

    let (server_side, client_side) = UnixStream::pair().unwrap();
    let served = tokio::spawn(framing::serve_client(session.attach(None).unwrap(), server_side));
    let (mut frames, mut writer) = framing::client(client_side);
    let first = frames_until(&mut frames, b"hello\r\n").await;
    assert!(matches!(first[0], ServerFrame::Replay(_)), "{first:?}");
    assert_eq!(tokio::time::timeout(WAIT, frames.next()).await.unwrap().unwrap(), Some(ServerFrame::ReplayEnd));

    writer.resize(WindowSize::new(33, 99)).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while session.size() != WindowSize::new(33, 99) {
        assert!(Instant::now() < deadline, "the resize frame was not applied");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.input(b"there\n").await.unwrap();
    frames_until(&mut frames, b"got there\r\n").await;
    let last = loop {
        match tokio::time::timeout(WAIT, frames.next()).await.unwrap().unwrap() {
            Some(ServerFrame::Output(_)) => {}
            last => break last,
        }
    };
    assert_eq!(last, Some(ServerFrame::Exited(ExitStatus::Code(6))));
    assert_eq!(
        tokio::time::timeout(WAIT, served).await.unwrap().unwrap().unwrap(),
        ServeOutcome::Exited(ExitStatus::Code(6))
    );
    close(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_is_detached_and_the_session_runs_on() {
    let session = Session::spawn(sh("exec cat"), support::options()).unwrap();
    let (server_side, client_side) = UnixStream::pair().unwrap();
    let served = tokio::spawn(framing::serve_client(session.attach(None).unwrap(), server_side));
    let (mut frames, _writer) = framing::client(client_side);
    assert_eq!(tokio::time::timeout(WAIT, frames.next()).await.unwrap().unwrap(), Some(ServerFrame::ReplayEnd));
    assert_eq!(session.clients(), 1);
    drop((frames, _writer));
    let outcome = tokio::time::timeout(WAIT, served).await.unwrap().unwrap().unwrap();
    assert_eq!(outcome, ServeOutcome::ClientDisconnected);
    assert_eq!(session.clients(), 0);
    assert_eq!(session.state(), ptysession::State::Ready);
    close(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_breaking_the_framing_is_refused() {
    let session = Session::spawn(sh("exec cat"), support::options()).unwrap();
    let (server_side, mut client_side) = UnixStream::pair().unwrap();
    let served = tokio::spawn(framing::serve_client(session.attach(None).unwrap(), server_side));
    client_side.write_all(b"\x11\x7f\xff\xff\xff").await.unwrap();
    let outcome = tokio::time::timeout(WAIT, served).await.unwrap().unwrap();
    assert!(matches!(outcome, Err(Error::Frame { .. })), "{outcome:?}");
    assert_eq!(session.clients(), 0);
    close(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_is_not_read_lags_without_slowing_anyone() {
    const TOTAL: usize = 40_000_000;
    const QUEUE: usize = 16 << 20;
    let script = format!("stty -opost -echo; printf R; read go; head -c {TOTAL} /dev/zero; printf E; exec sleep 1000");
    let session = Session::spawn(sh(&script), support::options().client_queue_bytes(QUEUE)).unwrap();
    let mut direct = session.attach(None).unwrap();
    let mut received = direct.replay().to_vec();
    read_until(&mut direct, &mut received, b"R").await;

    let (server_side, client_side) = UnixStream::pair().unwrap();
    let served = tokio::spawn(framing::serve_client(session.attach(None).unwrap(), server_side));
    direct.write("go\n").await.unwrap();
    // The direct client reads everything while the connection is not read.
    let mut count = received.len();
    while count < TOTAL + 2 {
        match tokio::time::timeout(WAIT, direct.next()).await.unwrap() {
            Some(Event::Output(data)) => count += data.len(),
            other => panic!("unexpected {other:?} after {count} bytes"),
        }
    }
    let deadline = Instant::now() + WAIT;
    while session.stats().clients_lagged == 0 {
        assert!(Instant::now() < deadline, "the unread connection was never detached");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Reading it now gives what was in flight, then the reason.
    let (mut frames, _writer) = framing::client(client_side);
    let last = loop {
        match tokio::time::timeout(WAIT, frames.next()).await.unwrap().unwrap() {
            Some(ServerFrame::Output(_) | ServerFrame::Replay(_) | ServerFrame::ReplayEnd) => {}
            last => break last,
        }
    };
    assert_eq!(last, Some(ServerFrame::Detached(DetachReason::Lagged { queue_bytes: QUEUE })));
    let outcome = tokio::time::timeout(WAIT, served).await.unwrap().unwrap().unwrap();
    assert_eq!(outcome, ServeOutcome::Detached(DetachReason::Lagged { queue_bytes: QUEUE }));
    close(&session).await;
}

/// A sink that keeps every batch it is given.
struct Batches(std::sync::Arc<std::sync::Mutex<Vec<bytes::Bytes>>>);

impl framing::FrameSink for Batches {
    async fn send(&mut self, frames: bytes::Bytes) -> std::io::Result<()> {
        self.0.lock().unwrap().push(frames);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_sink_gets_whole_frames_in_batches() {
    let session = Session::spawn(sh("printf 'hi\\n'; exit 3"), support::options()).unwrap();
    let batches = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    // The client sends nothing and keeps its side open.
    let (server_side, _client_side) = UnixStream::pair().unwrap();
    let (reader, _writer) = server_side.into_split();
    let outcome = tokio::time::timeout(
        WAIT,
        framing::serve_client_with(
            session.attach(None).unwrap(),
            reader,
            Batches(batches.clone()),
            framing::ServeOptions::new(),
            std::future::pending(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(outcome, ServeOutcome::Exited(ExitStatus::Code(3)));
    // Each batch holds whole frames: decoded one batch at a time, none is
    // left over.
    let mut frames = Vec::new();
    for batch in batches.lock().unwrap().iter() {
        let mut wire = bytes::BytesMut::from(&batch[..]);
        while let Some(frame) = ServerFrame::decode(&mut wire).unwrap() {
            frames.push(frame);
        }
        assert!(wire.is_empty(), "a batch ended inside a frame");
    }
    // The greeting comes in the replay or as output, whichever it reached
    // first; every replay frame comes before ReplayEnd, output after it.
    let replay_end = frames.iter().position(|frame| *frame == ServerFrame::ReplayEnd).expect("ReplayEnd");
    let mut text = Vec::new();
    for (at, frame) in frames.iter().enumerate() {
        match frame {
            ServerFrame::Replay(data) => {
                assert!(at < replay_end, "{frames:?}");
                text.extend_from_slice(data);
            }
            ServerFrame::Output(data) => {
                assert!(at > replay_end, "{frames:?}");
                text.extend_from_slice(data);
            }
            _ => {}
        }
    }
    assert!(contains(&text, b"hi"), "{frames:?}");
    assert_eq!(frames.last(), Some(&ServerFrame::Exited(ExitStatus::Code(3))));
    close(&session).await;
}
