//! A small framing for serving one attached client over any byte stream
//! ([`serve_client`]) and for speaking to such a server ([`client`]).
//!
//! Every frame is a one-byte tag, a 4-byte big-endian payload length, and
//! the payload (at most [`MAX_PAYLOAD_BYTES`]):
//!
//! ```text
//! +-----+----------------+------------------+
//! | tag | length (u32 BE)| payload (length) |
//! +-----+----------------+------------------+
//! ```
//!
//! Server to client ([`ServerFrame`]):
//!
//! | tag    | frame       | payload |
//! | ------ | ----------- | ------- |
//! | `0x01` | `Output`    | live output bytes |
//! | `0x02` | `Replay`    | scrollback bytes (zero or more frames, all before `ReplayEnd`) |
//! | `0x03` | `ReplayEnd` | empty: the replay is complete, live output follows |
//! | `0x04` | `Exited`    | `0x00` + exit code (i32 BE), or `0x01` + signal number (i32 BE); last frame |
//! | `0x05` | `Detached`  | `0x01` + queue size (u64 BE): lagged; `0x02`: session closed; `0x03`: displaced by another client; or `0x04`: as the client asked (a server that reads its terminal saw the detach key); last frame |
//!
//! Client to server ([`ClientFrame`]):
//!
//! | tag    | frame    | payload |
//! | ------ | -------- | ------- |
//! | `0x11` | `Input`  | bytes for the terminal, written as one chunk |
//! | `0x12` | `Resize` | rows (u16 BE), columns (u16 BE) |
//! | `0x13` | `Detach` | empty: leave the session (it keeps running) |
//! | `0x14` | `Repaint` | empty: a repaint of the screen after the output queued (ignored without a screen model) |
//!
//! A server sends `Replay`* `ReplayEnd`, then `Output`* and finally at most
//! one `Exited` or `Detached`. Output and input longer than
//! [`MAX_PAYLOAD_BYTES`] are split over several frames; a frame with an
//! unknown tag, a bad payload or a length over the maximum is an
//! [`Error::Frame`]. A client that closes its side of the connection is
//! detached.
//!
//! The framing itself is sans-I/O ([`ServerFrame::encode`],
//! [`ServerFrame::decode`] and the same on [`ClientFrame`]), so it can be
//! carried by any transport; [`serve_client`], [`ClientReader`] and
//! [`ClientWriter`] run it over tokio's `AsyncRead`/`AsyncWrite`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::{Attachment, DetachReason, Error, Event, ExitStatus, WindowSize};

/// The largest payload of one frame: 1 MiB.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// The bytes before every payload: tag and length.
const HEADER_BYTES: usize = 5;

/// How much output [`serve_client`] gathers into one write.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

mod tag {
    pub(super) const OUTPUT: u8 = 0x01;
    pub(super) const REPLAY: u8 = 0x02;
    pub(super) const REPLAY_END: u8 = 0x03;
    pub(super) const EXITED: u8 = 0x04;
    pub(super) const DETACHED: u8 = 0x05;
    pub(super) const INPUT: u8 = 0x11;
    pub(super) const RESIZE: u8 = 0x12;
    pub(super) const DETACH: u8 = 0x13;
    pub(super) const REPAINT: u8 = 0x14;
}

const EXIT_CODE: u8 = 0x00;
const EXIT_SIGNAL: u8 = 0x01;
const DETACHED_LAGGED: u8 = 0x01;
const DETACHED_CLOSED: u8 = 0x02;
const DETACHED_DISPLACED: u8 = 0x03;
const DETACHED_REQUESTED: u8 = 0x04;

/// A frame from the server to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerFrame {
    /// Live output.
    Output(Bytes),
    /// Part of the scrollback replayed on attach.
    Replay(Bytes),
    /// The replay is complete; live output follows.
    ReplayEnd,
    /// The command exited after all its output; the last frame.
    Exited(ExitStatus),
    /// The client was detached; the last frame.
    Detached(DetachReason),
}

/// A frame from the client to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientFrame {
    /// Input for the terminal, written as one chunk.
    Input(Bytes),
    /// The client's window size.
    Resize(WindowSize),
    /// Leave the session; it keeps running.
    Detach,
    /// Send a repaint of the screen after the output queued (see
    /// `Input::request_repaint`, feature `screen`); ignored by a session
    /// without a screen model.
    Repaint,
}

fn put_header(dst: &mut BytesMut, tag: u8, len: usize) {
    dst.reserve(HEADER_BYTES + len);
    dst.put_u8(tag);
    dst.put_u32(len as u32);
}

/// Appends `data` as frames of `tag`, split at the payload maximum; nothing
/// for empty data.
fn put_data(dst: &mut BytesMut, tag: u8, data: &[u8]) {
    for piece in data.chunks(MAX_PAYLOAD_BYTES) {
        put_header(dst, tag, piece.len());
        dst.put_slice(piece);
    }
}

fn frame_error(reason: impl Into<String>) -> Error {
    Error::Frame { reason: reason.into() }
}

/// Takes one whole frame off the front of `src`: its tag and payload.
fn take_frame(src: &mut BytesMut) -> Result<Option<(u8, Bytes)>, Error> {
    if src.len() < HEADER_BYTES {
        return Ok(None);
    }
    let tag = src[0];
    let len = u32::from_be_bytes([src[1], src[2], src[3], src[4]]) as usize;
    if len > MAX_PAYLOAD_BYTES {
        return Err(frame_error(format!("a payload of {len} bytes is over the maximum of {MAX_PAYLOAD_BYTES}")));
    }
    if src.len() < HEADER_BYTES + len {
        src.reserve(HEADER_BYTES + len - src.len());
        return Ok(None);
    }
    src.advance(HEADER_BYTES);
    Ok(Some((tag, src.split_to(len).freeze())))
}

fn expect_len(tag: u8, payload: &Bytes, len: usize) -> Result<(), Error> {
    if payload.len() == len {
        Ok(())
    } else {
        Err(frame_error(format!("frame {tag:#04x} has a payload of {} bytes, not {len}", payload.len())))
    }
}

impl ServerFrame {
    /// Appends the frame's encoding to `dst` (output and replay longer than
    /// [`MAX_PAYLOAD_BYTES`] become several frames; empty ones none).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use ptysession::ExitStatus;
    /// use ptysession::framing::ServerFrame;
    ///
    /// let mut wire = BytesMut::new();
    /// ServerFrame::Output("hi".into()).encode(&mut wire);
    /// ServerFrame::Exited(ExitStatus::Code(3)).encode(&mut wire);
    /// assert_eq!(&wire[..7], b"\x01\x00\x00\x00\x02hi");
    /// assert_eq!(ServerFrame::decode(&mut wire)?, Some(ServerFrame::Output("hi".into())));
    /// assert_eq!(ServerFrame::decode(&mut wire)?, Some(ServerFrame::Exited(ExitStatus::Code(3))));
    /// assert_eq!(ServerFrame::decode(&mut wire)?, None);
    /// # Ok::<(), ptysession::Error>(())
    /// ```
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Self::Output(data) => put_data(dst, tag::OUTPUT, data),
            Self::Replay(data) => put_data(dst, tag::REPLAY, data),
            Self::ReplayEnd => put_header(dst, tag::REPLAY_END, 0),
            Self::Exited(status) => {
                put_header(dst, tag::EXITED, 5);
                match *status {
                    ExitStatus::Code(code) => {
                        dst.put_u8(EXIT_CODE);
                        dst.put_i32(code);
                    }
                    ExitStatus::Signal(signal) => {
                        dst.put_u8(EXIT_SIGNAL);
                        dst.put_i32(signal);
                    }
                }
            }
            Self::Detached(DetachReason::Lagged { queue_bytes }) => {
                put_header(dst, tag::DETACHED, 9);
                dst.put_u8(DETACHED_LAGGED);
                dst.put_u64(*queue_bytes as u64);
            }
            Self::Detached(DetachReason::Closed) => {
                put_header(dst, tag::DETACHED, 1);
                dst.put_u8(DETACHED_CLOSED);
            }
            Self::Detached(DetachReason::Displaced) => {
                put_header(dst, tag::DETACHED, 1);
                dst.put_u8(DETACHED_DISPLACED);
            }
            Self::Detached(DetachReason::Requested) => {
                put_header(dst, tag::DETACHED, 1);
                dst.put_u8(DETACHED_REQUESTED);
            }
        }
    }

    /// Takes one frame off the front of `src`; `Ok(None)` while `src` does
    /// not yet hold a whole frame.
    ///
    /// # Errors
    ///
    /// [`Error::Frame`] for an unknown tag, a malformed payload or a length
    /// over [`MAX_PAYLOAD_BYTES`].
    pub fn decode(src: &mut BytesMut) -> Result<Option<Self>, Error> {
        let Some((tag, mut payload)) = take_frame(src)? else { return Ok(None) };
        let frame = match tag {
            tag::OUTPUT => Self::Output(payload),
            tag::REPLAY => Self::Replay(payload),
            tag::REPLAY_END => {
                expect_len(tag, &payload, 0)?;
                Self::ReplayEnd
            }
            tag::EXITED => {
                expect_len(tag, &payload, 5)?;
                let kind = payload.get_u8();
                let value = payload.get_i32();
                match kind {
                    EXIT_CODE => Self::Exited(ExitStatus::Code(value)),
                    EXIT_SIGNAL => Self::Exited(ExitStatus::Signal(value)),
                    kind => return Err(frame_error(format!("unknown exit kind {kind:#04x}"))),
                }
            }
            tag::DETACHED => match payload.first() {
                Some(&DETACHED_LAGGED) => {
                    expect_len(tag, &payload, 9)?;
                    payload.advance(1);
                    let queue_bytes = usize::try_from(payload.get_u64()).unwrap_or(usize::MAX);
                    Self::Detached(DetachReason::Lagged { queue_bytes })
                }
                Some(&DETACHED_CLOSED) => {
                    expect_len(tag, &payload, 1)?;
                    Self::Detached(DetachReason::Closed)
                }
                Some(&DETACHED_DISPLACED) => {
                    expect_len(tag, &payload, 1)?;
                    Self::Detached(DetachReason::Displaced)
                }
                Some(&DETACHED_REQUESTED) => {
                    expect_len(tag, &payload, 1)?;
                    Self::Detached(DetachReason::Requested)
                }
                _ => return Err(frame_error("unknown detach reason")),
            },
            tag => return Err(frame_error(format!("unknown server frame tag {tag:#04x}"))),
        };
        Ok(Some(frame))
    }
}

impl ClientFrame {
    /// Appends the frame's encoding to `dst` (input longer than
    /// [`MAX_PAYLOAD_BYTES`] becomes several frames, empty input none).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use ptysession::WindowSize;
    /// use ptysession::framing::ClientFrame;
    ///
    /// let mut wire = BytesMut::new();
    /// ClientFrame::Resize(WindowSize::new(40, 120)).encode(&mut wire);
    /// assert_eq!(&wire[..], b"\x12\x00\x00\x00\x04\x00\x28\x00\x78");
    /// assert_eq!(ClientFrame::decode(&mut wire)?, Some(ClientFrame::Resize(WindowSize::new(40, 120))));
    /// # Ok::<(), ptysession::Error>(())
    /// ```
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Self::Input(data) => put_data(dst, tag::INPUT, data),
            Self::Resize(size) => {
                put_header(dst, tag::RESIZE, 4);
                dst.put_u16(size.rows);
                dst.put_u16(size.cols);
            }
            Self::Detach => put_header(dst, tag::DETACH, 0),
            Self::Repaint => put_header(dst, tag::REPAINT, 0),
        }
    }

    /// Takes one frame off the front of `src`; `Ok(None)` while `src` does
    /// not yet hold a whole frame.
    ///
    /// # Errors
    ///
    /// [`Error::Frame`] for an unknown tag, a malformed payload or a length
    /// over [`MAX_PAYLOAD_BYTES`].
    pub fn decode(src: &mut BytesMut) -> Result<Option<Self>, Error> {
        let Some((tag, mut payload)) = take_frame(src)? else { return Ok(None) };
        let frame = match tag {
            tag::INPUT => Self::Input(payload),
            tag::RESIZE => {
                expect_len(tag, &payload, 4)?;
                let rows = payload.get_u16();
                Self::Resize(WindowSize::new(rows, payload.get_u16()))
            }
            tag::DETACH => {
                expect_len(tag, &payload, 0)?;
                Self::Detach
            }
            tag::REPAINT => {
                expect_len(tag, &payload, 0)?;
                Self::Repaint
            }
            tag => return Err(frame_error(format!("unknown client frame tag {tag:#04x}"))),
        };
        Ok(Some(frame))
    }
}

/// Reads until `decode` yields a frame; `Ok(None)` at a clean end of stream
/// (between frames).
///
/// Cancel safe: bytes read are kept in `buf` for the next call.
async fn read_frame<R, F>(
    reader: &mut R,
    buf: &mut BytesMut,
    decode: fn(&mut BytesMut) -> Result<Option<F>, Error>,
) -> Result<Option<F>, Error>
where
    R: AsyncRead + Unpin,
{
    loop {
        if let Some(frame) = decode(buf)? {
            return Ok(Some(frame));
        }
        buf.reserve(8 * 1024);
        if reader.read_buf(buf).await.map_err(Error::Connection)? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(Error::Connection(std::io::ErrorKind::UnexpectedEof.into()))
            };
        }
    }
}

/// How [`serve_client`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServeOutcome {
    /// The command exited; the client was sent `Exited`.
    Exited(ExitStatus),
    /// The session detached the client; it was sent `Detached`.
    Detached(DetachReason),
    /// The client sent `Detach`.
    ClientDetached,
    /// The client closed its side of the connection.
    ClientDisconnected,
}

/// Serves one attached client over `connection` with the framing above:
/// sends the replay and `ReplayEnd`, then output as it comes, and finally
/// the exit status or the reason for detaching; meanwhile writes the
/// client's input to the terminal and applies its resizes.
///
/// For an attachment that restores the screen
/// ([`Attachment::restores_screen`]), the replay is the repaint; a later
/// repaint (after the client fell behind) goes out as output.
///
/// Pass `&mut connection` to keep the connection afterwards. A slow
/// connection never slows the session: the client's queue fills and it is
/// detached as lagged (and told so), or, restoring the screen, gets a
/// fresh repaint.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ptysession::Error> {
/// use std::process::Command;
/// use ptysession::framing::{self, ServeOutcome, ServerFrame};
/// use ptysession::{ExitStatus, Options, Session};
///
/// let mut command = Command::new("sh");
/// command.args(["-c", "read line; echo got $line; exit 4"]);
/// let session = Session::spawn(command, Options::new())?;
/// let (server_side, client_side) = tokio::io::duplex(64 * 1024);
/// let served = tokio::spawn(framing::serve_client(session.attach(None)?, server_side));
///
/// let (mut frames, mut writer) = framing::client(client_side);
/// writer.input(b"it\n").await?;
/// let mut output = Vec::new();
/// let status = loop {
///     match frames.next().await? {
///         Some(ServerFrame::Replay(data) | ServerFrame::Output(data)) => output.extend_from_slice(&data),
///         Some(ServerFrame::Exited(status)) => break status,
///         Some(_) => {}
///         None => panic!("the server hung up"),
///     }
/// };
/// assert!(String::from_utf8_lossy(&output).contains("got it"));
/// assert_eq!(status, ExitStatus::Code(4));
/// assert_eq!(served.await.unwrap()?, ServeOutcome::Exited(ExitStatus::Code(4)));
/// session.close().await;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Connection`] when reading or writing the connection fails,
/// [`Error::Frame`] when the client breaks the framing. The client is
/// detached either way.
///
/// # Cancel safety
///
/// Dropping the future detaches the client; a frame may be cut off midway.
pub async fn serve_client<C>(attachment: Attachment, connection: C) -> Result<ServeOutcome, Error>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (reader, writer) = tokio::io::split(connection);
    serve_client_with(attachment, reader, WriteSink(writer), ServeOptions::new(), std::future::pending()).await
}

/// Where [`serve_client_with`] sends the frames it encodes.
///
/// [`WriteSink`] sends them to any `AsyncWrite`; a transport that can keep
/// a buffer without copying it (a send queue of [`Bytes`]) implements
/// this itself and takes each batch as it is.
pub trait FrameSink {
    /// Sends `frames` (whole encoded frames, in order) and flushes them.
    fn send(&mut self, frames: Bytes) -> impl Future<Output = std::io::Result<()>>;
}

/// A [`FrameSink`] over any `AsyncWrite`: writes every batch and flushes.
#[derive(Debug)]
pub struct WriteSink<W>(pub W);

impl<W: AsyncWrite + Unpin> FrameSink for WriteSink<W> {
    async fn send(&mut self, frames: Bytes) -> std::io::Result<()> {
        self.0.write_all(&frames).await?;
        self.0.flush().await
    }
}

/// How [`serve_client_with`] serves a client.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct ServeOptions {
    read_only: bool,
}

impl ServeOptions {
    /// Input is delivered to the session.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the client's input frames and drops them: the client sees the
    /// session and may resize it, detach, or ask for a repaint, but types
    /// nothing into it.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }
}

/// As [`serve_client`], over a connection already split into `reader`
/// and `sink`: each batch of encoded frames goes to the sink as one
/// [`Bytes`]. `options` can make the client read-only; when `detach`
/// completes (e.g. another client displaced this one), the client is sent
/// `Detached` with its reason after the output already encoded, and
/// serving ends with [`ServeOutcome::Detached`].
///
/// # Errors
///
/// As [`serve_client`].
///
/// # Cancel safety
///
/// As [`serve_client`].
pub async fn serve_client_with<R, S, D>(
    attachment: Attachment,
    mut reader: R,
    mut sink: S,
    options: ServeOptions,
    detach: D,
) -> Result<ServeOutcome, Error>
where
    R: AsyncRead + Unpin,
    S: FrameSink,
    D: Future<Output = DetachReason>,
{
    // A client restoring the screen gets the repaint as its replay.
    let (replay, first, mut events, input) = attachment.into_view().await;
    let mut out = BytesMut::new();
    ServerFrame::Replay(replay).encode(&mut out);
    ServerFrame::ReplayEnd.encode(&mut out);
    let early_end = first.and_then(|event| encode_event(event, &mut out));
    send(&mut sink, &mut out).await?;
    if let Some(end) = early_end {
        return Ok(end);
    }

    let outgoing = async {
        let mut detach = std::pin::pin!(detach);
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                reason = &mut detach => Some(Event::Detached(reason)),
            };
            let Some(event) = event else { return Ok(ServeOutcome::Detached(DetachReason::Closed)) };
            let mut end = encode_event(event, &mut out);
            while end.is_none() && out.len() < WRITE_BATCH_BYTES {
                match events.try_next() {
                    Some(event) => end = encode_event(event, &mut out),
                    None => break,
                }
            }
            send(&mut sink, &mut out).await?;
            if let Some(end) = end {
                return Ok(end);
            }
        }
    };
    let incoming = async {
        let mut buf = BytesMut::new();
        loop {
            match read_frame(&mut reader, &mut buf, ClientFrame::decode).await? {
                None => return Ok(ServeOutcome::ClientDisconnected),
                Some(ClientFrame::Detach) => return Ok(ServeOutcome::ClientDetached),
                // A closed session ends the outgoing side with its status.
                Some(ClientFrame::Input(data)) => {
                    if !options.read_only {
                        let _ = input.write(data).await;
                    }
                }
                // Refusals are counted in the session's stats; a detached
                // client is about to be told why.
                Some(ClientFrame::Resize(size)) => {
                    let _ = input.resize(size);
                }
                // Without a screen model there is nothing to repaint.
                Some(ClientFrame::Repaint) => {
                    #[cfg(feature = "screen")]
                    let _ = input.request_repaint();
                }
            }
        }
    };
    tokio::select! {
        outcome = outgoing => outcome,
        outcome = incoming => outcome,
    }
}

/// Encodes an event; returns how serving ends if it is the final one.
fn encode_event(event: Event, out: &mut BytesMut) -> Option<ServeOutcome> {
    match event {
        // A repaint (a client that fell behind) draws over whatever the
        // terminal shows: to the client it is output like any other.
        Event::Output(data) | Event::Repaint(data) => {
            ServerFrame::Output(data).encode(out);
            None
        }
        Event::Exited(status) => {
            ServerFrame::Exited(status).encode(out);
            Some(ServeOutcome::Exited(status))
        }
        Event::Detached(reason) => {
            ServerFrame::Detached(reason).encode(out);
            Some(ServeOutcome::Detached(reason))
        }
    }
}

async fn send<S: FrameSink>(sink: &mut S, out: &mut BytesMut) -> Result<(), Error> {
    sink.send(out.split().freeze()).await.map_err(Error::Connection)
}

/// The client side of a connection served by [`serve_client`]: its frame
/// reader and its frame writer, usable from different tasks.
///
/// See [`serve_client`] for an example.
pub fn client<C>(connection: C) -> (ClientReader<ReadHalf<C>>, ClientWriter<WriteHalf<C>>)
where
    C: AsyncRead + AsyncWrite,
{
    let (reader, writer) = tokio::io::split(connection);
    (ClientReader::new(reader), ClientWriter::new(writer))
}

/// Reads [`ServerFrame`]s from a connection served by [`serve_client`].
#[derive(Debug)]
pub struct ClientReader<R> {
    reader: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> ClientReader<R> {
    /// Reads frames from `reader`.
    pub fn new(reader: R) -> Self {
        Self { reader, buf: BytesMut::new() }
    }

    /// The next frame; `None` when the server closed the connection between
    /// frames.
    ///
    /// # Errors
    ///
    /// [`Error::Connection`] when reading fails or the connection ends
    /// inside a frame, [`Error::Frame`] for a malformed frame.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: bytes already read are kept for the next call.
    pub async fn next(&mut self) -> Result<Option<ServerFrame>, Error> {
        read_frame(&mut self.reader, &mut self.buf, ServerFrame::decode).await
    }

    /// The underlying reader (bytes read but not yet decoded are dropped).
    pub fn into_inner(self) -> R {
        self.reader
    }
}

/// Writes [`ClientFrame`]s to a connection served by [`serve_client`].
/// Every method writes whole frames and flushes.
#[derive(Debug)]
pub struct ClientWriter<W> {
    writer: W,
    buf: BytesMut,
}

impl<W: AsyncWrite + Unpin> ClientWriter<W> {
    /// Writes frames to `writer`.
    pub fn new(writer: W) -> Self {
        Self { writer, buf: BytesMut::new() }
    }

    /// Sends a frame.
    ///
    /// # Errors
    ///
    /// [`Error::Connection`] when writing fails.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped future may have written part of a frame,
    /// after which the connection cannot be used.
    pub async fn send(&mut self, frame: &ClientFrame) -> Result<(), Error> {
        self.buf.clear();
        frame.encode(&mut self.buf);
        self.writer.write_all(&self.buf).await.map_err(Error::Connection)?;
        self.writer.flush().await.map_err(Error::Connection)
    }

    /// Sends input for the terminal, as one chunk.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// # Cancel safety
    ///
    /// As [`send`](Self::send).
    pub async fn input(&mut self, data: &[u8]) -> Result<(), Error> {
        self.send(&ClientFrame::Input(Bytes::copy_from_slice(data))).await
    }

    /// Sends the client's window size.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// # Cancel safety
    ///
    /// As [`send`](Self::send).
    pub async fn resize(&mut self, size: WindowSize) -> Result<(), Error> {
        self.send(&ClientFrame::Resize(size)).await
    }

    /// Leaves the session (it keeps running); the server stops serving.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// # Cancel safety
    ///
    /// As [`send`](Self::send).
    pub async fn detach(&mut self) -> Result<(), Error> {
        self.send(&ClientFrame::Detach).await
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.writer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_survives_a_round_trip_fed_byte_by_byte() {
        let server = [
            ServerFrame::Replay(Bytes::from_static(b"scroll")),
            ServerFrame::ReplayEnd,
            ServerFrame::Output(Bytes::from_static(b"\x00\xff\x1b[0m")),
            ServerFrame::Exited(ExitStatus::Code(-1)),
            ServerFrame::Exited(ExitStatus::Signal(9)),
            ServerFrame::Detached(DetachReason::Lagged { queue_bytes: 1 << 40 }),
            ServerFrame::Detached(DetachReason::Closed),
            ServerFrame::Detached(DetachReason::Displaced),
            ServerFrame::Detached(DetachReason::Requested),
        ];
        let mut wire = BytesMut::new();
        for frame in &server {
            frame.encode(&mut wire);
        }
        let mut src = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in wire {
            src.put_u8(byte);
            if let Some(frame) = ServerFrame::decode(&mut src).unwrap() {
                decoded.push(frame);
            }
        }
        assert_eq!(decoded, server);

        let client = [
            ClientFrame::Input(Bytes::from_static(b"ls\r")),
            ClientFrame::Resize(WindowSize::new(u16::MAX, 1)),
            ClientFrame::Detach,
            ClientFrame::Repaint,
        ];
        let mut wire = BytesMut::new();
        for frame in &client {
            frame.encode(&mut wire);
        }
        let mut decoded = Vec::new();
        while let Some(frame) = ClientFrame::decode(&mut wire).unwrap() {
            decoded.push(frame);
        }
        assert_eq!(decoded, client);
    }

    #[test]
    fn long_payloads_are_split_and_empty_ones_vanish() {
        let data = Bytes::from(vec![7u8; MAX_PAYLOAD_BYTES * 2 + 3]);
        let mut wire = BytesMut::new();
        ServerFrame::Output(data.clone()).encode(&mut wire);
        ServerFrame::Output(Bytes::new()).encode(&mut wire);
        let mut joined = Vec::new();
        let mut frames = 0;
        while let Some(ServerFrame::Output(piece)) = ServerFrame::decode(&mut wire).unwrap() {
            joined.extend_from_slice(&piece);
            frames += 1;
        }
        assert_eq!((frames, joined.len()), (3, data.len()));
        assert!(wire.is_empty());
    }

    #[test]
    fn malformed_frames_are_refused() {
        let cases: [&[u8]; 6] = [
            b"\x7f\x00\x00\x00\x00",
            b"\x01\x7f\xff\xff\xff",
            b"\x04\x00\x00\x00\x01\x00",
            b"\x04\x00\x00\x00\x05\x09\x00\x00\x00\x00",
            b"\x05\x00\x00\x00\x01\x07",
            b"\x11\x00\x00\x00\x00",
        ];
        for case in &cases[..5] {
            let result = ServerFrame::decode(&mut BytesMut::from(*case));
            assert!(matches!(result, Err(Error::Frame { .. })), "{case:?}: {result:?}");
        }
        // A client frame is not a server frame, and the other way round.
        assert!(ServerFrame::decode(&mut BytesMut::from(cases[5])).is_err());
        assert!(ClientFrame::decode(&mut BytesMut::from(&b"\x01\x00\x00\x00\x00"[..])).is_err());
        assert!(ClientFrame::decode(&mut BytesMut::from(&b"\x12\x00\x00\x00\x03abc"[..])).is_err());
    }
}
