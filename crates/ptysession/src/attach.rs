//! [`Attachment`]: one client's view of a session, the replay then the live
//! output as [`Events`], and its [`Input`] (keystrokes and window size).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::queue::{ClientQueue, Pop};
use crate::session::Shared;
use crate::{Error, Event, WindowSize};

/// Identifies one attached client within its session.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ptysession::Error> {
/// let session = ptysession::Session::spawn(std::process::Command::new("true"), Default::default())?;
/// let first = session.attach(None)?;
/// let second = session.attach(None)?;
/// assert_ne!(first.id(), second.id());
/// # session.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub(crate) u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client-{}", self.0)
    }
}

/// A client attached to a [`Session`](crate::Session): the replay, then the
/// live output and the exit status through [`next`](Self::next); input and
/// resizing through [`write`](Self::write) and [`resize`](Self::resize).
///
/// Dropping the attachment (or its [`Events`] half) detaches the client.
#[derive(Debug)]
pub struct Attachment {
    replay: Bytes,
    replay_seq: u64,
    restores_screen: bool,
    events: Events,
    input: Input,
}

impl Attachment {
    pub(crate) fn new(
        shared: Arc<Shared>,
        id: ClientId,
        queue: Arc<ClientQueue>,
        replay: Bytes,
        replay_seq: u64,
        restores_screen: bool,
    ) -> Self {
        Self {
            replay,
            replay_seq,
            restores_screen,
            events: Events { shared: shared.clone(), id, queue },
            input: Input { shared, id },
        }
    }

    /// This client's id.
    pub fn id(&self) -> ClientId {
        self.input.id
    }

    /// The raw scrollback at the time of attaching, from a clean boundary
    /// (never inside a UTF-8 sequence or an escape sequence). The live
    /// output from [`next`](Self::next) continues exactly where it ends
    /// (for a client attached with `Session::attach_screen`, the
    /// first event is a repaint instead, and the live output continues
    /// after that).
    ///
    /// It is empty only when the session has written nothing yet. The scan
    /// for a clean start gives up at most 4 KiB; output in which no clean
    /// start can be proven (a long run of bytes that might still belong to
    /// a control string) is replayed from the last line boundary, or whole
    /// as a last resort.
    pub fn replay(&self) -> &Bytes {
        &self.replay
    }

    /// Whether this client's first event is a repaint of the screen
    /// (attached with `Session::attach_screen`) rather than a
    /// continuation of [`replay`](Self::replay).
    pub fn restores_screen(&self) -> bool {
        self.restores_screen
    }

    /// The position of the replay's first byte in the session's whole
    /// output (the number of bytes the command wrote before it). The live
    /// output continues at `replay_seq() + replay().len()`.
    pub fn replay_seq(&self) -> u64 {
        self.replay_seq
    }

    /// The next event: output, then the exit status or the reason for being
    /// detached; `None` after that.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is consumed only when it is returned.
    pub async fn next(&mut self) -> Option<Event> {
        self.events.next().await
    }

    /// The next event if one is queued right now.
    pub fn try_next(&mut self) -> Option<Event> {
        self.events.try_next()
    }

    /// Writes `data` to the terminal as one chunk: input from other clients
    /// never lands inside it.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the session no longer takes input.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, the chunk
    /// is not written at all.
    pub async fn write(&self, data: impl Into<Bytes>) -> Result<(), Error> {
        self.input.write(data).await
    }

    /// Sets this client's window size; see [`ResizePolicy`](crate::ResizePolicy).
    ///
    /// # Errors
    ///
    /// [`Error::Resize`] if the terminal refuses the size,
    /// [`Error::Detached`] if this client is no longer attached (it lagged
    /// or the command exited), [`Error::Closed`] if the session is closing.
    pub fn resize(&self, size: WindowSize) -> Result<(), Error> {
        self.input.resize(size)
    }

    /// Another handle to this client's input.
    pub fn input(&self) -> Input {
        self.input.clone()
    }

    /// Splits the attachment into its replay, its events and its input, for
    /// reading and writing from different tasks.
    pub fn into_parts(self) -> (Bytes, Events, Input) {
        (self.replay, self.events, self.input)
    }

    /// As [`into_parts`](Self::into_parts), with what the client is to be
    /// shown first in place of the replay: for a client restoring the
    /// screen, the repaint (its first event, waited for), otherwise the
    /// replay. When a screen client's first event is not a repaint (the
    /// session ended before its screen was drawn), that event is returned
    /// too, to be handled before any other.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future detaches the client.
    pub async fn into_view(self) -> (Bytes, Option<Event>, Events, Input) {
        let restores_screen = self.restores_screen;
        let (replay, mut events, input) = self.into_parts();
        if !restores_screen {
            return (replay, None, events, input);
        }
        match events.next().await {
            Some(Event::Repaint(repaint)) => (repaint, None, events, input),
            other => (Bytes::new(), other, events, input),
        }
    }

    /// Detaches the client (the same as dropping the attachment).
    pub fn detach(self) {}
}

/// The receiving half of an [`Attachment`]: live output, then the exit
/// status or the reason for being detached. Dropping it detaches the client.
#[derive(Debug)]
pub struct Events {
    shared: Arc<Shared>,
    id: ClientId,
    queue: Arc<ClientQueue>,
}

impl Events {
    /// The next event; `None` after the final one. See [`Attachment::next`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is consumed only when it is returned.
    pub async fn next(&mut self) -> Option<Event> {
        self.queue.pop().await
    }

    /// The next event if one is queued right now.
    pub fn try_next(&mut self) -> Option<Event> {
        match self.queue.try_pop() {
            Pop::Event(event) => Some(event),
            Pop::Empty | Pop::Finished => None,
        }
    }

    /// Asks for a fresh [`Event::Repaint`](crate::Event::Repaint) of the
    /// screen at this point of the output: it comes after the output this
    /// client has not taken yet (none is dropped), and the output
    /// continues exactly after it. While a repaint is awaited already
    /// (just attached, or resynchronising), that one serves. For a terminal that may no longer show
    /// what it was sent (its connection was down, something drew over it).
    /// A client attached raw gets one too: its byte stream then continues
    /// from the repaint (it is still detached, not resynchronised, when it
    /// falls behind).
    ///
    /// # Errors
    ///
    /// [`Error::NoScreenModel`] when the session keeps no screen model
    /// ([`Options::screen_model`](crate::Options::screen_model));
    /// [`Error::Detached`] once the client is detached or has had its
    /// final event.
    #[cfg(feature = "screen")]
    pub fn request_repaint(&self) -> Result<(), Error> {
        self.shared.request_repaint(self.id)
    }

    /// This client's id.
    pub fn id(&self) -> ClientId {
        self.id
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.shared.detach(self.id);
    }
}

/// The sending half of an [`Attachment`]: input and window size. Cheap to
/// clone; input keeps working after the client detached, as long as the
/// session runs.
#[derive(Debug, Clone)]
pub struct Input {
    shared: Arc<Shared>,
    id: ClientId,
}

impl Input {
    /// Writes `data` to the terminal as one chunk; see [`Attachment::write`].
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the session no longer takes input.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, the chunk
    /// is not written at all.
    pub async fn write(&self, data: impl Into<Bytes>) -> Result<(), Error> {
        self.shared.send_input(data.into()).await
    }

    /// Queues `data` as one chunk if there is room right now; `Ok(false)`
    /// when the input queue is full (the command is not reading its input).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the session no longer takes input.
    pub fn try_write(&self, data: impl Into<Bytes>) -> Result<bool, Error> {
        self.shared.try_send_input(data.into())
    }

    /// Sets this client's window size; see [`Attachment::resize`].
    ///
    /// # Errors
    ///
    /// As [`Attachment::resize`].
    pub fn resize(&self, size: WindowSize) -> Result<(), Error> {
        self.shared.resize_client(self.id, size)
    }

    /// Asks for a fresh [`Event::Repaint`](crate::Event::Repaint) of the
    /// screen at this point of the output: it comes after the output this
    /// client has not taken yet (none is dropped), and the output
    /// continues exactly after it. While a repaint is awaited already
    /// (just attached, or resynchronising), that one serves. For a terminal that may no longer show
    /// what it was sent (its connection was down, something drew over it).
    /// A client attached raw gets one too: its byte stream then continues
    /// from the repaint (it is still detached, not resynchronised, when it
    /// falls behind).
    ///
    /// # Errors
    ///
    /// [`Error::NoScreenModel`] when the session keeps no screen model
    /// ([`Options::screen_model`](crate::Options::screen_model));
    /// [`Error::Detached`] once the client is detached or has had its
    /// final event.
    #[cfg(feature = "screen")]
    pub fn request_repaint(&self) -> Result<(), Error> {
        self.shared.request_repaint(self.id)
    }

    /// This client's id.
    pub fn id(&self) -> ClientId {
        self.id
    }
}
