//! The library part in-process: the server over an in-memory connection
//! (new and attach, input and output through ptysession's framing, the exit
//! status, the session gone afterwards), and the thread-safety of the
//! public types.

use std::time::Duration;

use ptysession::ExitStatus;
use ptysession::framing::{self, ServerFrame};
use rpty::protocol::{self, ClientHello, ErrorKind, NewSession, Request, Response, Size};
use rpty::{DetachKey, RuntimeDir, Server, ServerOptions};

const TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn public_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Server>();
    assert_send_sync::<ServerOptions>();
    assert_send_sync::<DetachKey>();
    assert_send_sync::<RuntimeDir>();
    assert_send_sync::<ClientHello>();
    assert_send_sync::<Response>();
    assert_send_sync::<protocol::Error>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_on_new_carries_the_terminal_and_the_exit_status() {
    let server = Server::new(ServerOptions::default());
    let (mut client, connection) = tokio::io::duplex(64 * 1024);
    let served = tokio::spawn(server.clone().serve_connection(connection));

    let mut new = NewSession::new(vec!["sh".into(), "-c".into(), "read line; echo got-$line; exit 4".into()]);
    new.name = Some("inproc".into());
    new.size = Some(Size { rows: 30, cols: 100 });
    new.attach = true;
    protocol::write_message(&mut client, &ClientHello::new(Request::New(new))).await.unwrap();
    let response: Response = tokio::time::timeout(TIMEOUT, protocol::read_message(&mut client)).await.unwrap().unwrap();
    assert!(matches!(&response, Response::Attached { name, .. } if name == "inproc"), "{response:?}");

    let (mut frames, mut writer) = framing::client(client);
    writer.input(b"it\r").await.unwrap();
    let mut output = Vec::new();
    let status = tokio::time::timeout(TIMEOUT, async {
        loop {
            match frames.next().await.unwrap() {
                Some(ServerFrame::Replay(data) | ServerFrame::Output(data)) => output.extend_from_slice(&data),
                Some(ServerFrame::Exited(status)) => break status,
                Some(_) => {}
                None => panic!("the server hung up; output: {}", String::from_utf8_lossy(&output)),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(status, ExitStatus::Code(4));
    assert!(String::from_utf8_lossy(&output).contains("got-it"), "{}", String::from_utf8_lossy(&output));
    // The server ends its stream after the status and is done once the
    // client is; the session is gone.
    assert!(tokio::time::timeout(TIMEOUT, frames.next()).await.unwrap().unwrap().is_none());
    drop((frames, writer));
    tokio::time::timeout(Duration::from_secs(1), served).await.unwrap().unwrap();
    tokio::time::timeout(TIMEOUT, async {
        while server.session_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(server.connection_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_another_version_is_told_so() {
    let server = Server::new(ServerOptions::default());
    let (mut client, connection) = tokio::io::duplex(64 * 1024);
    tokio::spawn(server.serve_connection(connection));
    let mut hello = ClientHello::new(Request::List);
    hello.version = protocol::VERSION + 1;
    protocol::write_message(&mut client, &hello).await.unwrap();
    let response: Response = tokio::time::timeout(TIMEOUT, protocol::read_message(&mut client)).await.unwrap().unwrap();
    assert!(matches!(response, Response::Error { kind: ErrorKind::Version, .. }), "{response:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_request_is_dropped_without_harm() {
    let server = Server::new(ServerOptions::default());
    let (mut client, connection) = tokio::io::duplex(64 * 1024);
    let served = tokio::spawn(server.clone().serve_connection(connection));
    tokio::io::AsyncWriteExt::write_all(&mut client, b"\x00\x00\x00\x05hello").await.unwrap();
    tokio::time::timeout(TIMEOUT, served).await.unwrap().unwrap();
    assert_eq!(server.connection_count(), 0);
    assert_eq!(server.session_count(), 0);
}
