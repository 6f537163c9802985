//! Ready-made [`Reconnector`]s: a TCP dialer, a Unix socket dialer, and
//! (with the `child-stdio` feature) a dialer that starts a child
//! process and uses its stdin/stdout as the transport, for `ssh host
//! agent`-style connections.
//!
//! The secret, when there is one, goes in the pipe's [`Options`](crate::Options):
//! a dialer only opens transports.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};

use crate::reconnect::Reconnector;
use crate::transport::Transport;

/// The default bound on one connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} did not connect in time"))
}

/// Dials a TCP address (a `host:port` string, resolved on every attempt)
/// with `TCP_NODELAY` set.
///
/// ```
/// use backedpipe::{BackedPipe, Options, Secret};
/// use backedpipe::dial::TcpDialer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let options = Options::new().secret(Some(Secret::new(b"sixteen or more bytes".to_vec())));
/// let pipe = BackedPipe::connect(TcpDialer::new("127.0.0.1:1"), options);
/// pipe.close();
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TcpDialer {
    addr: String,
    connect_timeout: Duration,
}

impl TcpDialer {
    /// A dialer for `addr` (`host:port`).
    pub fn new(addr: impl Into<String>) -> TcpDialer {
        TcpDialer { addr: addr.into(), connect_timeout: CONNECT_TIMEOUT }
    }

    /// Bounds each attempt (default 10 s); a black-holed SYN then counts as
    /// a failed attempt instead of waiting for the kernel's own timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> TcpDialer {
        self.connect_timeout = timeout;
        self
    }
}

impl Reconnector for TcpDialer {
    async fn reconnect(&self) -> io::Result<impl Transport> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr.as_str()))
            .await
            .map_err(|_| timed_out(&self.addr))??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Dials a Unix socket by path.
///
/// ```
/// use backedpipe::{BackedPipe, Options};
/// use backedpipe::dial::UnixDialer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pipe = BackedPipe::connect(UnixDialer::new("/nonexistent/socket"), Options::new());
/// pipe.close();
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct UnixDialer {
    path: PathBuf,
    connect_timeout: Duration,
}

impl UnixDialer {
    /// A dialer for the socket at `path`.
    pub fn new(path: impl Into<PathBuf>) -> UnixDialer {
        UnixDialer { path: path.into(), connect_timeout: CONNECT_TIMEOUT }
    }

    /// Bounds each attempt (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> UnixDialer {
        self.connect_timeout = timeout;
        self
    }
}

impl Reconnector for UnixDialer {
    async fn reconnect(&self) -> io::Result<impl Transport> {
        tokio::time::timeout(self.connect_timeout, UnixStream::connect(&self.path))
            .await
            .map_err(|_| timed_out(&self.path.display().to_string()))?
    }
}

#[cfg(feature = "child-stdio")]
pub use self::child::ChildDialer;

#[cfg(feature = "child-stdio")]
mod child {
    use std::io;
    use std::process::Command;
    use std::sync::{Arc, Mutex};

    use transport_stream::{Handle, Options, Stream};

    use crate::reconnect::Reconnector;
    use crate::transport::Transport;

    type MakeCommand = dyn Fn() -> Command + Send + Sync;
    type MakeOptions = dyn Fn() -> Options + Send + Sync;

    /// Starts a child process on every attempt and uses its stdin/stdout as
    /// the transport ([`transport_stream::Stream`], whose stdout and stdin
    /// are independent halves), e.g. `ssh host agent` where the agent
    /// bridges its stdio to the server.
    ///
    /// A connection that breaks is dropped by the pipe, which ends and
    /// reaps its child (in the background). Clones share the record of the
    /// newest child, [`ChildDialer::last_child`].
    ///
    /// ```
    /// use std::process::Command;
    /// use backedpipe::{BackedPipe, Options};
    /// use backedpipe::dial::ChildDialer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let dialer = ChildDialer::new(|| {
    ///     let mut command = Command::new("ssh");
    ///     command.args(["example.invalid", "agent"]);
    ///     command
    /// });
    /// let pipe = BackedPipe::connect(dialer.clone(), Options::new());
    /// pipe.close();
    /// # }
    /// ```
    #[derive(Clone)]
    #[cfg_attr(docsrs, doc(cfg(feature = "child-stdio")))]
    pub struct ChildDialer {
        command: Arc<MakeCommand>,
        options: Arc<MakeOptions>,
        last: Arc<Mutex<Option<Handle>>>,
    }

    impl std::fmt::Debug for ChildDialer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ChildDialer").finish_non_exhaustive()
        }
    }

    impl ChildDialer {
        /// A dialer that runs the command `command` builds, with the
        /// default [`Options`] (stderr captured).
        pub fn new(command: impl Fn() -> Command + Send + Sync + 'static) -> ChildDialer {
            ChildDialer { command: Arc::new(command), options: Arc::new(Options::new), last: Arc::default() }
        }

        /// The same dialer with the stream options `options` builds for
        /// every child (e.g. to forward stderr).
        pub fn with_options(mut self, options: impl Fn() -> Options + Send + Sync + 'static) -> ChildDialer {
            self.options = Arc::new(options);
            self
        }

        /// The handle of the newest child started, for its pid, its stderr
        /// or its exit status.
        pub fn last_child(&self) -> Option<Handle> {
            self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
        }
    }

    impl Reconnector for ChildDialer {
        async fn reconnect(&self) -> io::Result<impl Transport> {
            let stream = Stream::spawn((self.command)(), (self.options)())?;
            *self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(stream.handle());
            Ok(stream)
        }
    }
}
