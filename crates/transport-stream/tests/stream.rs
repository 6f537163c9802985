//! Reading and writing through a child: bulk round trips, shutdown, stderr
//! forwarding and capture, failure reports, and a missing program.

mod util;

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use transport_stream::{Error, Handle, Options, OwnedReadHalf, OwnedWriteHalf, ReuniteError, Stream};
use util::{data, sh, within};

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_64_mib_through_cat_on_separate_tasks() {
    let sent = Arc::new(data(7, 64 << 20));
    let stream = Stream::spawn(std::process::Command::new("cat"), Options::new()).unwrap();
    let handle = stream.handle();
    let (mut reader, mut writer) = stream.into_split();
    let to_send = sent.clone();
    let writing = tokio::spawn(async move {
        // Uneven write sizes, so that chunk edges fall everywhere.
        let mut offset = 0;
        let mut size = 1;
        while offset < to_send.len() {
            let end = (offset + size).min(to_send.len());
            writer.write_all(&to_send[offset..end]).await.unwrap();
            offset = end;
            size = size * 7 % 100_003 + 1;
        }
        writer.shutdown().await.unwrap();
    });
    let reading = tokio::spawn(async move {
        let mut received = Vec::with_capacity(64 << 20);
        reader.read_to_end(&mut received).await.unwrap();
        received
    });
    within(LIMIT, "writing", writing).await.unwrap();
    let received = within(LIMIT, "reading", reading).await.unwrap();
    assert_eq!(received.len(), sent.len());
    assert!(received == *sent, "the bytes that came back differ");
    let status = within(LIMIT, "close", handle.close()).await.unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn shutdown_closes_the_childs_stdin() {
    let mut stream = Stream::spawn(sh("wc -c"), Options::new()).unwrap();
    stream.write_all(b"12345").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut output = String::new();
    within(LIMIT, "wc's answer", stream.read_to_string(&mut output)).await.unwrap();
    assert_eq!(output.trim(), "5");
    let error = stream.write_all(b"more").await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    assert!(within(LIMIT, "close", stream.close()).await.unwrap().success());
}

/// An `AsyncWrite` collecting into shared memory.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<u8>>>);

impl AsyncWrite for Collect {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.0.lock().unwrap().extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn stderr_is_forwarded_in_full_and_its_tail_captured() {
    let expected: String = (1..=100_000).map(|n| format!("{n}\n")).collect();
    let sink = Collect::default();
    let options = Options::new().forward_stderr(sink.clone()).capture_stderr(1000);
    let mut stream = Stream::spawn(sh("seq 1 100000 >&2; echo done"), options).unwrap();
    let mut stdout = String::new();
    within(LIMIT, "stdout", stream.read_to_string(&mut stdout)).await.unwrap();
    assert_eq!(stdout, "done\n");
    let handle = stream.handle();
    assert_eq!(within(LIMIT, "close", stream.close()).await.unwrap().code(), Some(0));
    let forwarded = sink.0.lock().unwrap().clone();
    assert_eq!(forwarded.len(), expected.len());
    assert!(forwarded == expected.as_bytes(), "forwarded stderr differs");
    assert_eq!(handle.stderr(), expected.as_bytes()[expected.len() - 1000..]);
}

#[tokio::test]
async fn a_failing_child_is_reported_with_its_stderr() {
    let mut stream = Stream::spawn(sh("echo 'agent: unknown protocol version' >&2; exit 2"), Options::new()).unwrap();
    let mut buf = Vec::new();
    let error = within(LIMIT, "read", stream.read_to_end(&mut buf)).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    let inner = error.into_inner().expect("an error of ours").downcast::<Error>().expect("transport_stream::Error");
    match *inner {
        Error::Exited { ref program, status, ref stderr } => {
            assert_eq!(program, "sh");
            assert_eq!(status.code(), Some(2));
            assert!(stderr.contains("agent: unknown protocol version"), "{stderr:?}");
        }
        ref other => panic!("unexpected error {other:?}"),
    }
    assert!(inner.to_string().contains("unknown protocol version"), "{inner}");
    assert_eq!(within(LIMIT, "close", stream.close()).await.unwrap().code(), Some(2));
}

#[tokio::test]
async fn a_successful_child_ends_with_a_plain_end_of_file() {
    let mut stream = Stream::spawn(sh("echo bye; echo noise >&2"), Options::new()).unwrap();
    let mut output = String::new();
    within(LIMIT, "read", stream.read_to_string(&mut output)).await.unwrap();
    assert_eq!(output, "bye\n");
    let handle = stream.handle();
    within(LIMIT, "close", stream.close()).await.unwrap();
    assert_eq!(handle.stderr(), b"noise\n");
}

#[tokio::test]
async fn a_missing_program_is_a_spawn_error_naming_it() {
    let error = Stream::spawn(std::process::Command::new("/nonexistent/agent-binary"), Options::new()).unwrap_err();
    match &error {
        Error::Spawn { program, source } => {
            assert_eq!(program, "/nonexistent/agent-binary");
            assert_eq!(source.kind(), io::ErrorKind::NotFound);
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(error.to_string().contains("/nonexistent/agent-binary"), "{error}");
    // That no zombie is left behind is checked in tests/cycles.rs, where no
    // other test's children come and go meanwhile.
}

#[tokio::test]
async fn halves_reunite_with_their_own_stream_only() {
    let (reader, writer) = Stream::spawn(std::process::Command::new("cat"), Options::new()).unwrap().into_split();
    let (other_reader, other_writer) =
        Stream::spawn(std::process::Command::new("cat"), Options::new()).unwrap().into_split();

    // Halves of different streams come back unchanged, still working.
    let error = reader.reunite(other_writer).unwrap_err();
    assert_eq!(error.to_string(), "the halves do not come from the same stream");
    let ReuniteError(reader, other_writer) = error;
    let error = other_writer.reunite(reader).unwrap_err();
    let ReuniteError(reader, other_writer) = error;

    // Halves of one stream make that stream again: its pipes and its child.
    let mut stream = reader.reunite(writer).unwrap();
    stream.write_all(b"first").await.unwrap();
    let mut echoed = [0; 5];
    within(LIMIT, "first echo", stream.read_exact(&mut echoed)).await.unwrap();
    assert_eq!(&echoed, b"first");
    let mut other = other_writer.reunite(other_reader).unwrap();
    other.write_all(b"other").await.unwrap();
    within(LIMIT, "other echo", other.read_exact(&mut echoed)).await.unwrap();
    assert_eq!(&echoed, b"other");

    assert!(within(LIMIT, "close", stream.close()).await.unwrap().success());
    assert!(within(LIMIT, "close the other", other.close()).await.unwrap().success());
}

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Stream>();
    send_sync::<OwnedReadHalf>();
    send_sync::<OwnedWriteHalf>();
    send_sync::<Handle>();
    send_sync::<Error>();
    send_sync::<ReuniteError>();
    fn send<T: Send>() {}
    // Options may hold a stderr writer that is only `Send`.
    send::<Options>();
}
