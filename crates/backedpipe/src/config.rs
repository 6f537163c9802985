//! Pipe configuration: buffer sizes, acknowledgement pacing, keepalive and
//! handshake timing, and the optional shared secret.

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

/// How a pipe behaves. Start from [`Config::default`] and change fields.
///
/// ```
/// use std::time::Duration;
/// use backedpipe::{Config, Secret};
///
/// let mut config = Config::default();
/// config.secret = Some(Secret::new(b"sixteen byte key".to_vec()));
/// config.keepalive_interval = Duration::from_secs(2);
/// config.idle_timeout = Duration::from_secs(6);
/// assert_eq!(config.send_buffer_bytes, 64 << 20);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The most unacknowledged bytes held for replay (default 64 MiB). A
    /// write waits while the buffer is full of them; nothing unacknowledged
    /// is ever dropped.
    pub send_buffer_bytes: usize,
    /// While connected, the most written bytes not yet handed to the
    /// connection (default 256 KiB): a fast writer waits for the transport
    /// instead of filling the whole send buffer, which keeps memory small.
    pub max_unsent_bytes: usize,
    /// The largest DATA payload this side sends and accepts (default
    /// 64 KiB, at most 16 MiB). The smaller of the two sides' values is used.
    pub max_payload_bytes: u32,
    /// Received bytes buffered for the application before reading from the
    /// connection pauses (default 256 KiB).
    pub recv_buffer_bytes: usize,
    /// Acknowledge at least every this many received bytes (default
    /// 256 KiB; never more than a quarter of the peer's send buffer).
    pub ack_interval_bytes: u64,
    /// Acknowledge received bytes at the latest this long after they
    /// arrived (default 10 ms).
    pub ack_delay: Duration,
    /// Send a ping when nothing has arrived for this long (default 5 s).
    pub keepalive_interval: Duration,
    /// Declare the connection dead when nothing has arrived for this long
    /// (default 15 s). A black-holed connection is detected within it.
    pub idle_timeout: Duration,
    /// Give a connection this long to complete the handshake (default 10 s).
    pub handshake_timeout: Duration,
    /// Authenticate handshakes with this secret (default none). Both sides
    /// must agree.
    pub secret: Option<Secret>,
    /// Reconnect timing for the side that dials.
    pub backoff: Backoff,
    /// Whether `flush` waits, while there is no connection, until the next
    /// one takes the bytes (default `true`). With `false`, `flush`
    /// completes at once while disconnected: the bytes wait in the send
    /// buffer and are replayed to the next connection, so a server can
    /// keep queueing output for a client that is away. Either way, flush
    /// never means the peer has the bytes; for that, see
    /// [`PipeControl::acknowledged`](crate::PipeControl::acknowledged).
    pub flush_waits_for_connection: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            send_buffer_bytes: 64 << 20,
            max_unsent_bytes: 256 << 10,
            max_payload_bytes: 64 << 10,
            recv_buffer_bytes: 256 << 10,
            ack_interval_bytes: 256 << 10,
            ack_delay: Duration::from_millis(10),
            keepalive_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(10),
            secret: None,
            backoff: Backoff::default(),
            flush_waits_for_connection: true,
        }
    }
}
