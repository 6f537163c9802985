//! A reliable byte stream over transports that break and come back.
//!
//! A [`BackedPipe`] is an `AsyncRead + AsyncWrite` stream between two
//! processes that survives its transport: when a TCP connection, a Unix
//! socket, a websocket or a child process's stdio breaks, the pipe gets a
//! new one, the two sides tell each other how many bytes they have read,
//! and each replays exactly the bytes the other is missing, once, before
//! any new byte. The application sees one unbroken stream: no byte lost,
//! repeated or reordered.
//!
//! - Both sides count bytes as `u64` sequence numbers. A side keeps what it
//!   wrote until the peer acknowledges it (a chunk handed over as
//!   [`bytes::Bytes`] is kept as it is, without a copy), and never
//!   drops an unacknowledged byte: when the send buffer (64 MiB by default)
//!   is full of them, writes wait. Memory follows the bytes in flight:
//!   while connected, and for a grace after a loss
//!   ([`Options::reconnect_grace`], 1 s), a write waits once
//!   [`Options::max_unsent_bytes`] are not yet handed to a connection; only
//!   a pipe that is really away fills its send buffer towards the cap.
//! - A peer that claims to have read more than was written is an
//!   [`Error::InvalidSequence`]; one that has read less than is still held
//!   is an [`Error::DataLoss`]. Both end the pipe, visibly; neither is ever
//!   retried.
//! - Keepalives detect a connection that silently stopped (a black hole);
//!   end of stream (`shutdown`) is distinct from a dropped connection.
//! - The handshake is versioned, carries a 128-bit session id, and with a
//!   shared [`Secret`] both sides prove knowledge of it (HMAC-SHA256 over
//!   fresh nonces) before anything is replayed. A session exists for both
//!   sides or for neither: the client counts on its session only once the
//!   server has confirmed it, so no cut, not even one inside the first
//!   handshake, loses it. The wire format is specified in [`spec`].
//!
//! One side is *active*: it dials through a [`Reconnector`] (which only
//! opens transports; [`dial`] has ready-made ones for TCP, Unix sockets and
//! a child process's stdio) with exponential [`Backoff`] and jitter. The
//! other is *passive*: it is handed connections ([`BackedPipe::resume`]). A
//! server that hosts many sessions uses a [`Listener`]: it accepts
//! connections on TCP, Unix sockets or any [`server::Accept`] source, starts
//! a session for each new client (handed out by [`Listener::accept`]),
//! routes each resuming client to its session, checks peer uids on Unix
//! sockets, and bounds and expires sessions. A client whose session the
//! server no longer holds fails with an error for which
//! [`Error::is_session_gone`] is true.
//!
//! # Example
//!
#![cfg_attr(
    feature = "tokio",
    doc = r##"
Two pipes over Unix socket pairs; every dial makes a new pair and hands
one end to the passive side. A forced reconnect in the middle changes
nothing for the application.

```
use backedpipe::{BackedPipe, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

# #[tokio::main(flavor = "current_thread")]
# async fn main() -> Result<(), Box<dyn std::error::Error>> {
let mut server = BackedPipe::passive(Options::new());
let accept = server.control();
let dial = move || {
    let accept = accept.clone();
    async move {
        let (ours, theirs) = UnixStream::pair()?;
        accept.resume(theirs)?;
        Ok(ours)
    }
};
let mut client = BackedPipe::connect(dial, Options::new());

client.write_all(b"hello").await?; // taken before any connection exists
client.connected().await?;
client.force_reconnect().await?; // a new connection; nothing is lost
client.write_all(b", world").await?;
client.shutdown().await?; // end of stream, acknowledged by the peer

let mut text = String::new();
server.read_to_string(&mut text).await?;
assert_eq!(text, "hello, world");
assert_eq!(client.stats().reconnects, 1);
# Ok(())
# }
```
"##
)]
#![cfg_attr(
    not(feature = "tokio"),
    doc = "Without the `tokio` feature, see the example in [`core`]: two cores driven by hand."
)]
//!
//! # Layers
//!
//! - [`core`]: the sans-IO protocol state machine. It never touches a
//!   socket, an async runtime or the clock; time is an input. Its module
//!   documentation states the polling order and the time contract. Use it
//!   directly to run the protocol over anything.
//! - [`BackedPipe`]: the tokio shell around it, over any [`Transport`].
//!   One driver task per pipe; the application's reads and writes do the
//!   current connection's I/O inline, so a payload byte is copied once
//!   into the send buffer and otherwise moves straight between the
//!   transport and the caller's buffer. Reading and writing run at once:
//!   the transport says how it splits into a read half and a write half
//!   (sockets and a child's stdio into independent halves; any other
//!   stream, through [`Joined`], into halves that share one lock per
//!   call, as with `tokio::io::split`). The pipe carries no transport
//!   type.
//! - [`proto`]: the wire format's encoders and decoders.
//! - [`server`] and [`dial`]: the many-session server and the ready-made
//!   dialers, built on the public API of the layers above.
//!
//! # Features
//!
//! - `tokio` (default): the tokio shell: [`BackedPipe`] and its halves,
//!   [`PipeControl`], [`read_hello`], [`Transport`] and [`Joined`],
//!   [`Reconnector`], the [`server`] ([`Listener`]) and the [`dial`]
//!   modules. Without it the crate is the sans-IO [`core`], the wire
//!   format ([`proto`]), the configuration ([`Options`], [`Secret`],
//!   [`Backoff`]) and [`Error`], and depends on no async runtime.
//! - `child-stdio`: `dial::ChildDialer`, a child process's stdin/stdout
//!   as the transport (through `transport-stream`, whose `Stream` is then
//!   a [`Transport`] with independent halves). Implies `tokio`.
//!
//! # Caveats
//!
//! - Read the pipe while writing a lot: acknowledgements travel with the
//!   peer's data, and a side that stops reading for long stops seeing them,
//!   so its own writes eventually wait for buffer space.
//! - Without a secret, anyone who can reach the passive side and learn a
//!   session id can take the session over; without TLS underneath, the
//!   bytes travel in the clear, and after the handshake they are not
//!   authenticated either: an active attacker on the path can change them.
//!   Authentication never encrypts. [`spec`] §11 lists what the
//!   protocol does not protect against.

#![cfg_attr(docsrs, feature(doc_cfg))]
// Without the shell, the documentation's links to it (the pipe, the
// server, the dialers) have nothing to point at and show as plain text.
// Every other link is checked by the build with the shell.
#![cfg_attr(not(feature = "tokio"), allow(rustdoc::broken_intra_doc_links))]

#[cfg(all(feature = "tokio", not(target_os = "linux")))]
compile_error!(
    "backedpipe's `tokio` feature (the pipe, server and dialers) supports Linux only; \
     with `default-features = false` the sans-IO core builds anywhere"
);

mod backoff;
pub mod core;
#[cfg(all(feature = "tokio", target_os = "linux"))]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod dial;
mod error;
mod options;
#[cfg(all(feature = "tokio", target_os = "linux"))]
mod pipe;
pub mod proto;
#[cfg(all(feature = "tokio", target_os = "linux"))]
mod reconnect;
mod recv_buffer;
mod send_queue;
#[cfg(all(feature = "tokio", target_os = "linux"))]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod server;
#[cfg(all(feature = "tokio", target_os = "linux"))]
mod transport;

/// The wire protocol's specification, `docs/protocol.md` in the package.
///
/// An empty module that carries the document, so that it is part of the
/// crate's documentation.
#[doc = include_str!("../docs/protocol.md")]
pub mod spec {}

pub use crate::backoff::Backoff;
pub use crate::core::Generation;
pub use crate::error::Error;
pub use crate::options::{Options, Secret};
#[cfg(all(feature = "tokio", target_os = "linux"))]
pub use crate::pipe::{
    BackedPipe, OwnedReadHalf, OwnedWriteHalf, PipeControl, PipeState, ReadHalf, Stats, Status, WriteHalf, read_hello,
};
#[cfg(all(feature = "tokio", target_os = "linux"))]
pub use crate::reconnect::Reconnector;
#[cfg(all(feature = "tokio", target_os = "linux"))]
pub use crate::server::{Listener, ServerOptions};
#[cfg(all(feature = "tokio", target_os = "linux"))]
pub use crate::transport::{Halves, Joined, Transport};

#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod fuzzing;

/// The README's examples, compiled and run as doctests.
#[cfg(all(doctest, feature = "tokio"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
