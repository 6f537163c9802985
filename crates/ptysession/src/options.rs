//! [`Options`]: scrollback size, client queues, timeouts and the resize
//! policy of a session.

use std::time::Duration;

use crate::WindowSize;

/// Whose window size the terminal takes when several clients are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[non_exhaustive]
pub enum ResizePolicy {
    /// The most recent request wins: attaching with a size or resizing sets
    /// the terminal's size; when a client leaves, the most recent request
    /// among the clients that remain applies (so a client is not left
    /// cropped to the size of one that is gone). With no client that gave
    /// a size, the terminal keeps its size.
    #[default]
    MostRecent,
    /// The smallest rows and the smallest columns over the attached clients
    /// that gave a size, so that every client sees the whole screen. The
    /// size is recomputed when a client attaches, resizes or leaves.
    Smallest,
}

/// How a session is run. Built with chained setters from the defaults:
///
/// ```
/// use std::time::Duration;
/// use ptysession::{Options, ResizePolicy, WindowSize};
///
/// let options = Options::new()
///     .scrollback_bytes(256 * 1024)
///     .client_queue_bytes(4 << 20)
///     .initial_size(WindowSize::new(50, 160))
///     .resize_policy(ResizePolicy::Smallest)
///     .first_attach_timeout(Some(Duration::from_secs(10)))
///     .inactivity_timeout(None)
///     .linger(Duration::from_secs(60));
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) scrollback_bytes: usize,
    pub(crate) client_queue_bytes: usize,
    pub(crate) initial_size: WindowSize,
    pub(crate) resize_policy: ResizePolicy,
    pub(crate) first_attach_timeout: Option<Duration>,
    pub(crate) inactivity_timeout: Option<Duration>,
    pub(crate) linger: Duration,
    pub(crate) exit_drain_timeout: Duration,
    pub(crate) kill_timeout: Duration,
    #[cfg(feature = "screen")]
    pub(crate) screen_model: bool,
    #[cfg(feature = "screen")]
    pub(crate) history_lines: usize,
    #[cfg(feature = "screen")]
    pub(crate) screen_backlog_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self::new()
    }
}

impl Options {
    /// The defaults: 64 KiB of scrollback, 1 MiB per client queue, a 24 × 80
    /// window, [`ResizePolicy::MostRecent`], a 30 s first-attach timeout, a
    /// 5 min inactivity timeout, a 30 s linger after exit, a 250 ms exit
    /// drain and a 5 s kill timeout; with the `screen` feature, 1000 history
    /// lines and a 16 MiB screen backlog.
    pub fn new() -> Self {
        Self {
            scrollback_bytes: 64 * 1024,
            client_queue_bytes: 1 << 20,
            initial_size: WindowSize::default(),
            resize_policy: ResizePolicy::MostRecent,
            first_attach_timeout: Some(Duration::from_secs(30)),
            inactivity_timeout: Some(Duration::from_secs(300)),
            linger: Duration::from_secs(30),
            exit_drain_timeout: Duration::from_millis(250),
            kill_timeout: Duration::from_secs(5),
            #[cfg(feature = "screen")]
            screen_model: true,
            #[cfg(feature = "screen")]
            history_lines: crate::screen::DEFAULT_HISTORY_LINES,
            #[cfg(feature = "screen")]
            screen_backlog_bytes: 16 << 20,
        }
    }

    /// How many of the most recent output bytes are kept and replayed to a
    /// client that attaches. Default 64 KiB.
    pub fn scrollback_bytes(mut self, bytes: usize) -> Self {
        self.scrollback_bytes = bytes;
        self
    }

    /// How many bytes of output may wait for one client; a client that falls
    /// further behind is detached with [`DetachReason::Lagged`](crate::DetachReason::Lagged).
    /// Default 1 MiB. At least one byte is always allowed.
    pub fn client_queue_bytes(mut self, bytes: usize) -> Self {
        self.client_queue_bytes = bytes.max(1);
        self
    }

    /// The terminal's window size before any client gives one. Default
    /// 24 × 80.
    pub fn initial_size(mut self, size: WindowSize) -> Self {
        self.initial_size = size;
        self
    }

    /// Whose window size wins when several clients are attached. Default
    /// [`ResizePolicy::MostRecent`].
    pub fn resize_policy(mut self, policy: ResizePolicy) -> Self {
        self.resize_policy = policy;
        self
    }

    /// How long the session waits for its first client before closing;
    /// `None` waits for ever. Default 30 s.
    pub fn first_attach_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.first_attach_timeout = timeout;
        self
    }

    /// How long the session stays open with no client attached, after the
    /// last one left, before closing; `None` keeps it open. Attached clients
    /// always keep a session open. Default 5 min.
    pub fn inactivity_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.inactivity_timeout = timeout;
        self
    }

    /// How long a session stays after its command exited, so that a client
    /// attaching late still gets the scrollback and the exit status. After
    /// it, the session closes. Default 30 s.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// After the command exits, output normally ends when the last copy of
    /// the terminal closes. A background process that kept the terminal
    /// open would delay that for ever, so output is also taken as ended once
    /// none has arrived for this long after the exit. Default 250 ms.
    pub fn exit_drain_timeout(mut self, timeout: Duration) -> Self {
        self.exit_drain_timeout = timeout;
        self
    }

    /// When a session closes while its command runs, the process group gets
    /// `SIGHUP` (a terminal hang-up), then `SIGKILL` after this long.
    /// Default 5 s.
    pub fn kill_timeout(mut self, timeout: Duration) -> Self {
        self.kill_timeout = timeout;
        self
    }

    /// Whether the session keeps a screen model (a terminal emulator fed
    /// every byte of output, on a thread of its own). Without one, clients
    /// get the raw scrollback only and a lagging client is detached; the
    /// output path does no parsing at all. Default `true`.
    #[cfg(feature = "screen")]
    pub fn screen_model(mut self, enabled: bool) -> Self {
        self.screen_model = enabled;
        self
    }

    /// How many lines of history the screen model keeps above the screen,
    /// for the repaint of a client that attaches (they land in its
    /// terminal's scrollback). Default 1000: at 80 columns about 2 MiB once
    /// full (24 bytes a cell), twice that while a full-screen program shows
    /// the alternate screen.
    #[cfg(feature = "screen")]
    pub fn history_lines(mut self, lines: usize) -> Self {
        self.history_lines = lines;
        self
    }

    /// How much output may wait for the screen model (which runs on a
    /// thread of its own) before the session stops reading the terminal
    /// until it catches up. Bursts up to this size cost the output path
    /// nothing; sustained output runs at the emulator's pace. An attach or
    /// a resynchronisation waits until the model has caught up. Default
    /// 16 MiB; at least one byte.
    #[cfg(feature = "screen")]
    pub fn screen_backlog_bytes(mut self, bytes: usize) -> Self {
        self.screen_backlog_bytes = bytes.max(1);
        self
    }
}
