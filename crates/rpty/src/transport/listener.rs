//! The server side of the pipes: accepts raw connections on Unix and TCP
//! listeners, reads each one's HELLO, and either starts a new passive pipe
//! (handed out by [`Listener::accept`]) or hands the connection to the pipe
//! of the session it resumes.
//!
//! This is a minimal router written on backedpipe's public API
//! ([`backedpipe::read_hello`], [`backedpipe::BackedPipe::passive`],
//! [`backedpipe::PipeControl::resume_with_hello`]); it is kept apart so
//! that a listener provided by backedpipe itself can replace it. What it
//! checks: the peer's uid on the Unix socket; on TCP, that the client
//! authenticates (the pipe's handshake then verifies the secret); that a
//! resuming connection names a live pipe of the same listener kind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use backedpipe::proto::{AuthMethod, ErrorCode, FrameHeader, FrameKind, MAX_REASON_LEN, SessionId};
use backedpipe::{BackedPipe, PipeControl, PipeState, Secret};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Conn, pipe_config};

/// How long a new connection has to send its HELLO.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The most pipes (connected or waiting for their client) at once.
const MAX_PIPES: usize = 512;

/// Which listener a connection came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The local Unix socket (peer uid checked).
    Unix,
    /// TCP (secret required).
    Tcp,
}

#[derive(Debug)]
struct Route {
    origin: Origin,
    control: PipeControl<Conn>,
}

#[derive(Debug)]
struct Router {
    routes: Mutex<HashMap<SessionId, Route>>,
    accepted: mpsc::Sender<BackedPipe<Conn>>,
}

/// Accepts connections from any number of listeners and hands out one
/// passive pipe per new client; resuming clients go to their pipe.
#[derive(Debug)]
pub(crate) struct Listener {
    router: Arc<Router>,
    accepted: mpsc::Receiver<BackedPipe<Conn>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Listener {
    /// A listener with no sockets yet.
    pub(crate) fn new() -> Listener {
        let (tx, rx) = mpsc::channel(16);
        Listener {
            router: Arc::new(Router { routes: Mutex::new(HashMap::new()), accepted: tx }),
            accepted: rx,
            tasks: Vec::new(),
        }
    }

    /// Accepts connections on a Unix socket, from processes of this user
    /// only.
    pub(crate) fn listen_unix(&mut self, listener: UnixListener) {
        let router = self.router.clone();
        let uid = rustix::process::geteuid().as_raw();
        self.tasks.push(tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        tracing::warn!(error = %err, "accepting on the Unix socket failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                match stream.peer_cred() {
                    Ok(cred) if cred.uid() == uid => {}
                    Ok(cred) => {
                        tracing::warn!(peer_uid = cred.uid(), "refused a connection from another user");
                        continue;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "refused a connection whose user is unknown");
                        continue;
                    }
                }
                tokio::spawn(router.clone().route(Box::new(stream), Origin::Unix, None));
            }
        }));
    }

    /// Accepts connections on TCP; every client must prove it knows
    /// `secret`.
    pub(crate) fn listen_tcp(&mut self, listener: TcpListener, secret: Secret) {
        let router = self.router.clone();
        self.tasks.push(tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!(error = %err, "accepting on TCP failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                tracing::debug!(%peer, "TCP connection");
                let _ = stream.set_nodelay(true);
                tokio::spawn(router.clone().route(Box::new(stream), Origin::Tcp, Some(secret.clone())));
            }
        }));
    }

    /// The next new client's pipe (already through its first handshake, or
    /// about to be), or `None` once the listener is shut.
    ///
    /// Cancel safe.
    pub(crate) async fn accept(&mut self) -> Option<BackedPipe<Conn>> {
        self.accepted.recv().await
    }

    /// Drops every pipe's current connection; the clients resume on new
    /// ones (for trying out resumption).
    pub(crate) fn cut_all(&self) {
        let controls: Vec<PipeControl<Conn>> =
            lock(&self.router.routes).values().map(|route| route.control.clone()).collect();
        tracing::info!(pipes = controls.len(), "cutting every client connection");
        for control in controls {
            tokio::spawn(async move {
                let _ = control.force_reconnect().await;
            });
        }
    }

    /// Stops accepting; the pipes already handed out keep working.
    pub(crate) fn shut(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.accepted.close();
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shut();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Router {
    /// Reads the HELLO of a new connection and routes it.
    async fn route(self: Arc<Self>, mut conn: Conn, origin: Origin, secret: Option<Secret>) {
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, backedpipe::read_hello(&mut conn)).await {
            Ok(Ok(hello)) => hello,
            Ok(Err(err)) => {
                tracing::info!(?origin, error = %err, "dropped a connection that did not open with a HELLO");
                return;
            }
            Err(_) => {
                tracing::info!(?origin, "dropped a connection that sent no HELLO in time");
                return;
            }
        };
        if origin == Origin::Tcp && hello.auth() == AuthMethod::None {
            tracing::info!("refused a TCP client without a secret");
            return refuse(conn, ErrorCode::AuthenticationFailed, "this server requires a secret").await;
        }
        let id = hello.session_id();
        if !id.is_new() {
            let control = lock(&self.routes)
                .get(&id)
                .filter(|route| route.origin == origin && route.control.status().state != PipeState::Closed)
                .map(|route| route.control.clone());
            let Some(control) = control else {
                tracing::info!(?origin, "refused to resume an unknown connection");
                return refuse(conn, ErrorCode::SessionUnknown, "unknown session").await;
            };
            match control.resume_with_hello(conn, hello) {
                Ok(generation) => tracing::debug!(?origin, %generation, "client resuming"),
                Err(err) => tracing::info!(?origin, error = %err, "a resume came too late"),
            }
            return;
        }
        if lock(&self.routes).len() >= MAX_PIPES {
            tracing::warn!(limit = MAX_PIPES, "refused a client: too many connections");
            return refuse(conn, ErrorCode::Other(1000), "too many connections").await;
        }
        let pipe = BackedPipe::passive(pipe_config(secret, None));
        let id = pipe.session_id();
        let control = pipe.control();
        lock(&self.routes).insert(id, Route { origin, control: control.clone() });
        let router = Arc::downgrade(&self);
        tokio::spawn(async move {
            let mut status = control.watch_status();
            let _ = status.wait_for(|status| status.state == PipeState::Closed).await;
            if let Some(router) = router.upgrade() {
                lock(&router.routes).remove(&id);
            }
        });
        if let Err(err) = pipe.resume_with_hello(conn, hello) {
            tracing::info!(?origin, error = %err, "a new client's handshake failed");
            pipe.close();
            return;
        }
        match tokio::time::timeout(HELLO_TIMEOUT, pipe.connected()).await {
            Ok(Ok(_)) => {
                tracing::debug!(?origin, "new client");
                if self.accepted.send(pipe).await.is_err() {
                    tracing::debug!("a new client arrived while shutting down");
                }
            }
            Ok(Err(err)) => {
                tracing::info!(?origin, error = %err, "a new client's handshake failed");
                pipe.close();
            }
            Err(_) => {
                tracing::info!(?origin, "a new client did not finish its handshake in time");
                pipe.close();
            }
        }
    }
}

/// Tells the peer why its connection is refused (an ERROR frame), then
/// drops it.
async fn refuse(mut conn: Conn, code: ErrorCode, reason: &str) {
    let reason = &reason.as_bytes()[..reason.len().min(MAX_REASON_LEN)];
    let header = FrameHeader { kind: FrameKind::Error, len: (2 + reason.len()) as u32 };
    let mut frame = header.encode().to_vec();
    frame.extend_from_slice(&code.to_u16().to_be_bytes());
    frame.extend_from_slice(reason);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        conn.write_all(&frame).await?;
        conn.shutdown().await
    })
    .await;
}
