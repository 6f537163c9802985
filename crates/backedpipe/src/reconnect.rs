//! Dialling: the [`Reconnector`] trait. It only opens a transport; the
//! pipe runs the resume handshake over it, and waits between failed
//! attempts as its [`Backoff`](crate::Backoff) says.

use std::future::Future;
use std::io;

use crate::transport::Transport;

/// Opens a new transport to the peer. That is all it does: the pipe runs
/// the resume handshake over what it returns, replays what is missing, and
/// calls it again when the connection breaks.
///
/// Any `Fn() -> impl Future<Output = io::Result<impl Transport>>` closure
/// is a `Reconnector`:
///
/// ```
/// use backedpipe::Reconnector;
///
/// fn assert_reconnector(_: &impl Reconnector) {}
///
/// let addr = "127.0.0.1:9";
/// let dial = move || tokio::net::TcpStream::connect(addr);
/// assert_reconnector(&dial);
/// ```
///
/// Or implement it on a type:
///
/// ```
/// use std::io;
/// use backedpipe::{Reconnector, Transport};
/// use tokio::net::UnixStream;
///
/// struct Dialer { path: std::path::PathBuf }
///
/// impl Reconnector for Dialer {
///     async fn reconnect(&self) -> io::Result<impl Transport> {
///         UnixStream::connect(&self.path).await
///     }
/// }
/// ```
///
/// A dialer that opens different kinds of transport returns them as
/// `Box<dyn Transport>`.
///
/// # Cancel safety
///
/// The future may be dropped at any await point (the pipe was closed, or a
/// forced reconnect superseded it); a half-opened transport it holds is
/// dropped with it.
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub trait Reconnector: Send + Sync + 'static {
    /// Opens a new transport.
    fn reconnect(&self) -> impl Future<Output = io::Result<impl Transport>> + Send;
}

impl<F, Fut, T> Reconnector for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<T>> + Send,
    T: Transport,
{
    fn reconnect(&self) -> impl Future<Output = io::Result<impl Transport>> + Send {
        self()
    }
}
