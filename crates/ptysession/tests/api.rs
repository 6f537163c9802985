//! The public types can cross threads, and the futures a server runs are
//! `Send`.

use ptysession::framing::{ClientFrame, ClientReader, ClientWriter, ServeOutcome, ServerFrame};
use ptysession::{
    Attachment, ClientId, CloseReason, DetachReason, Error, Event, Events, ExitStatus, Input, Options, ResizePolicy,
    Session, SessionInfo, SessionManager, State, Stats, WindowSize,
};

fn send_sync<T: Send + Sync>() {}
fn send<T: Send>(_: &T) {}

#[test]
fn public_types_are_send_and_sync() {
    send_sync::<Session>();
    send_sync::<SessionManager>();
    send_sync::<SessionInfo>();
    send_sync::<Attachment>();
    send_sync::<Events>();
    send_sync::<Input>();
    send_sync::<ClientId>();
    send_sync::<Event>();
    send_sync::<ExitStatus>();
    send_sync::<DetachReason>();
    send_sync::<CloseReason>();
    send_sync::<State>();
    send_sync::<Stats>();
    send_sync::<Options>();
    send_sync::<ResizePolicy>();
    send_sync::<WindowSize>();
    send_sync::<Error>();
    send_sync::<ServerFrame>();
    send_sync::<ClientFrame>();
    send_sync::<ServeOutcome>();
    send_sync::<ClientReader<tokio::net::unix::OwnedReadHalf>>();
    send_sync::<ClientWriter<tokio::net::unix::OwnedWriteHalf>>();
}

#[tokio::test]
async fn server_futures_are_send() {
    let session = Session::spawn(std::process::Command::new("true"), Options::new()).unwrap();
    let mut attachment = session.attach(None).unwrap();
    send(&attachment.next());
    send(&attachment.write("x"));
    let (server_side, _client_side) = tokio::io::duplex(64);
    send(&ptysession::framing::serve_client(attachment, server_side));
    send(&session.close());
    send(&session.wait());
    let manager = SessionManager::new(1);
    send(&manager.close("none"));
    tokio::time::timeout(std::time::Duration::from_secs(60), session.close()).await.unwrap();
}
