//! [`Options`]: the termination ladder's durations and what happens to the
//! child's stderr.

use std::fmt;
use std::time::Duration;

use tokio::io::AsyncWrite;

/// A writer that receives the child's stderr.
pub(crate) type StderrWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// How a [`Stream`](crate::Stream) runs and ends its child.
///
/// ```
/// use std::time::Duration;
///
/// let options = transport_stream::Options::new()
///     .termination_delay(Duration::from_millis(500))
///     .stdin_close_timeout(Duration::from_millis(200))
///     .terminate_timeout(Duration::from_millis(200))
///     .forward_stderr(tokio::io::sink());
/// # drop(options);
/// ```
pub struct Options {
    pub(crate) termination_delay: Duration,
    pub(crate) stdin_close_timeout: Duration,
    pub(crate) terminate_timeout: Duration,
    pub(crate) capture_stderr_bytes: usize,
    pub(crate) forward_stderr: Option<StderrWriter>,
    pub(crate) inherit_stderr: bool,
}

impl Options {
    /// The defaults: no termination delay, 1 s after closing stdin, 1 s
    /// after `SIGTERM`, the last 64 KiB of stderr captured.
    pub fn new() -> Self {
        Self {
            termination_delay: Duration::ZERO,
            stdin_close_timeout: Duration::from_secs(1),
            terminate_timeout: Duration::from_secs(1),
            capture_stderr_bytes: 64 << 10,
            forward_stderr: None,
            inherit_stderr: false,
        }
    }

    /// How long `close` first waits for the child to exit by itself
    /// (default 0). See also [`Handle::set_termination_delay`](crate::Handle::set_termination_delay).
    pub fn termination_delay(mut self, delay: Duration) -> Self {
        self.termination_delay = delay;
        self
    }

    /// How long `close` waits after closing the child's stdin before it sends
    /// `SIGTERM` (default 1 s).
    pub fn stdin_close_timeout(mut self, timeout: Duration) -> Self {
        self.stdin_close_timeout = timeout;
        self
    }

    /// How long `close` waits after `SIGTERM` before it sends `SIGKILL`
    /// (default 1 s).
    pub fn terminate_timeout(mut self, timeout: Duration) -> Self {
        self.terminate_timeout = timeout;
        self
    }

    /// Keeps the last `bytes` bytes of the child's stderr for
    /// [`Handle::stderr`](crate::Handle::stderr) and error reports (default
    /// 64 KiB; 0 keeps nothing).
    pub fn capture_stderr(mut self, bytes: usize) -> Self {
        self.capture_stderr_bytes = bytes;
        self
    }

    /// Copies the child's stderr to `writer`, from a task of its own: a slow
    /// writer delays only that task (and eventually the child's own stderr
    /// writes), never the stream. Capturing continues alongside. Replaces
    /// [`inherit_stderr`](Self::inherit_stderr)`(true)`. Default: no
    /// forwarding (stderr is only captured).
    pub fn forward_stderr(mut self, writer: impl AsyncWrite + Send + Unpin + 'static) -> Self {
        self.forward_stderr = Some(Box::new(writer));
        self.inherit_stderr = false;
        self
    }

    /// Whether the child writes to this process's stderr directly; nothing
    /// is captured or forwarded then (`true` drops a writer given to
    /// [`forward_stderr`](Self::forward_stderr)). Default `false`: the
    /// child's stderr is a pipe that this crate drains.
    pub fn inherit_stderr(mut self, inherit: bool) -> Self {
        self.inherit_stderr = inherit;
        if inherit {
            self.forward_stderr = None;
        }
        self
    }
}

impl Default for Options {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("termination_delay", &self.termination_delay)
            .field("stdin_close_timeout", &self.stdin_close_timeout)
            .field("terminate_timeout", &self.terminate_timeout)
            .field("capture_stderr_bytes", &self.capture_stderr_bytes)
            .field("forward_stderr", &self.forward_stderr.is_some())
            .field("inherit_stderr", &self.inherit_stderr)
            .finish()
    }
}
