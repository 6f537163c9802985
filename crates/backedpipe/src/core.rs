//! The sans-IO protocol core: sequence numbers, the replay buffer,
//! framing, acknowledgements, keepalive timers and the connection state
//! machine, with no I/O, no async runtime and no clock of its own.
//!
//! A [`Core`] is one end of a pipe. It is told about the world through its
//! inputs and says what to do through its outputs:
//!
//! | inputs | outputs |
//! | --- | --- |
//! | [`Core::connect`] / [`Core::accept`] / [`Core::accept_with_hello`]: a new connection | [`Core::poll_transmit`] + [`Core::transmitted`]: bytes to write to a connection |
//! | [`Core::handle_read`], or [`Core::recv_target`] + [`Core::recv_done`]: bytes read from a connection | [`Core::read`]: received application bytes; [`Core::direct_read_len`] + [`Core::direct_read_done`] to read them straight into the caller's buffer |
//! | [`Core::connection_lost`]: a connection failed or ended | [`Core::poll_event`]: connected, connection closed, readable, writable, failed |
//! | [`Core::handle_timeout`]: time passed | [`Core::poll_timeout`]: when to call `handle_timeout` next |
//! | [`Core::write`], [`Core::shutdown_write`], [`Core::close`]: the application | [`Core::state`], [`Core::stats`], sequence numbers |
//!
//! Every connection is named by the [`Generation`] its attempt got; input
//! for a generation the core no longer uses is ignored, so a late error from
//! an old connection can never disturb the new one.
//!
//! # Example
//!
//! Two cores joined by hand, with no runtime, no socket and no task: an
//! active and a passive core, connected by moving each one's transmits
//! into the other. A driver does the same with a transport in between
//! (and calls [`Core::handle_timeout`] as [`Core::poll_timeout`] says).
//! This builds without the crate's `tokio` feature.
//!
//! ```
//! use std::time::Instant;
//! use backedpipe::Options;
//! use backedpipe::core::{ConnectionState, Core, Event, Generation, ReadOutcome};
//! use backedpipe::proto::{Nonce, SessionId};
//!
//! /// Moves what `from` wants to send on its connection `g` into `to`'s
//! /// connection `h`, as a transport would; returns the bytes moved.
//! fn shuttle(now: Instant, from: &mut Core, g: Generation, to: &mut Core, h: Generation) -> usize {
//!     let mut moved = 0;
//!     while let Some(transmit) = from.poll_transmit(g) {
//!         if transmit.is_empty() {
//!             break;
//!         }
//!         let bytes = transmit.parts().concat(); // a transport takes `io_slices()`
//!         from.transmitted(now, g, bytes.len());
//!         to.handle_read(now, h, &bytes);
//!         moved += bytes.len();
//!     }
//!     moved
//! }
//!
//! let now = Instant::now(); // the caller's clock: the core reads none
//! let mut client = Core::active(Options::new());
//! let mut server = Core::passive(Options::new(), SessionId::random());
//! client.write(b"hello")?; // taken before any connection exists
//!
//! let g = client.connect(now, Nonce::random())?; // queues HELLO
//! let h = server.accept(now, Nonce::random())?; // waits for HELLO
//! // HELLO, WELCOME and PROOF, then the bytes: until nothing moves.
//! while shuttle(now, &mut client, g, &mut server, h) + shuttle(now, &mut server, h, &mut client, g) > 0 {}
//!
//! for core in [&mut client, &mut server] {
//!     assert_eq!(core.state(), ConnectionState::Connected);
//!     assert!(matches!(core.poll_event(), Some(Event::Connected { resumed: false, .. })));
//! }
//! assert_eq!(client.session_id(), server.session_id());
//!
//! let mut buf = [0; 16];
//! assert!(matches!(server.read(&mut buf), ReadOutcome::Data(5)));
//! assert_eq!(&buf[..5], b"hello");
//!
//! // And back the other way, over the same connection.
//! server.write(b"world")?;
//! while shuttle(now, &mut server, h, &mut client, g) + shuttle(now, &mut client, g, &mut server, h) > 0 {}
//! assert!(matches!(client.read(&mut buf), ReadOutcome::Data(5)));
//! assert_eq!(&buf[..5], b"world");
//!
//! // The client acknowledges within its ack delay: time is an input too.
//! assert_eq!(server.acked_seq(), 0);
//! let later = client.poll_timeout().expect("an acknowledgement is due");
//! client.handle_timeout(later);
//! shuttle(later, &mut client, g, &mut server, h);
//! assert_eq!(server.acked_seq(), 5);
//! # Ok::<(), backedpipe::Error>(())
//! ```
//!
//! # Polling order
//!
//! After any input: drain [`Core::poll_event`] (drop the transport of every
//! `ConnectionClosed`), then for each live connection write what
//! [`Core::poll_transmit`] returns until it returns `None` or the transport
//! would block (reporting each write with [`Core::transmitted`]), then arm a
//! timer for [`Core::poll_timeout`].
//!
//! Between [`Core::poll_transmit`] and [`Core::transmitted`] for one
//! connection, nothing else is called, unless the caller first lends the
//! transmit with [`Core::lend_transmit`]: it may then write without holding
//! the core (from its own copy of the bytes, say) while other inputs go on;
//! only one transmit per connection is out at a time.
//!
//! # Time
//!
//! Time is an input: every method that needs it takes `now`. The caller
//! passes a monotonic clock (`Instant::now()` in production, a virtual clock
//! in tests), never going backwards, and calls [`Core::handle_timeout`] no
//! later than what [`Core::poll_timeout`] last said (calling it early or
//! often is harmless).

use std::collections::VecDeque;
use std::fmt;
use std::io::IoSlice;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::Error;
use crate::options::{Options, Secret};
use crate::proto::{
    self, AuthMethod, Control, DecodeError, ErrorCode, FLAG_EOS_RECEIVED, FLAG_UNCONFIRMED, FrameHeader, FrameKind,
    HEADER_LEN, Hello, MAX_HANDSHAKE_LEN, Nonce, SessionId, Welcome,
};
use crate::recv_buffer::RecvBuffer;
use crate::send_queue::SendQueue;

/// The number of a connection attempt; it increases with every attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Generation(pub u64);

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Which side of the handshake a core plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Dials, sends HELLO.
    Active,
    /// Is handed connections, answers with WELCOME.
    Passive,
}

/// The pipe's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectionState {
    /// No connection and no handshake in progress.
    Disconnected,
    /// A handshake is in progress and no connection is current.
    Handshaking,
    /// A connection carries the stream.
    Connected,
    /// Closed or failed; nothing more happens.
    Closed,
}

/// How a passive core's first handshake stands: what a server asks before
/// it enters a new session in its table (see [`Core::first_handshake`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FirstHandshake {
    /// A handshake is under way and none has completed yet.
    UnderWay,
    /// A handshake completed: the session exists for both sides.
    Completed,
    /// No handshake completed and none is under way (every connection
    /// ended or was refused), or the core has ended: nothing can complete
    /// one any more unless another connection is handed to it.
    Failed,
}

/// What the core reports to its driver.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A handshake completed; `generation` is now the current connection.
    Connected {
        /// The new current connection.
        generation: Generation,
        /// Whether an earlier connection of the same session existed.
        resumed: bool,
    },
    /// The core is done with this connection: drop its transport.
    ConnectionClosed {
        /// The connection to drop.
        generation: Generation,
    },
    /// Application bytes, end of stream or an error can be read.
    Readable,
    /// The application may write again (space was freed, or the pipe
    /// ended), or a shutdown completed.
    Writable,
    /// The pipe failed for good.
    Failed(Error),
}

/// What a read of the core's received bytes found.
#[derive(Debug, Clone)]
pub enum ReadOutcome {
    /// This many bytes were copied.
    Data(usize),
    /// The peer ended its stream and every byte has been read.
    EndOfStream,
    /// Nothing to read yet.
    Pending,
    /// The pipe failed or was closed.
    Failed(Error),
}

/// Counters; see [`Core::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoreStats {
    /// Application bytes transmitted, replays included.
    pub bytes_sent: u64,
    /// Application bytes received (duplicates skipped on resume excluded).
    pub bytes_received: u64,
    /// Application bytes transmitted again after a reconnect.
    pub bytes_replayed: u64,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Connections that ended before their handshake completed, or were
    /// rejected by it.
    pub failed_handshakes: u64,
}

/// Bytes to write to one connection, in order: hand them to a vectored
/// write, then report how many were written with [`Core::transmitted`].
#[derive(Debug)]
pub struct Transmit<'a> {
    parts: [&'a [u8]; 3],
    /// The send buffer's chunks that `parts[1]` and `parts[2]` lie in.
    owners: [Option<&'a Bytes>; 2],
    payload_seq: Option<u64>,
}

impl<'a> Transmit<'a> {
    /// The parts, in order (some may be empty).
    pub fn parts(&self) -> &[&'a [u8]; 3] {
        &self.parts
    }

    /// For DATA: the stream sequence number of the first payload byte
    /// (`parts()[1]`, then `parts()[2]`, follow `parts()[0]`: the rest of
    /// the frame header, after the control frames that go in the same
    /// write, if any). `None` for control frames alone.
    pub fn payload_seq(&self) -> Option<u64> {
        self.payload_seq
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|part| part.len()).sum()
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The parts as `IoSlice`s for `write_vectored`.
    pub fn io_slices(&self) -> [IoSlice<'a>; 3] {
        self.parts.map(IoSlice::new)
    }

    /// The payload parts (`parts()[1]` and `parts()[2]`) as shared
    /// references to the send buffer's chunks: a caller can write them
    /// after it lets go of the core (see [`Core::lend_transmit`]) without
    /// a copy. Empty for control frames.
    pub fn payload_bytes(&self) -> [Bytes; 2] {
        let share = |owner: Option<&Bytes>, part: &[u8]| match owner {
            Some(owner) => owner.slice_ref(part),
            None => Bytes::copy_from_slice(part),
        };
        [share(self.owners[0], self.parts[1]), share(self.owners[1], self.parts[2])]
    }
}

/// Pending connections kept at once on the passive side; the oldest is
/// dropped when another arrives.
const MAX_PENDING: usize = 4;
/// How long a connection may take to flush an ERROR frame before it is
/// dropped anyway.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// How long a connection that failed for writing is still read (for a
/// report the peer sent before it closed) before it is given up.
pub const LAST_WORDS_WAIT: Duration = Duration::from_millis(250);

const SERVER_LABEL: &[u8] = b"backedpipe/2 server proof";
const CLIENT_LABEL: &[u8] = b"backedpipe/2 client proof";

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &Secret, label: &[u8], hello: &[u8], welcome_signed: &[u8]) -> Option<HmacSha256> {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.bytes()).ok()?;
    mac.update(label);
    // Bounded by MAX_HANDSHAKE_LEN, so it fits.
    mac.update(&(hello.len() as u16).to_be_bytes());
    mac.update(hello);
    mac.update(welcome_signed);
    Some(mac)
}

fn make_proof(secret: &Secret, label: &[u8], hello: &[u8], welcome_signed: &[u8]) -> Vec<u8> {
    mac(secret, label, hello, welcome_signed).map(|mac| mac.finalize().into_bytes().to_vec()).unwrap_or_default()
}

/// Constant-time check of `proof`.
fn verify_proof(secret: &Secret, label: &[u8], hello: &[u8], welcome_signed: &[u8], proof: &[u8]) -> bool {
    mac(secret, label, hello, welcome_signed).is_some_and(|mac| mac.verify_slice(proof).is_ok())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Active: HELLO queued, waiting for WELCOME.
    AwaitWelcome,
    /// Passive: waiting for HELLO.
    AwaitHello,
    /// Passive: WELCOME queued, waiting for PROOF.
    AwaitProof,
    /// Current connection carrying the stream.
    Connected,
    /// Flushing a final ERROR frame; input is ignored.
    Closing,
}

/// Where the incoming byte stream of a connection is.
#[derive(Debug)]
enum RxState {
    /// Collecting a frame header.
    Header { have: usize },
    /// Collecting the payload of a non-DATA frame.
    Body { kind: FrameKind, len: usize, have: usize },
    /// Inside a DATA payload.
    Payload { remaining: usize },
}

/// A DATA frame being transmitted.
#[derive(Debug)]
struct TxFrame {
    header: [u8; HEADER_LEN],
    header_sent: usize,
    /// One past the last payload byte.
    end: u64,
    started: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    Ctrl,
    Frame,
    /// Control frames (`ctrl` bytes of them) and then the start of a DATA
    /// frame, in one write (see [`Conn::head`]).
    Both {
        ctrl: usize,
    },
}

#[derive(Debug)]
struct Conn {
    generation: Generation,
    phase: Phase,
    rx: RxState,
    header_buf: [u8; HEADER_LEN],
    body_buf: [u8; MAX_HANDSHAKE_LEN],
    ctrl: Vec<u8>,
    ctrl_sent: usize,
    /// The pending control frames followed by the next DATA header, so
    /// that both go in one write (one wake-up of the peer, not two).
    head: Vec<u8>,
    frame: Option<TxFrame>,
    last: Option<Last>,
    /// Next payload byte to transmit.
    tx_seq: u64,
    /// Duplicate bytes to drop from the start of the peer's replay.
    rx_skip: u64,
    /// Our reader sequence number as announced in this handshake.
    announced_recv: u64,
    max_payload_out: u32,
    ack_every: u64,
    last_ack_sent: u64,
    ack_eos_sent: bool,
    ack_deadline: Option<Instant>,
    ack_now: bool,
    want_pong: Option<u64>,
    want_ping: bool,
    ping_sent: bool,
    eos_sent: bool,
    last_rx: Instant,
    deadline: Option<Instant>,
    /// Writing failed: nothing more is sent; input is still taken until
    /// the connection ends or `deadline` passes.
    write_failed: bool,
    /// What `poll_transmit` last returned is being written without the
    /// core (see [`Core::lend_transmit`]).
    lent: bool,
    /// A report (and the phase the connection was in) that waits for the
    /// lent transmit to be accounted for.
    deferred_report: Option<(ErrorCode, String, Phase)>,
    nonce: Nonce,
    hello: Option<Hello>,
    welcome_signed: Vec<u8>,
}

impl Conn {
    fn new(generation: Generation, phase: Phase, now: Instant, nonce: Nonce, deadline: Instant) -> Conn {
        Conn {
            generation,
            phase,
            rx: RxState::Header { have: 0 },
            header_buf: [0; HEADER_LEN],
            body_buf: [0; MAX_HANDSHAKE_LEN],
            ctrl: Vec::new(),
            ctrl_sent: 0,
            head: Vec::new(),
            frame: None,
            last: None,
            tx_seq: 0,
            rx_skip: 0,
            announced_recv: 0,
            max_payload_out: 1,
            ack_every: 1,
            last_ack_sent: 0,
            ack_eos_sent: false,
            ack_deadline: None,
            ack_now: false,
            want_pong: None,
            want_ping: false,
            ping_sent: false,
            eos_sent: false,
            last_rx: now,
            deadline: Some(deadline),
            write_failed: false,
            lent: false,
            deferred_report: None,
            nonce,
            hello: None,
            welcome_signed: Vec::new(),
        }
    }

    fn ctrl_pending(&self) -> bool {
        self.ctrl_sent < self.ctrl.len()
    }

    fn queue(&mut self, control: &Control) {
        control.encode_into(&mut self.ctrl);
    }
}

/// Why a connection is being dropped.
enum Drop {
    /// Silently.
    Quiet,
    /// After sending an ERROR frame.
    Report(ErrorCode, String),
}

/// The current connection was lost, and the pipe may be back soon: writes
/// stay bounded by `max_unsent_bytes` beyond what the lost connection had
/// taken, until a handshake completes, one fails, or the grace passes.
#[derive(Debug, Clone, Copy)]
struct Loss {
    /// When the connection was lost.
    since: Instant,
    /// What the lost connection had taken (its next byte to send).
    sent_seq: u64,
}

/// Local end of stream.
#[derive(Debug, Default, Clone, Copy)]
struct Shutdown {
    requested: bool,
    acked: bool,
}

/// One end of a pipe, without I/O. See the [module documentation](self).
pub struct Core {
    role: Role,
    options: Options,
    auth: AuthMethod,
    session_id: SessionId,
    /// A handshake completed on this side.
    established: bool,
    /// Active side: a frame other than ERROR arrived on a connection after
    /// this side's PROOF, so the server verified a PROOF and holds the
    /// session. Until then the session id is sent with
    /// [`FLAG_UNCONFIRMED`].
    confirmed: bool,
    next_generation: u64,
    /// Passive side: the highest client attempt number promoted so far.
    peer_attempt: u64,
    send: SendQueue,
    /// The peer's highest acknowledgement. The send buffer may still hold
    /// acknowledged bytes the current connection has to transmit (see
    /// [`Core::trim_acked`]).
    acked: u64,
    recv_seq: u64,
    recv: RecvBuffer,
    sent_high: u64,
    shutdown: Shutdown,
    peer_eos: Option<u64>,
    /// A brief loss: the write-ahead bound still holds (see
    /// [`Core::write_capacity`]).
    loss: Option<Loss>,
    current: Option<Conn>,
    pending: Vec<Conn>,
    closing: Vec<Conn>,
    /// Close reports given up on (their connection stayed blocked).
    abandoned_reports: u64,
    /// Bytes written and received at the previous `handle_timeout`.
    idle_marks: (u64, u64),
    /// At the last `handle_timeout`, nothing had been written or received
    /// since the one before, and nothing was unacknowledged.
    quiet: bool,
    closed: bool,
    failure: Option<Error>,
    events: VecDeque<Event>,
    readable: bool,
    writable: bool,
    stats: CoreStats,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("role", &self.role)
            .field("session_id", &self.session_id)
            .field("state", &self.state())
            .field("written", &self.send.end())
            .field("acked", &self.acked)
            .field("received", &self.recv_seq)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// The dialling side of a new session (its id comes from the peer).
    ///
    /// ```
    /// use backedpipe::core::{ConnectionState, Core};
    /// let core = Core::active(backedpipe::Options::new());
    /// assert_eq!(core.state(), ConnectionState::Disconnected);
    /// assert!(core.session_id().is_new());
    /// ```
    pub fn active(options: Options) -> Core {
        Core::new(Role::Active, options, SessionId::NEW)
    }

    /// The passive side of a session with the given id (assigned by the
    /// server, usually [`SessionId::random`]).
    ///
    /// ```
    /// use backedpipe::core::Core;
    /// use backedpipe::proto::SessionId;
    /// let id = SessionId::random();
    /// assert_eq!(Core::passive(backedpipe::Options::new(), id).session_id(), id);
    /// ```
    pub fn passive(options: Options, session_id: SessionId) -> Core {
        Core::new(Role::Passive, options, session_id)
    }

    fn new(role: Role, mut options: Options, session_id: SessionId) -> Core {
        options.max_payload_bytes = options.max_payload_bytes.clamp(1, proto::MAX_PAYLOAD_LIMIT);
        options.recv_buffer_bytes = options.recv_buffer_bytes.max(1);
        options.ack_interval_bytes = options.ack_interval_bytes.max(1);
        let auth = if options.secret.is_some() { AuthMethod::HmacSha256 } else { AuthMethod::None };
        Core {
            role,
            send: SendQueue::with_capacity(options.send_buffer_bytes),
            acked: 0,
            options,
            auth,
            session_id,
            established: false,
            confirmed: false,
            next_generation: 0,
            peer_attempt: 0,
            recv_seq: 0,
            recv: RecvBuffer::default(),
            sent_high: 0,
            shutdown: Shutdown::default(),
            peer_eos: None,
            loss: None,
            current: None,
            pending: Vec::new(),
            closing: Vec::new(),
            quiet: false,
            abandoned_reports: 0,
            idle_marks: (0, 0),
            closed: false,
            failure: None,
            events: VecDeque::new(),
            readable: false,
            writable: false,
            stats: CoreStats::default(),
        }
    }

    // ----- observation -------------------------------------------------

    /// Which side this core plays.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The session id ([`SessionId::NEW`] on the active side until the
    /// first handshake).
    pub fn session_id(&self) -> SessionId {
        self.session_id
    }

    /// Whether a handshake has completed on this side.
    pub fn is_established(&self) -> bool {
        self.established
    }

    /// Active side: whether the server has confirmed the session, i.e.
    /// sent a frame (other than ERROR) after this side's PROOF. Until then
    /// the server may not hold the session, and every HELLO carries
    /// [`FLAG_UNCONFIRMED`] with the session id. Always true on the
    /// passive side once a handshake completed.
    pub fn is_confirmed(&self) -> bool {
        match self.role {
            Role::Active => self.confirmed,
            Role::Passive => self.established,
        }
    }

    /// Passive side: how the first handshake stands. A server enters a
    /// new session in its table once this says
    /// [`FirstHandshake::Completed`], and forgets it (without a trace on
    /// the wire) if it says [`FirstHandshake::Failed`] while no further
    /// connection has been handed to it.
    ///
    /// ```
    /// use std::time::Instant;
    /// use backedpipe::core::{Core, FirstHandshake};
    /// use backedpipe::proto::{Nonce, SessionId};
    /// let now = Instant::now();
    /// let mut server = Core::passive(backedpipe::Options::new(), SessionId::random());
    /// assert_eq!(server.first_handshake(), FirstHandshake::Failed); // nothing to complete it
    /// let generation = server.accept(now, Nonce::random()).unwrap();
    /// assert_eq!(server.first_handshake(), FirstHandshake::UnderWay);
    /// server.connection_lost(now, generation);
    /// assert_eq!(server.first_handshake(), FirstHandshake::Failed);
    /// ```
    pub fn first_handshake(&self) -> FirstHandshake {
        if self.established {
            FirstHandshake::Completed
        } else if !self.closed && !self.pending.is_empty() {
            FirstHandshake::UnderWay
        } else {
            FirstHandshake::Failed
        }
    }

    /// The connection state.
    pub fn state(&self) -> ConnectionState {
        if self.closed {
            ConnectionState::Closed
        } else if self.current.is_some() {
            ConnectionState::Connected
        } else if !self.pending.is_empty() {
            ConnectionState::Handshaking
        } else {
            ConnectionState::Disconnected
        }
    }

    /// The current connection's generation, if connected.
    pub fn current_generation(&self) -> Option<Generation> {
        self.current.as_ref().map(|conn| conn.generation)
    }

    /// Every connection the core still uses: current, handshaking and
    /// closing ones.
    pub fn generations(&self) -> impl Iterator<Item = Generation> + '_ {
        self.current.iter().chain(&self.pending).chain(&self.closing).map(|conn| conn.generation)
    }

    /// The generation the next attempt will get.
    pub fn next_generation(&self) -> Generation {
        Generation(self.next_generation + 1)
    }

    /// Bytes written by the application (the next byte's sequence number).
    pub fn written_seq(&self) -> u64 {
        self.send.end()
    }

    /// Bytes the peer has acknowledged.
    pub fn acked_seq(&self) -> u64 {
        self.acked
    }

    /// Bytes received from the peer (read or buffered).
    pub fn recv_seq(&self) -> u64 {
        self.recv_seq
    }

    /// Received bytes waiting in the core's buffer.
    pub fn recv_buffered(&self) -> usize {
        self.recv.len()
    }

    /// Storage held by the send and receive buffers.
    pub fn allocated_bytes(&self) -> usize {
        self.send.allocated_bytes() + self.recv.allocated_bytes()
    }

    /// The failure that ended the pipe, if it failed.
    pub fn failure(&self) -> Option<&Error> {
        self.failure.as_ref()
    }

    /// Whether local end of stream was requested and the peer has
    /// acknowledged it together with every byte before it.
    pub fn is_shutdown_complete(&self) -> bool {
        self.shutdown.acked
    }

    /// Whether connections are still flushing their final ERROR frame
    /// (after [`Core::close`] or a reported failure).
    pub fn is_reporting(&self) -> bool {
        !self.closing.is_empty()
    }

    /// How many final ERROR frames were given up on because their
    /// connection did not take them within the close linger (1 s).
    pub fn abandoned_reports(&self) -> u64 {
        self.abandoned_reports
    }

    /// Whether the peer's end of stream has arrived.
    pub fn peer_ended(&self) -> bool {
        self.peer_eos.is_some()
    }

    /// Bytes written and not yet acknowledged (what the send buffer holds).
    pub fn unacked_bytes(&self) -> usize {
        self.send.len()
    }

    /// Whether every written byte (and a requested end of stream) has been
    /// handed to the current connection, with nothing else waiting to go.
    pub fn all_transmitted(&self) -> bool {
        self.current.as_ref().is_some_and(|conn| {
            conn.phase == Phase::Connected
                && !conn.write_failed
                && conn.tx_seq == self.send.end()
                && conn.frame.is_none()
                && !conn.ctrl_pending()
                && (!self.shutdown.requested || conn.eos_sent)
        })
    }

    /// Whether the stream was quiet at the last [`Core::handle_timeout`]
    /// (nothing written or received since the one before, nothing
    /// unacknowledged): the core then gave its buffers back, and so may
    /// whoever keeps storage for it. A write ends it.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// Counters.
    pub fn stats(&self) -> CoreStats {
        self.stats
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(event) = self.events.pop_front() {
            return Some(event);
        }
        if std::mem::take(&mut self.readable) {
            return Some(Event::Readable);
        }
        if std::mem::take(&mut self.writable) {
            return Some(Event::Writable);
        }
        None
    }

    // ----- application side ---------------------------------------------

    /// How many bytes [`Core::write`] would take now: the free space of the
    /// send buffer, and at most `max_unsent_bytes` not yet transmitted
    /// while connected, or after a loss while the pipe may be back soon
    /// (until a handshake completes or fails, or
    /// [`Options::reconnect_grace`] passes; [`Event::Writable`] says when),
    /// and at most [`Options::max_unacked_bytes`] unacknowledged while
    /// connected. Only a pipe that is really disconnected fills its send
    /// buffer towards the cap, so memory follows the bytes in flight.
    pub fn write_capacity(&self) -> usize {
        if self.closed || self.shutdown.requested {
            return 0;
        }
        let room = self.send.remaining_capacity();
        let (sent_seq, unacked_room) = match (&self.current, &self.loss) {
            (Some(conn), _) if conn.phase == Phase::Connected => {
                (conn.tx_seq, self.options.max_unacked_bytes.saturating_sub(self.unacknowledged()))
            }
            (_, Some(loss)) => (loss.sent_seq, usize::MAX),
            _ => return room,
        };
        let unsent = usize::try_from(self.send.end().saturating_sub(sent_seq)).unwrap_or(usize::MAX);
        room.min(self.options.max_unsent_bytes.saturating_sub(unsent)).min(unacked_room)
    }

    /// Written bytes the peer has not acknowledged (the send buffer may
    /// hold acknowledged bytes too, for a replay: see
    /// [`Core::trim_acked`]).
    fn unacknowledged(&self) -> usize {
        usize::try_from(self.send.end() - self.acked.clamp(self.send.start(), self.send.end())).unwrap_or(usize::MAX)
    }

    /// Whether [`Core::write_capacity`] is 0 for want of acknowledgements
    /// (the send buffer is full, or too much is unacknowledged while
    /// connected), not for want of a connection that takes the bytes: the
    /// peer's acknowledgement is what makes room.
    pub fn awaits_acknowledgements(&self) -> bool {
        let connected = self.current.as_ref().is_some_and(|conn| conn.phase == Phase::Connected);
        self.send.remaining_capacity() == 0 || (connected && self.unacknowledged() >= self.options.max_unacked_bytes)
    }

    /// The current connection is being dropped: writes stay bounded for a
    /// while (see [`Core::write_capacity`]).
    fn note_loss(&mut self, now: Instant, conn: &Conn) {
        if conn.phase == Phase::Connected && !self.closed {
            self.loss = Some(Loss { since: now, sent_seq: conn.tx_seq });
        }
    }

    /// The pipe is really disconnected: the send buffer may fill.
    fn end_loss(&mut self) {
        if self.loss.take().is_some() {
            self.writable = true;
        }
    }

    /// Appends application bytes to the stream; returns how many were taken
    /// (0 when [`Core::write_capacity`] is 0: wait for [`Event::Writable`]).
    ///
    /// # Errors
    ///
    /// The failure if the pipe failed, [`Error::Closed`] after
    /// [`Core::close`], [`Error::WriteAfterShutdown`] after
    /// [`Core::shutdown_write`].
    pub fn write(&mut self, data: &[u8]) -> Result<usize, Error> {
        self.check_writable()?;
        let take = data.len().min(self.write_capacity());
        self.quiet &= take == 0;
        Ok(self.send.write_copy(&data[..take]))
    }

    /// As [`Core::write`], without a copy: the send buffer keeps (a prefix
    /// of) `chunk` itself until the peer acknowledges it, and
    /// [`Transmit::payload_bytes`] hands it out again. Returns how many
    /// bytes were taken, from the front of `chunk`. Chunks shorter than
    /// 1 KiB are copied (as [`Core::write`] does), so that small writes
    /// still travel in few frames.
    ///
    /// ```
    /// use backedpipe::core::Core;
    /// # use backedpipe::Options;
    /// let mut core = Core::active(Options::new());
    /// let taken = core.write_chunk(bytes::Bytes::from(vec![7; 64 << 10]))?;
    /// assert_eq!(taken, 64 << 10);
    /// assert_eq!(core.written_seq(), 64 << 10);
    /// # Ok::<(), backedpipe::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Core::write`].
    pub fn write_chunk(&mut self, chunk: Bytes) -> Result<usize, Error> {
        self.check_writable()?;
        let take = chunk.len().min(self.write_capacity());
        if take == 0 {
            return Ok(0);
        }
        self.quiet = false;
        let mut chunk = chunk;
        chunk.truncate(take);
        Ok(self.send.push_chunk(chunk))
    }

    fn check_writable(&self) -> Result<(), Error> {
        self.check_open()?;
        if self.shutdown.requested {
            return Err(Error::WriteAfterShutdown);
        }
        Ok(())
    }

    fn check_open(&self) -> Result<(), Error> {
        match (&self.failure, self.closed) {
            (Some(err), _) => Err(err.clone()),
            (None, true) => Err(Error::Closed),
            (None, false) => Ok(()),
        }
    }

    /// Requests end of stream: after every byte written so far, the peer is
    /// told that no more follow. Idempotent.
    ///
    /// # Errors
    ///
    /// As [`Core::write`] for a failed or closed pipe.
    pub fn shutdown_write(&mut self) -> Result<(), Error> {
        self.check_open()?;
        self.shutdown.requested = true;
        Ok(())
    }

    /// Copies received application bytes into `out`.
    pub fn read(&mut self, out: &mut [u8]) -> ReadOutcome {
        if self.closed && self.failure.is_none() {
            return ReadOutcome::Failed(Error::Closed);
        }
        if out.is_empty() {
            return ReadOutcome::Data(0);
        }
        let count = self.recv.read(out);
        if count > 0 {
            return ReadOutcome::Data(count);
        }
        if self.peer_eos.is_some() {
            return ReadOutcome::EndOfStream;
        }
        match &self.failure {
            Some(err) => ReadOutcome::Failed(err.clone()),
            None => ReadOutcome::Pending,
        }
    }

    /// Closes the pipe: every connection is told with an ERROR frame (code
    /// `Closed`) and dropped. Idempotent.
    pub fn close(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.closed = true;
        if let Some(conn) = self.current.take() {
            self.drop_conn(conn, now, Drop::Report(ErrorCode::Closed, "closed".into()));
        }
        for conn in std::mem::take(&mut self.pending) {
            self.drop_conn(conn, now, Drop::Report(ErrorCode::Closed, "closed".into()));
        }
        self.readable = true;
        self.writable = true;
    }

    /// Ends the pipe with `error` decided outside the core (e.g. the
    /// driver gave up reconnecting). Connections are dropped without a
    /// report. Nothing happens if the pipe has already ended.
    pub fn abort(&mut self, now: Instant, error: Error) {
        self.fail(now, error, Generation(0), None);
    }

    // ----- connections ----------------------------------------------------

    fn new_generation(&mut self) -> Generation {
        self.next_generation += 1;
        Generation(self.next_generation)
    }

    /// Active side: a new connection was dialled. Any current or pending
    /// connection is dropped (the dialler abandons the old connection before
    /// it says how much it has read), and HELLO is queued on the new one.
    ///
    /// # Errors
    ///
    /// The failure, or [`Error::Closed`], if the pipe has ended.
    pub fn connect(&mut self, now: Instant, nonce: Nonce) -> Result<Generation, Error> {
        self.check_open()?;
        if let Some(conn) = self.current.take() {
            self.note_loss(now, &conn);
            self.drop_conn(conn, now, Drop::Quiet);
        }
        for conn in std::mem::take(&mut self.pending) {
            self.drop_conn(conn, now, Drop::Quiet);
            self.stats.failed_handshakes += 1;
        }
        let generation = self.new_generation();
        let mut conn = Conn::new(generation, Phase::AwaitWelcome, now, nonce, now + self.options.handshake_timeout);
        // A session id the server has not confirmed may be unknown to it:
        // the flag lets it start the session under this id.
        let unconfirmed = if self.session_id.is_new() || self.confirmed { 0 } else { FLAG_UNCONFIRMED };
        let hello = Hello::new(self.auth, self.session_id, self.recv_seq, nonce)
            .with_attempt(generation.0)
            .with_flags(self.eos_flag() | unconfirmed)
            .with_limits(self.options.send_buffer_bytes as u64, self.options.max_payload_bytes);
        proto::encode_handshake(&mut conn.ctrl, FrameKind::Hello, hello.payload());
        conn.announced_recv = self.recv_seq;
        conn.hello = Some(hello);
        self.pending.push(conn);
        Ok(generation)
    }

    /// Passive side: a new connection arrived; the core waits for its HELLO.
    /// The current connection, if any, keeps carrying the stream until the
    /// new one has completed the handshake.
    ///
    /// # Errors
    ///
    /// The failure, or [`Error::Closed`], if the pipe has ended.
    pub fn accept(&mut self, now: Instant, nonce: Nonce) -> Result<Generation, Error> {
        self.check_open()?;
        if self.pending.len() >= MAX_PENDING {
            let oldest = self.pending.remove(0);
            self.stats.failed_handshakes += 1;
            self.drop_conn(oldest, now, Drop::Quiet);
        }
        let generation = self.new_generation();
        let conn = Conn::new(generation, Phase::AwaitHello, now, nonce, now + self.options.handshake_timeout);
        self.pending.push(conn);
        Ok(generation)
    }

    /// Passive side: as [`Core::accept`], for a connection whose HELLO the
    /// caller has already read (e.g. to route it to this session).
    ///
    /// # Errors
    ///
    /// As [`Core::accept`]. A HELLO this session must refuse is not an
    /// error of the pipe: an ERROR frame is queued on the new connection,
    /// which is then closed.
    pub fn accept_with_hello(&mut self, now: Instant, nonce: Nonce, hello: Hello) -> Result<Generation, Error> {
        let generation = self.accept(now, nonce)?;
        if let Some(index) = self.pending.iter().position(|conn| conn.generation == generation) {
            let conn = self.pending.remove(index);
            self.on_hello(conn, now, hello);
        }
        Ok(generation)
    }

    /// A connection failed or reached its end (EOF). Unknown or old
    /// generations are ignored.
    pub fn connection_lost(&mut self, now: Instant, generation: Generation) {
        if self.current.as_ref().is_some_and(|conn| conn.generation == generation) {
            if let Some(conn) = self.current.take() {
                self.note_loss(now, &conn);
                self.drop_conn(conn, now, Drop::Quiet);
            }
            self.trim_acked();
            self.writable = true;
            // Nothing is sent until the next connection: keep no more
            // replay memory than the unacknowledged bytes need (a session
            // may stay away for long). The receive buffer is bounded by its
            // configured size and is left alone: growing it again on the
            // next connection would cost the resume tens of microseconds.
            if self.send.allocated_bytes() > 2 * self.send.len() + (64 << 10) {
                self.send.shrink_to_fit();
            }
        } else if let Some(index) = self.pending.iter().position(|conn| conn.generation == generation) {
            let conn = self.pending.remove(index);
            self.stats.failed_handshakes += 1;
            self.drop_conn(conn, now, Drop::Quiet);
            // A reconnect attempt failed: the pipe may stay away.
            self.end_loss();
        } else if let Some(index) = self.closing.iter().position(|conn| conn.generation == generation) {
            self.closing.remove(index);
            self.events.push_back(Event::ConnectionClosed { generation });
        }
    }

    /// Writing to connection `generation` failed. The connection is not
    /// dropped yet: a peer that closed the pipe sent an ERROR frame before
    /// it went away, and a closed peer makes writes fail (a reset) while
    /// its last frames still wait to be read. Nothing more is written to
    /// it; what it still delivers is taken as usual until it ends
    /// ([`Core::connection_lost`]) or [`LAST_WORDS_WAIT`] passes. A closing
    /// connection (sending its own report) is dropped at once.
    pub fn write_failed(&mut self, now: Instant, generation: Generation) {
        let wait = now + LAST_WORDS_WAIT;
        let conn = match &mut self.current {
            Some(conn) if conn.generation == generation => conn,
            _ => match self.pending.iter_mut().find(|conn| conn.generation == generation) {
                Some(conn) => conn,
                None => return self.connection_lost(now, generation),
            },
        };
        if !conn.write_failed {
            conn.write_failed = true;
            conn.deadline = Some(conn.deadline.map_or(wait, |at| at.min(wait)));
        }
    }

    fn drop_conn(&mut self, mut conn: Conn, now: Instant, how: Drop) {
        match how {
            Drop::Report(..) if conn.write_failed => {
                self.events.push_back(Event::ConnectionClosed { generation: conn.generation });
            }
            Drop::Report(code, reason) if conn.lent => {
                // How much of the lent transmit went out is not known yet:
                // the report is queued once it is (see `transmitted`).
                conn.deferred_report = Some((code, reason, conn.phase));
                conn.phase = Phase::Closing;
                conn.deadline = Some(now + CLOSE_LINGER);
                self.closing.push(conn);
            }
            Drop::Report(code, reason) => {
                let phase = conn.phase;
                self.queue_report(conn, now, code, reason, phase);
            }
            Drop::Quiet => self.events.push_back(Event::ConnectionClosed { generation: conn.generation }),
        }
    }

    /// Queues the ERROR report that ends `conn` (which was in `phase`) and
    /// keeps the connection until it is written.
    fn queue_report(&mut self, mut conn: Conn, now: Instant, code: ErrorCode, reason: String, phase: Phase) {
        // Half a DATA frame on the wire is completed first (its bytes are
        // still in the send buffer), so that the report can follow it;
        // control frames already queued are whole and go next, with a last
        // acknowledgement.
        if let Some(frame) = conn.frame.take().filter(|frame| frame.started) {
            let Some(rest) = self.frame_rest(&conn, &frame) else {
                self.events.push_back(Event::ConnectionClosed { generation: conn.generation });
                return;
            };
            let queued = conn.ctrl.split_off(conn.ctrl_sent.min(conn.ctrl.len()));
            conn.ctrl = rest;
            conn.ctrl.extend_from_slice(&queued);
            conn.ctrl_sent = 0;
        }
        if phase == Phase::Connected {
            conn.ack_now = true;
            self.materialize_controls(&mut conn);
        }
        conn.queue(&Control::Error { code, reason });
        conn.phase = Phase::Closing;
        conn.deadline = Some(now + CLOSE_LINGER);
        conn.last = None;
        self.closing.push(conn);
    }

    /// The bytes of a started DATA frame not yet written (header and
    /// payload), or `None` if the send buffer no longer holds them.
    fn frame_rest(&self, conn: &Conn, frame: &TxFrame) -> Option<Vec<u8>> {
        let mut want = usize::try_from(frame.end.checked_sub(conn.tx_seq)?).ok()?;
        let mut rest = Vec::with_capacity(HEADER_LEN - frame.header_sent + want);
        rest.extend_from_slice(&frame.header[frame.header_sent..]);
        let mut seq = conn.tx_seq;
        while want > 0 {
            let slices = self.send.slices_from(seq)?;
            let before = want;
            for part in slices.parts {
                let take = want.min(part.len());
                rest.extend_from_slice(&part[..take]);
                want -= take;
            }
            if want == before {
                return None;
            }
            seq += (before - want) as u64;
        }
        Some(rest)
    }

    /// Ends the pipe with `error`; `report` goes to the peer on the
    /// connection `generation`.
    fn fail(&mut self, now: Instant, error: Error, generation: Generation, report: Option<(ErrorCode, String)>) {
        if self.closed {
            return;
        }
        tracing::debug!(%error, "pipe failed");
        self.closed = true;
        self.failure = Some(error.clone());
        let mut conns: Vec<Conn> = self.current.take().into_iter().collect();
        conns.append(&mut self.pending);
        for conn in conns {
            let how = match &report {
                Some((code, reason)) if conn.generation == generation => Drop::Report(*code, reason.clone()),
                _ => Drop::Quiet,
            };
            self.drop_conn(conn, now, how);
        }
        self.events.push_back(Event::Failed(error));
        self.readable = true;
        self.writable = true;
    }

    /// Takes the connection `generation` out of the core for processing.
    fn take_conn(&mut self, generation: Generation) -> Option<(Conn, bool)> {
        if self.current.as_ref().is_some_and(|conn| conn.generation == generation) {
            return self.current.take().map(|conn| (conn, true));
        }
        let index = self.pending.iter().position(|conn| conn.generation == generation)?;
        Some((self.pending.remove(index), false))
    }

    fn put_conn(&mut self, conn: Conn, was_current: bool) {
        if was_current {
            self.current = Some(conn);
        } else {
            self.pending.push(conn);
        }
    }

    fn eos_flag(&self) -> u8 {
        if self.peer_eos.is_some() { FLAG_EOS_RECEIVED } else { 0 }
    }

    // ----- handshake --------------------------------------------------------

    fn on_hello(&mut self, mut conn: Conn, now: Instant, hello: Hello) {
        let refuse = |core: &mut Core, conn: Conn, code: ErrorCode, reason: &str| {
            core.stats.failed_handshakes += 1;
            core.drop_conn(conn, now, Drop::Report(code, reason.into()));
        };
        if self.role != Role::Passive || conn.phase != Phase::AwaitHello {
            return refuse(self, conn, ErrorCode::Protocol, "unexpected HELLO");
        }
        if hello.max_version() < proto::VERSION {
            return refuse(self, conn, ErrorCode::UnsupportedVersion, "version 2 required");
        }
        if hello.auth() != self.auth {
            return refuse(self, conn, ErrorCode::AuthenticationFailed, "authentication method mismatch");
        }
        let session_ok =
            if hello.session_id().is_new() { !self.established } else { hello.session_id() == self.session_id };
        if !session_ok {
            return refuse(self, conn, ErrorCode::SessionUnknown, "unknown session");
        }
        let signed = Welcome::signed_bytes(
            self.auth,
            self.eos_flag(),
            self.session_id,
            self.recv_seq,
            self.options.send_buffer_bytes as u64,
            self.options.max_payload_bytes,
            &conn.nonce,
        );
        let mut payload = signed.clone();
        if let Some(secret) = &self.options.secret {
            payload.extend_from_slice(&make_proof(secret, SERVER_LABEL, hello.payload(), &signed));
        }
        proto::encode_handshake(&mut conn.ctrl, FrameKind::Welcome, &payload);
        conn.announced_recv = self.recv_seq;
        conn.welcome_signed = signed;
        conn.hello = Some(hello);
        conn.phase = Phase::AwaitProof;
        self.pending.push(conn);
    }

    fn on_welcome(&mut self, mut conn: Conn, now: Instant, welcome: Welcome) {
        let generation = conn.generation;
        let Some(hello) = conn.hello.take() else {
            return self.put_conn(conn, false);
        };
        if welcome.version != proto::VERSION {
            self.pending.push(conn);
            let reason = format!("version {} unsupported", welcome.version);
            let report = Some((ErrorCode::UnsupportedVersion, reason));
            return self.fail(now, Error::UnsupportedVersion { version: welcome.version }, generation, report);
        }
        let authentic = match (&self.options.secret, welcome.auth) {
            (None, AuthMethod::None) => true,
            (Some(secret), AuthMethod::HmacSha256) => {
                verify_proof(secret, SERVER_LABEL, hello.payload(), &welcome.signed, &welcome.proof)
            }
            _ => false,
        };
        if !authentic {
            self.pending.push(conn);
            let report = Some((ErrorCode::AuthenticationFailed, "server proof rejected".into()));
            return self.fail(now, Error::AuthenticationFailed, generation, report);
        }
        if welcome.session_id.is_new() || (!self.session_id.is_new() && welcome.session_id != self.session_id) {
            self.pending.push(conn);
            let report = Some((ErrorCode::SessionUnknown, "session id changed".into()));
            return self.fail(now, Error::Protocol(DecodeError::BadValue("session id")), generation, report);
        }
        self.session_id = welcome.session_id;
        let mut proof = Vec::new();
        if let Some(secret) = &self.options.secret {
            proof = make_proof(secret, CLIENT_LABEL, hello.payload(), &welcome.signed);
        }
        // The proof goes first even when the sequence check fails, so that
        // the server can trust the ERROR that follows it.
        proto::encode_handshake(&mut conn.ctrl, FrameKind::Proof, &proof);
        if let Err((error, code)) = self.check_peer_reader(welcome.reader_seq, welcome.flags) {
            self.pending.push(conn);
            let reason = error.to_string();
            return self.fail(now, error, generation, Some((code, reason)));
        }
        self.promote(conn, now, welcome.reader_seq, welcome.send_buffer_bytes, welcome.max_payload);
    }

    fn on_proof(&mut self, conn: Conn, now: Instant, proof: &[u8]) {
        let generation = conn.generation;
        let Some(hello) = conn.hello.as_ref() else {
            return self.drop_conn(conn, now, Drop::Quiet);
        };
        let authentic = match &self.options.secret {
            None => proof.is_empty(),
            Some(secret) => verify_proof(secret, CLIENT_LABEL, hello.payload(), &conn.welcome_signed, proof),
        };
        if !authentic {
            // An unauthenticated connection never disturbs the session.
            self.stats.failed_handshakes += 1;
            return self.drop_conn(conn, now, Drop::Report(ErrorCode::AuthenticationFailed, "proof rejected".into()));
        }
        if hello.attempt() <= self.peer_attempt {
            // The client has since completed a later attempt: this one is
            // stale, and its reader sequence number is out of date.
            self.stats.failed_handshakes += 1;
            return self.drop_conn(conn, now, Drop::Report(ErrorCode::Protocol, "superseded attempt".into()));
        }
        let attempt = hello.attempt();
        let (reader_seq, flags, peer_buffer, peer_payload) =
            (hello.reader_seq(), hello.flags(), hello.send_buffer_bytes(), hello.max_payload());
        if let Err((error, code)) = self.check_peer_reader(reader_seq, flags) {
            self.pending.push(conn);
            let reason = error.to_string();
            return self.fail(now, error, generation, Some((code, reason)));
        }
        self.peer_attempt = attempt;
        self.promote(conn, now, reader_seq, peer_buffer, peer_payload);
    }

    /// Checks the peer's reader sequence number against what this side
    /// wrote and still holds, and drops what the peer already has.
    fn check_peer_reader(&mut self, seq: u64, flags: u8) -> Result<(), (Error, ErrorCode)> {
        if seq > self.send.end() {
            return Err((
                Error::InvalidSequence { remote_seq: seq, written: self.send.end() },
                ErrorCode::InvalidSequence,
            ));
        }
        if seq < self.send.start() {
            return Err((Error::DataLoss { remote_seq: seq, retained_start: self.send.start() }, ErrorCode::DataLoss));
        }
        if flags & FLAG_EOS_RECEIVED != 0 {
            if !self.shutdown.requested || seq != self.send.end() {
                let error = Error::Protocol(DecodeError::BadValue("end of stream acknowledged before it was sent"));
                return Err((error, ErrorCode::InvalidSequence));
            }
            self.shutdown.acked = true;
        }
        self.discard_acked(seq);
        Ok(())
    }

    fn discard_acked(&mut self, seq: u64) {
        self.acked = self.acked.max(seq);
        self.trim_acked();
    }

    /// Drops acknowledged bytes from the send buffer, except those the
    /// current connection has yet to transmit. A connection carries the
    /// stream without a gap from where its handshake started it (the peer
    /// skips duplicates by count), so an acknowledgement that overtakes it
    /// must not take its replay away: bytes of an abandoned connection
    /// that reached the peer after this one's handshake are acknowledged
    /// before this connection has sent them again.
    fn trim_acked(&mut self) {
        let floor = match &self.current {
            Some(conn) if conn.phase == Phase::Connected => conn.tx_seq,
            _ => u64::MAX,
        };
        self.trim_acked_below(floor);
    }

    /// [`Core::trim_acked`] for a current connection taken out of the
    /// core, which still has to transmit from `floor` on.
    fn trim_acked_below(&mut self, floor: u64) {
        let seq = self.acked.min(floor);
        if self.send.discard_until(seq) {
            self.writable = true;
        }
    }

    /// Makes a connection whose handshake completed the current one.
    fn promote(&mut self, mut conn: Conn, now: Instant, peer_reader: u64, peer_buffer: u64, peer_payload: u32) {
        if let Some(old) = self.current.take() {
            self.drop_conn(old, now, Drop::Quiet);
        }
        let resumed = self.established;
        self.established = true;
        conn.phase = Phase::Connected;
        if !conn.write_failed {
            conn.deadline = None;
        }
        conn.tx_seq = peer_reader;
        conn.rx_skip = self.recv_seq - conn.announced_recv;
        conn.max_payload_out = peer_payload.clamp(1, self.options.max_payload_bytes);
        conn.ack_every = self.options.ack_interval_bytes.min((peer_buffer / 4).max(1));
        conn.last_ack_sent = conn.announced_recv;
        conn.ack_eos_sent = self.eos_flag() != 0;
        conn.last_rx = now;
        conn.hello = None;
        conn.welcome_signed = Vec::new();
        if self.role == Role::Passive {
            // The confirmation: the first frame after a verified PROOF,
            // before any other, sent even with nothing else to say. It
            // tells the client that the session exists on this side.
            conn.queue(&Control::Ack { seq: self.recv_seq, flags: self.eos_flag() });
            conn.last_ack_sent = self.recv_seq;
        }
        conn.ack_now = self.recv_seq > conn.last_ack_sent;
        let generation = conn.generation;
        self.current = Some(conn);
        self.loss = None;
        self.trim_acked();
        self.stats.handshakes += 1;
        self.writable = true;
        tracing::debug!(%generation, session = %self.session_id, resumed, peer_reader, "connected");
        self.events.push_back(Event::Connected { generation, resumed });
    }

    // ----- receiving ----------------------------------------------------------

    /// Bytes `data` were read from the connection `generation`. Everything
    /// is consumed; the core's receive buffer may exceed its configured size
    /// to take it (callers that care read at most what
    /// [`Core::recv_target`] offers).
    pub fn handle_read(&mut self, now: Instant, generation: Generation, mut data: &[u8]) {
        while !data.is_empty() {
            let Some(target) = self.recv_target_inner(generation, true) else { return };
            let count = target.len().min(data.len());
            if count == 0 {
                return;
            }
            target[..count].copy_from_slice(&data[..count]);
            data = &data[count..];
            self.recv_done(now, generation, count);
        }
    }

    /// Where the next bytes read from connection `generation` should go: a
    /// slice to read into, followed by [`Core::recv_done`]. `None` when the
    /// core does not take bytes from that connection now (unknown
    /// generation, or the receive buffer is full: read again after
    /// [`Core::read`] made room).
    ///
    /// The slice ends at the next frame boundary, so a read into it never
    /// takes bytes of the following frame.
    pub fn recv_target(&mut self, generation: Generation) -> Option<&mut [u8]> {
        self.recv_target_inner(generation, false)
    }

    fn recv_target_inner(&mut self, generation: Generation, unbounded: bool) -> Option<&mut [u8]> {
        let limit = if unbounded { usize::MAX } else { self.options.recv_buffer_bytes };
        let conn = match &mut self.current {
            Some(conn) if conn.generation == generation => conn,
            _ => self.pending.iter_mut().find(|conn| conn.generation == generation)?,
        };
        match conn.rx {
            RxState::Header { have } => Some(&mut conn.header_buf[have..]),
            RxState::Body { len, have, .. } => Some(&mut conn.body_buf[have..len]),
            RxState::Payload { remaining } => {
                let remaining = if conn.rx_skip > 0 {
                    remaining.min(usize::try_from(conn.rx_skip).unwrap_or(usize::MAX))
                } else {
                    remaining
                };
                let space = self.recv.space(remaining, limit);
                if space.is_empty() { None } else { Some(space) }
            }
        }
    }

    /// Whether connection `generation` is collecting a frame header or a
    /// control frame (not inside a DATA payload): a caller may then read a
    /// larger chunk that spans several frames and hand it to
    /// [`Core::handle_read`], instead of reading up to the frame boundary
    /// with [`Core::recv_target`]. False for unknown generations.
    pub fn between_payloads(&self, generation: Generation) -> bool {
        let conn = match &self.current {
            Some(conn) if conn.generation == generation => conn,
            _ => match self.pending.iter().find(|conn| conn.generation == generation) {
                Some(conn) => conn,
                None => return false,
            },
        };
        !matches!(conn.rx, RxState::Payload { .. })
    }

    /// `count` bytes were read into the slice [`Core::recv_target`] returned
    /// for `generation`.
    pub fn recv_done(&mut self, now: Instant, generation: Generation, count: usize) {
        if count == 0 {
            return;
        }
        let Some((mut conn, was_current)) = self.take_conn(generation) else { return };
        conn.last_rx = now;
        conn.ping_sent = false;
        match conn.rx {
            RxState::Header { have } => {
                let have = (have + count).min(HEADER_LEN);
                if have < HEADER_LEN {
                    conn.rx = RxState::Header { have };
                    return self.put_conn(conn, was_current);
                }
                let header = match FrameHeader::decode(conn.header_buf, self.options.max_payload_bytes) {
                    Ok(header) => header,
                    Err(error) => return self.protocol_error(conn, was_current, now, error),
                };
                let len = header.len as usize;
                if !allowed(conn.phase, header.kind) {
                    let error =
                        DecodeError::Unexpected { kind: header.kind, context: "in this phase of the connection" };
                    return self.protocol_error(conn, was_current, now, error);
                }
                if self.role == Role::Active && conn.phase == Phase::Connected && header.kind != FrameKind::Error {
                    // The server speaks after a PROOF only once it verified
                    // it (the confirmation ACK comes first): it holds the
                    // session now.
                    self.confirmed = true;
                }
                if header.kind == FrameKind::Data {
                    conn.rx = RxState::Payload { remaining: len };
                    return self.put_conn(conn, was_current);
                }
                conn.rx = RxState::Body { kind: header.kind, len, have: 0 };
                if len == 0 {
                    return self.finish_body(conn, was_current, now);
                }
                self.put_conn(conn, was_current);
            }
            RxState::Body { kind, len, have } => {
                conn.rx = RxState::Body { kind, len, have: (have + count).min(len) };
                if have + count >= len {
                    return self.finish_body(conn, was_current, now);
                }
                self.put_conn(conn, was_current);
            }
            RxState::Payload { remaining } => {
                let count = count.min(remaining);
                let skipped = conn.rx_skip.min(count as u64);
                conn.rx_skip -= skipped;
                let fresh = count - skipped as usize;
                self.recv.commit(fresh);
                let remaining = remaining - count;
                conn.rx = if remaining == 0 { RxState::Header { have: 0 } } else { RxState::Payload { remaining } };
                if fresh > 0 {
                    if self.peer_eos.is_some() {
                        let error = DecodeError::Unexpected { kind: FrameKind::Data, context: "after end of stream" };
                        return self.protocol_error(conn, was_current, now, error);
                    }
                    self.received(&mut conn, now, fresh as u64);
                    self.readable = true;
                }
                self.put_conn(conn, was_current);
            }
        }
    }

    /// How many bytes of the current DATA frame may be read from connection
    /// `generation` straight into the application's buffer (skipping the
    /// core's receive buffer), then reported with
    /// [`Core::direct_read_done`]. 0 when that is not possible now: the
    /// core holds buffered bytes (read those first with [`Core::read`]), or
    /// the connection is not inside a DATA payload.
    pub fn direct_read_len(&self, generation: Generation) -> usize {
        match &self.current {
            Some(conn) if conn.generation == generation && conn.rx_skip == 0 && self.recv.is_empty() => match conn.rx {
                RxState::Payload { remaining } if self.peer_eos.is_none() => remaining,
                _ => 0,
            },
            _ => 0,
        }
    }

    /// `count` payload bytes (at most [`Core::direct_read_len`]) were read
    /// from connection `generation` straight into the application's buffer.
    pub fn direct_read_done(&mut self, now: Instant, generation: Generation, count: usize) {
        let count = count.min(self.direct_read_len(generation));
        if count == 0 {
            return;
        }
        let Some(mut conn) = self.current.take() else { return };
        conn.last_rx = now;
        conn.ping_sent = false;
        if let RxState::Payload { remaining } = conn.rx {
            let remaining = remaining - count;
            conn.rx = if remaining == 0 { RxState::Header { have: 0 } } else { RxState::Payload { remaining } };
        }
        self.received(&mut conn, now, count as u64);
        self.current = Some(conn);
    }

    /// Accounts for `count` new application bytes and schedules the ACK.
    fn received(&mut self, conn: &mut Conn, now: Instant, count: u64) {
        self.recv_seq += count;
        self.stats.bytes_received += count;
        if self.recv_seq - conn.last_ack_sent >= conn.ack_every {
            conn.ack_now = true;
        } else if conn.ack_deadline.is_none() {
            conn.ack_deadline = Some(now + self.options.ack_delay);
        }
    }

    fn protocol_error(&mut self, conn: Conn, was_current: bool, now: Instant, error: DecodeError) {
        tracing::debug!(generation = %conn.generation, %error, "protocol error; dropping the connection");
        if !was_current {
            self.stats.failed_handshakes += 1;
        } else {
            self.writable = true;
        }
        self.drop_conn(conn, now, Drop::Report(ErrorCode::Protocol, error.to_string()));
    }

    fn finish_body(&mut self, mut conn: Conn, was_current: bool, now: Instant) {
        let RxState::Body { kind, len, .. } = conn.rx else {
            return self.put_conn(conn, was_current);
        };
        conn.rx = RxState::Header { have: 0 };
        let body = conn.body_buf;
        let body = &body[..len.min(MAX_HANDSHAKE_LEN)];
        match kind {
            FrameKind::Hello => match Hello::decode_payload(body) {
                Ok(hello) => self.on_hello(conn, now, hello),
                Err(error) => self.protocol_error(conn, was_current, now, error),
            },
            FrameKind::Welcome if conn.phase == Phase::AwaitWelcome => match Welcome::decode_payload(body) {
                Ok(welcome) => self.on_welcome(conn, now, welcome),
                Err(error) => self.protocol_error(conn, was_current, now, error),
            },
            FrameKind::Proof if conn.phase == Phase::AwaitProof => self.on_proof(conn, now, body),
            FrameKind::Error => self.on_error_frame(conn, was_current, now, body),
            FrameKind::Ack | FrameKind::Ping | FrameKind::Pong | FrameKind::EndOfStream
                if conn.phase == Phase::Connected =>
            {
                match Control::decode(kind, body) {
                    Ok(control) => self.on_control(conn, now, control),
                    Err(error) => self.protocol_error(conn, was_current, now, error),
                }
            }
            other => {
                let error = DecodeError::Unexpected { kind: other, context: "in this phase of the connection" };
                self.protocol_error(conn, was_current, now, error)
            }
        }
    }

    fn on_error_frame(&mut self, conn: Conn, was_current: bool, now: Instant, body: &[u8]) {
        let Ok(Control::Error { code, reason }) = Control::decode(FrameKind::Error, body) else {
            return self.drop_conn(conn, now, Drop::Quiet);
        };
        tracing::debug!(generation = %conn.generation, %code, %reason, "peer reported an error");
        let generation = conn.generation;
        // An ERROR on a connection the peer has not authenticated on the
        // passive side only ends that connection: it cannot end a session.
        let trusted = was_current || self.role == Role::Active;
        if !was_current {
            self.stats.failed_handshakes += 1;
        }
        self.drop_conn(conn, now, Drop::Quiet);
        if !trusted || code == ErrorCode::Protocol {
            self.writable = true;
            return;
        }
        let error = match code {
            ErrorCode::Closed => Error::PeerClosed,
            ErrorCode::AuthenticationFailed => Error::AuthenticationFailed,
            ErrorCode::UnsupportedVersion => Error::UnsupportedVersion { version: proto::VERSION },
            code => Error::Remote { code, reason },
        };
        self.fail(now, error, generation, None);
    }

    fn on_control(&mut self, mut conn: Conn, now: Instant, control: Control) {
        let generation = conn.generation;
        match control {
            Control::Ack { seq, flags } => {
                if seq > self.send.end() {
                    let error = Error::InvalidSequence { remote_seq: seq, written: self.send.end() };
                    let reason = error.to_string();
                    self.current = Some(conn);
                    return self.fail(now, error, generation, Some((ErrorCode::InvalidSequence, reason)));
                }
                // The connection is out of the core here: trim below its
                // next byte to send, as `trim_acked` would.
                self.acked = self.acked.max(seq);
                self.trim_acked_below(conn.tx_seq);
                if flags & FLAG_EOS_RECEIVED != 0 && !self.shutdown.acked {
                    if !self.shutdown.requested || seq != self.send.end() {
                        let error = DecodeError::BadValue("end of stream acknowledged before it was sent");
                        return self.protocol_error(conn, true, now, error);
                    }
                    self.shutdown.acked = true;
                    self.writable = true;
                }
            }
            Control::Ping(value) => conn.want_pong = Some(value),
            Control::Pong(_) => {}
            Control::EndOfStream(seq) => {
                if conn.rx_skip > 0 || seq != self.recv_seq || self.peer_eos.is_some_and(|eos| eos != seq) {
                    let error = DecodeError::BadValue("end-of-stream sequence number");
                    return self.protocol_error(conn, true, now, error);
                }
                self.peer_eos = Some(seq);
                // Acknowledge it even when it is a repeat: the peer resent
                // it because it never saw the acknowledgement.
                conn.ack_eos_sent = false;
                conn.ack_now = true;
                self.readable = true;
            }
            Control::Error { .. } => {}
        }
        self.current = Some(conn);
    }

    // ----- transmitting ---------------------------------------------------------

    /// The next bytes to write to connection `generation`, if any. Write
    /// them (all or part) and report the count with [`Core::transmitted`]
    /// before calling any other method for that connection.
    pub fn poll_transmit(&mut self, generation: Generation) -> Option<Transmit<'_>> {
        let eos_flag = self.eos_flag();
        let shutdown_requested = self.shutdown.requested;
        let written = self.send.end();
        let recv_seq = self.recv_seq;
        let conn = match &mut self.current {
            Some(conn) if conn.generation == generation => conn,
            _ => self.pending.iter_mut().chain(self.closing.iter_mut()).find(|conn| conn.generation == generation)?,
        };
        if conn.write_failed {
            return None;
        }
        let frame_started = conn.frame.as_ref().is_some_and(|frame| frame.started);
        let data_waits = conn.frame.is_some() || conn.tx_seq < written;
        if !frame_started && !conn.ctrl_pending() && conn.phase == Phase::Connected {
            if data_waits && conn.ack_deadline.is_some() {
                // The acknowledgement that waits for its delay rides with
                // the data instead: an exchange of keystrokes and echoes
                // then needs no acknowledgement of its own.
                conn.ack_now = true;
            }
            // Materialise the wanted control frames now, with fresh values.
            conn.ctrl.clear();
            conn.ctrl_sent = 0;
            queue_controls(conn, recv_seq, eos_flag);
        }
        if !frame_started && conn.ctrl_pending() && !(data_waits && conn.phase == Phase::Connected) {
            conn.last = Some(Last::Ctrl);
            return Some(Transmit {
                parts: [&conn.ctrl[conn.ctrl_sent..], &[], &[]],
                owners: [None; 2],
                payload_seq: None,
            });
        }
        if conn.phase != Phase::Connected {
            return None;
        }
        if conn.frame.is_none() {
            if conn.tx_seq < written {
                let len = (written - conn.tx_seq).min(u64::from(conn.max_payload_out));
                let header = FrameHeader { kind: FrameKind::Data, len: len as u32 }.encode();
                conn.frame = Some(TxFrame { header, header_sent: 0, end: conn.tx_seq + len, started: false });
            } else if shutdown_requested && !conn.eos_sent {
                conn.eos_sent = true;
                conn.ctrl.clear();
                conn.ctrl_sent = 0;
                conn.queue(&Control::EndOfStream(written));
                conn.last = Some(Last::Ctrl);
                return Some(Transmit { parts: [&conn.ctrl[..], &[], &[]], owners: [None; 2], payload_seq: None });
            }
        }
        let frame = conn.frame.as_ref()?;
        // Copied bytes become a chunk of their own, so that the payload
        // can be handed out as shared chunks.
        self.send.seal();
        let slices = self.send.slices_from(conn.tx_seq)?;
        let [a, b] = slices.parts;
        let mut want = usize::try_from(frame.end - conn.tx_seq).unwrap_or(usize::MAX);
        let a = &a[..want.min(a.len())];
        want -= a.len();
        let b = &b[..want.min(b.len())];
        let header = &frame.header[frame.header_sent..];
        let head: &[u8] = if conn.ctrl_pending() {
            // Only before a frame starts (see above): the control frames
            // go first, in the same write.
            let ctrl = &conn.ctrl[conn.ctrl_sent..];
            conn.head.clear();
            conn.head.extend_from_slice(ctrl);
            conn.head.extend_from_slice(header);
            conn.last = Some(Last::Both { ctrl: ctrl.len() });
            &conn.head
        } else {
            conn.last = Some(Last::Frame);
            header
        };
        Some(Transmit { parts: [head, a, b], owners: slices.owners, payload_seq: Some(conn.tx_seq) })
    }

    fn materialize_controls(&self, conn: &mut Conn) {
        queue_controls(conn, self.recv_seq, self.eos_flag());
    }

    /// Tells the core that what [`Core::poll_transmit`] last returned for
    /// `generation` is being written by a caller that does not hold the
    /// core meanwhile: other methods may be called before
    /// [`Core::transmitted`] reports the count. A report that ends the
    /// connection in between (a close, a protocol error) waits until then,
    /// so that it follows exactly the bytes that were written.
    pub fn lend_transmit(&mut self, generation: Generation) {
        let Some(conn) = find_conn(&mut self.current, &mut self.pending, &mut self.closing, generation) else {
            return;
        };
        if conn.last.is_some() {
            conn.lent = true;
        }
    }

    /// `count` bytes of what [`Core::poll_transmit`] last returned for
    /// `generation` were written.
    pub fn transmitted(&mut self, now: Instant, generation: Generation, count: usize) {
        self.account_transmitted(generation, count);
        let Some(index) =
            self.closing.iter().position(|conn| conn.generation == generation && conn.deferred_report.is_some())
        else {
            return;
        };
        let mut conn = self.closing.remove(index);
        if let Some((code, reason, phase)) = conn.deferred_report.take() {
            self.queue_report(conn, now, code, reason, phase);
        }
    }

    fn account_transmitted(&mut self, generation: Generation, count: usize) {
        let sent_high = self.sent_high;
        let Some(conn) = find_conn(&mut self.current, &mut self.pending, &mut self.closing, generation) else {
            return;
        };
        conn.lent = false;
        let mut count = count;
        if let Some(Last::Both { ctrl }) = conn.last {
            let written = count.min(ctrl);
            conn.ctrl_sent = (conn.ctrl_sent + written).min(conn.ctrl.len());
            if conn.ctrl_sent == conn.ctrl.len() {
                conn.ctrl.clear();
                conn.ctrl_sent = 0;
            }
            count -= written;
            // The frame starts once its control frames are out.
            conn.last = if written == ctrl { Some(Last::Frame) } else { None };
        }
        match conn.last {
            Some(Last::Ctrl) => {
                conn.ctrl_sent = (conn.ctrl_sent + count).min(conn.ctrl.len());
                if conn.ctrl_sent == conn.ctrl.len() {
                    conn.ctrl.clear();
                    conn.ctrl_sent = 0;
                    conn.last = None;
                    if conn.phase == Phase::Closing {
                        self.closing.retain(|conn| conn.generation != generation);
                        self.events.push_back(Event::ConnectionClosed { generation });
                    }
                }
            }
            Some(Last::Frame) => {
                let Some(frame) = conn.frame.as_mut() else { return };
                if count > 0 {
                    frame.started = true;
                }
                let header_part = count.min(HEADER_LEN - frame.header_sent);
                frame.header_sent += header_part;
                let payload = ((count - header_part) as u64).min(frame.end - conn.tx_seq);
                let before = conn.tx_seq;
                conn.tx_seq += payload;
                if conn.tx_seq == frame.end {
                    conn.frame = None;
                    conn.last = None;
                }
                self.stats.bytes_sent += payload;
                self.stats.bytes_replayed += conn.tx_seq.min(sent_high) - before.min(sent_high);
                self.sent_high = sent_high.max(conn.tx_seq);
                if self.acked > self.send.start() {
                    self.trim_acked();
                }
            }
            Some(Last::Both { .. }) | None => {}
        }
    }

    // ----- time -------------------------------------------------------------------

    /// When [`Core::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        let mut consider = |at: Option<Instant>| {
            if let Some(at) = at {
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
        };
        for conn in self.pending.iter().chain(&self.closing) {
            consider(conn.deadline);
        }
        if self.current.is_none() {
            consider(self.loss.map(|loss| loss.since + self.options.reconnect_grace));
        }
        if let Some(conn) = &self.current {
            consider(conn.deadline);
            consider(conn.ack_deadline);
            if !conn.ping_sent {
                consider(Some(conn.last_rx + self.options.keepalive_interval));
            }
            consider(Some(conn.last_rx + self.options.idle_timeout));
        }
        earliest
    }

    /// Time passed: handshake and close deadlines, keepalive, delayed ACKs.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for conn in &self.pending {
            if conn.deadline.is_some_and(|deadline| deadline <= now) {
                expired.push(conn.generation);
            }
        }
        for generation in expired {
            tracing::debug!(%generation, "handshake timed out");
            self.connection_lost(now, generation);
        }
        let mut lingering = Vec::new();
        for conn in &self.closing {
            if conn.deadline.is_some_and(|deadline| deadline <= now) {
                lingering.push(conn.generation);
            }
        }
        for generation in lingering {
            tracing::debug!(%generation, "the close report could not be sent in time");
            self.abandoned_reports += 1;
            self.connection_lost(now, generation);
        }
        if self.loss.is_some_and(|loss| loss.since + self.options.reconnect_grace <= now) {
            tracing::debug!("not reconnected within the grace; the send buffer may fill");
            self.end_loss();
        }
        let recv_full = self.recv.len() >= self.options.recv_buffer_bytes;
        let mut dead = None;
        if let Some(conn) = &mut self.current {
            if recv_full {
                // Not reading is this side's doing, not the peer's silence.
                conn.last_rx = now;
            }
            let silent = now.saturating_duration_since(conn.last_rx);
            if conn.deadline.is_some_and(|deadline| deadline <= now) {
                tracing::debug!(generation = %conn.generation, "writing failed and nothing more came");
                dead = Some(conn.generation);
            } else if silent >= self.options.idle_timeout {
                dead = Some(conn.generation);
            } else if silent >= self.options.keepalive_interval && !conn.ping_sent {
                conn.want_ping = true;
                conn.ping_sent = true;
            }
            if conn.ack_deadline.is_some_and(|deadline| deadline <= now) {
                // Delivered by the next poll_transmit.
                conn.ack_deadline = None;
                conn.ack_now = true;
            }
        }
        if let Some(generation) = dead {
            tracing::debug!(%generation, "nothing received within the idle timeout; connection dead");
            self.connection_lost(now, generation);
        }
        // Buffers go back only when idle, not each time a busy stream
        // happens to be empty: both sequence numbers stood still since the
        // previous call (reallocating and faulting in the storage again
        // costs more than the copying it serves).
        let marks = (self.send.end(), self.recv_seq);
        self.quiet = marks == self.idle_marks && self.send.is_empty();
        if marks == self.idle_marks {
            if self.send.is_empty() {
                self.send.shrink_to_fit();
            }
            self.recv.release_if_empty();
        }
        self.idle_marks = marks;
    }
}

/// Appends the control frames `conn` wants to send (ACK, PONG, PING).
fn queue_controls(conn: &mut Conn, recv_seq: u64, eos_flag: u8) {
    if std::mem::take(&mut conn.ack_now) && (recv_seq > conn.last_ack_sent || (eos_flag != 0 && !conn.ack_eos_sent)) {
        conn.queue(&Control::Ack { seq: recv_seq, flags: eos_flag });
        conn.last_ack_sent = recv_seq;
        conn.ack_eos_sent = eos_flag != 0;
        conn.ack_deadline = None;
    }
    if let Some(value) = conn.want_pong.take() {
        conn.queue(&Control::Pong(value));
    }
    if std::mem::take(&mut conn.want_ping) {
        conn.queue(&Control::Ping(recv_seq));
    }
}

/// The connection `generation`, whichever of the core's lists holds it.
fn find_conn<'a>(
    current: &'a mut Option<Conn>,
    pending: &'a mut [Conn],
    closing: &'a mut [Conn],
    generation: Generation,
) -> Option<&'a mut Conn> {
    match current {
        Some(conn) if conn.generation == generation => Some(conn),
        _ => pending.iter_mut().chain(closing.iter_mut()).find(|conn| conn.generation == generation),
    }
}

/// Whether a frame of `kind` may arrive in `phase` (an ERROR always may).
fn allowed(phase: Phase, kind: FrameKind) -> bool {
    match phase {
        Phase::AwaitHello => matches!(kind, FrameKind::Hello | FrameKind::Error),
        Phase::AwaitWelcome => matches!(kind, FrameKind::Welcome | FrameKind::Error),
        Phase::AwaitProof => matches!(kind, FrameKind::Proof | FrameKind::Error),
        Phase::Connected => !matches!(kind, FrameKind::Hello | FrameKind::Welcome | FrameKind::Proof),
        Phase::Closing => false,
    }
}

#[cfg(test)]
mod tests;
