//! Pipe options: buffer sizes, acknowledgement pacing, keepalive and
//! handshake timing, the reconnect policy, and the optional shared secret.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;

/// A pre-shared secret for authenticating handshakes (HMAC-SHA256).
///
/// The secret itself never crosses the wire: each side proves it knows the
/// secret with a keyed hash over both sides' fresh nonces. `Debug` does not
/// print it.
///
/// ```
/// let secret = backedpipe::Secret::new(b"correct horse battery staple".to_vec());
/// assert_eq!(format!("{secret:?}"), "Secret(..)");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// A secret from its bytes. Use at least 16 random bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into().into())
    }

    /// The secret's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// How a pipe behaves. Built with chained setters from [`Options::new`],
/// which holds the defaults; both sides of a pipe must agree on the
/// secret, the rest is each side's own.
///
/// ```
/// use std::time::Duration;
/// use backedpipe::{Backoff, Options, Secret};
///
/// let options = Options::new()
///     .secret(Some(Secret::new(b"sixteen byte key".to_vec())))
///     .keepalive_interval(Duration::from_secs(2))
///     .idle_timeout(Duration::from_secs(6))
///     .backoff(Backoff::new().max_delay(Duration::from_secs(1)));
/// // `Debug` shows the settings, never the secret.
/// assert!(!format!("{options:?}").contains("sixteen"));
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) send_buffer_bytes: usize,
    pub(crate) max_unsent_bytes: usize,
    pub(crate) max_unacked_bytes: usize,
    pub(crate) reconnect_grace: Duration,
    pub(crate) max_payload_bytes: u32,
    pub(crate) recv_buffer_bytes: usize,
    pub(crate) ack_interval_bytes: u64,
    pub(crate) ack_delay: Duration,
    pub(crate) keepalive_interval: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) secret: Option<Secret>,
    pub(crate) backoff: Backoff,
    pub(crate) flush_waits_for_connection: bool,
}

impl Options {
    /// The defaults: a 64 MiB send buffer with at most 256 KiB unsent
    /// while connected or within 1 s of a loss and at most 2 MiB
    /// unacknowledged while connected, 64 KiB DATA payloads, a 256 KiB
    /// receive buffer,
    /// acknowledgements every 256 KiB or 10 ms, a ping after 5 s of
    /// silence, the connection declared dead after 15 s, 10 s for a
    /// handshake, no secret, the default [`Backoff`], and a `flush` that
    /// waits for a connection.
    pub fn new() -> Self {
        Options {
            send_buffer_bytes: 64 << 20,
            max_unsent_bytes: 256 << 10,
            max_unacked_bytes: 2 << 20,
            reconnect_grace: Duration::from_secs(1),
            max_payload_bytes: 64 << 10,
            recv_buffer_bytes: 256 << 10,
            ack_interval_bytes: 256 << 10,
            ack_delay: Duration::from_millis(10),
            keepalive_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(10),
            secret: None,
            backoff: Backoff::new(),
            flush_waits_for_connection: true,
        }
    }

    /// The most unacknowledged bytes held for replay (default 64 MiB). A
    /// write waits while the buffer is full of them; nothing
    /// unacknowledged is ever dropped. The buffer's memory follows what it
    /// holds, not this bound.
    pub fn send_buffer_bytes(mut self, bytes: usize) -> Self {
        self.send_buffer_bytes = bytes;
        self
    }

    /// While connected, the most written bytes not yet handed to the
    /// connection (default 256 KiB): a fast writer waits for the transport
    /// instead of filling the whole send buffer, which keeps memory small.
    pub fn max_unsent_bytes(mut self, bytes: usize) -> Self {
        self.max_unsent_bytes = bytes;
        self
    }

    /// While connected, the most written bytes not yet acknowledged by
    /// the peer (default 2 MiB): a writer whose peer is slow to
    /// acknowledge (its tasks busy elsewhere, or its acknowledgements
    /// queued behind its own data) waits for them instead of growing the
    /// send buffer, so memory follows the bytes in flight. Keep it several
    /// times the peer's [`ack_interval_bytes`](Options::ack_interval_bytes)
    /// (256 KiB by default): below it, writes wait for the peer's
    /// acknowledgement delay. While the pipe is away, only
    /// [`send_buffer_bytes`](Options::send_buffer_bytes) bounds them.
    pub fn max_unacked_bytes(mut self, bytes: usize) -> Self {
        self.max_unacked_bytes = bytes;
        self
    }

    /// How long after losing its connection the pipe counts as briefly
    /// away (default 1 s): meanwhile writes stay bounded by
    /// [`max_unsent_bytes`](Options::max_unsent_bytes) beyond what the lost
    /// connection had taken, as while connected, so that a quick reconnect
    /// does not find the whole send buffer filled (and replay it all). The
    /// bound ends earlier when a handshake completes (the connected bound
    /// applies) or a reconnect attempt fails; after it, the send buffer
    /// fills towards [`send_buffer_bytes`](Options::send_buffer_bytes).
    pub fn reconnect_grace(mut self, grace: Duration) -> Self {
        self.reconnect_grace = grace;
        self
    }

    /// The largest DATA payload this side sends and accepts (default
    /// 64 KiB; at least 1, at most 16 MiB). The smaller of the two sides'
    /// values is used.
    pub fn max_payload_bytes(mut self, bytes: u32) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// Received bytes buffered for the application before reading from the
    /// connection pauses (default 256 KiB).
    pub fn recv_buffer_bytes(mut self, bytes: usize) -> Self {
        self.recv_buffer_bytes = bytes;
        self
    }

    /// Acknowledge at least every this many received bytes (default
    /// 256 KiB; never more than a quarter of the peer's send buffer).
    pub fn ack_interval_bytes(mut self, bytes: u64) -> Self {
        self.ack_interval_bytes = bytes;
        self
    }

    /// Acknowledge received bytes at the latest this long after they
    /// arrived (default 10 ms).
    pub fn ack_delay(mut self, delay: Duration) -> Self {
        self.ack_delay = delay;
        self
    }

    /// Send a ping when nothing has arrived for this long (default 5 s).
    pub fn keepalive_interval(mut self, interval: Duration) -> Self {
        self.keepalive_interval = interval;
        self
    }

    /// Declare the connection dead when nothing has arrived for this long
    /// (default 15 s). A black-holed connection is detected within it.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Give a connection this long to complete the handshake (default
    /// 10 s). A [`Listener`](crate::Listener) also bounds the wait for a
    /// new connection's HELLO with it.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Authenticate handshakes with this secret (default none). Both sides
    /// must agree: a side with a secret and one without never connect.
    pub fn secret(mut self, secret: Option<Secret>) -> Self {
        self.secret = secret;
        self
    }

    /// Reconnect timing for the side that dials (default
    /// [`Backoff::new`]).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Whether `flush` waits, while there is no connection, until the next
    /// one takes the bytes (default `true`). With `false`, `flush`
    /// completes at once while disconnected: the bytes wait in the send
    /// buffer and are replayed to the next connection, so a server can
    /// keep queueing output for a client that is away. Either way, flush
    /// never means the peer has the bytes; for that, see
    /// [`PipeControl::acknowledged`](crate::PipeControl::acknowledged).
    pub fn flush_waits_for_connection(mut self, waits: bool) -> Self {
        self.flush_waits_for_connection = waits;
        self
    }
}

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}
