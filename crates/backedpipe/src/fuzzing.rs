//! A deterministic simulated link between a client [`Core`] and a server,
//! with virtual time and injectable faults (cuts at any byte offset,
//! one-sided cuts, stalls, black holes, failing dials), and the model
//! checks that drive it: shared by the proptest model test and the
//! cargo-fuzz targets.
//!
//! The server is one passive core that every connection reaches (a pipe
//! used without a listener), or, with [`Setup::router`], a session table
//! that reads each connection's HELLO and routes it as the server's
//! `Listener` does (see the `server` module, "Routing"): a new session is
//! entered in the table and handed to the application only once its first
//! handshake completed ([`Core::first_handshake`]); a HELLO naming a
//! session that is held, or still starting, reaches that session's core;
//! an unknown id is refused with `SessionUnknown`, unless it is flagged
//! unconfirmed and never ended, which starts a new session under it.
//!
//! Not part of the public API: it exists only under `cfg(test)` and
//! `cfg(fuzzing)`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::core::{ConnectionState, Core, Event, FirstHandshake, Generation, ReadOutcome};
use crate::error::Error;
use crate::options::{Options, Secret};
use crate::proto::{self, DecodeError, ErrorCode, FLAG_EOS_RECEIVED, FrameHeader, Hello, Nonce, SessionId};

/// One step of a simulation.
#[derive(Debug, Clone)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub enum Op {
    /// The application on one side writes `len` bytes (as many as fit).
    Write {
        /// Which side.
        client: bool,
        /// How many bytes to offer.
        len: u16,
    },
    /// The application on one side writes `len` bytes as one shared chunk
    /// ([`Core::write_chunk`]: as much of its front as fits).
    WriteChunk {
        /// Which side.
        client: bool,
        /// How many bytes to offer.
        len: u16,
    },
    /// The application on one side reads up to `len` bytes.
    Read {
        /// Which side.
        client: bool,
        /// Buffer size.
        len: u16,
    },
    /// Move bytes over the link for a few rounds without advancing time.
    Run {
        /// Rounds.
        rounds: u8,
    },
    /// Advance virtual time and fire due timers.
    Advance {
        /// Milliseconds.
        millis: u16,
    },
    /// Break the newest link now; both sides notice.
    Cut,
    /// Break the newest link after `bytes` more bytes have entered it in
    /// one direction (this lands inside handshakes and replays too); bytes
    /// that entered but were not delivered yet are lost with it.
    CutAfter {
        /// Client-to-server direction (else server-to-client).
        c2s: bool,
        /// Bytes before the break.
        bytes: u16,
    },
    /// Break the newest link once exactly `bytes` more bytes have arrived
    /// in one direction: those are delivered, what follows them is lost,
    /// and both sides see the end. A cut not yet due still happens when the
    /// link gets there, also while healing.
    CutAtOffset {
        /// Client-to-server direction (else server-to-client).
        c2s: bool,
        /// Bytes delivered before the break.
        bytes: u16,
    },
    /// The client notices a break that the server does not: the server's
    /// old connection stays current, and bytes in flight to it still
    /// arrive, until the client's next handshake replaces it.
    ClientOnlyCut,
    /// Writing to the newest link fails on one side (as after a reset by
    /// the peer): that side stops sending but still reads what is in
    /// flight to it; the other side sees the end after what was sent.
    WriteFails {
        /// Which side's writes fail.
        client: bool,
    },
    /// The newest link silently stops delivering; nobody is told.
    Blackhole,
    /// The newest link delivers nothing for a while.
    Stall {
        /// Milliseconds.
        millis: u16,
    },
    /// The client dials again while connected.
    ForceReconnect,
    /// The next `count` dials fail.
    FailDials {
        /// How many.
        count: u8,
    },
    /// One side ends its stream.
    Shutdown {
        /// Which side.
        client: bool,
    },
    /// One side closes the pipe.
    Close {
        /// Which side.
        client: bool,
    },
    /// One side writes its next transmit on the newest link without
    /// holding its core (see [`Core::lend_transmit`]): meanwhile the link
    /// delivers what is in flight to that side, or the side closes; then
    /// the bytes go out (as far as the link takes them) and are reported.
    LentTransmit {
        /// Which side.
        client: bool,
        /// Close meanwhile (else deliver).
        close: bool,
    },
}

/// The simulation's parameters.
#[derive(Debug, Clone)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub struct Setup {
    /// Send buffer bytes, reduced to 64..=65536.
    pub send_buffer: u16,
    /// Maximum payload, reduced to 1..=2048.
    pub max_payload: u16,
    /// Receive buffer bytes, reduced to 1..=8192.
    pub recv_buffer: u16,
    /// Whether the handshake is authenticated.
    pub secret: bool,
    /// Bytes a link holds per direction, reduced to 1..=16384.
    pub link_capacity: u16,
    /// Whether connections reach the server through a session table that
    /// routes them by their HELLO, as a `Listener` does (else every
    /// connection goes to one passive core).
    pub router: bool,
    /// Whether the router forgets a new session whose first handshake
    /// failed only two rounds after it saw it fail (as a listener whose
    /// task has not run yet), so that the client's next connection still
    /// reaches it.
    pub router_lags: bool,
}

impl Setup {
    fn options(&self) -> Options {
        let send_buffer_bytes = usize::from(self.send_buffer).clamp(64, 65536);
        Options::new()
            .send_buffer_bytes(send_buffer_bytes)
            .max_payload_bytes(u32::from(self.max_payload).clamp(1, 2048))
            .recv_buffer_bytes(usize::from(self.recv_buffer).clamp(1, 8192))
            .max_unsent_bytes(send_buffer_bytes / 2 + 1)
            .max_unacked_bytes(send_buffer_bytes * 3 / 4 + 1)
            .ack_interval_bytes((send_buffer_bytes / 8).max(1) as u64)
            .ack_delay(Duration::from_millis(5))
            .keepalive_interval(Duration::from_millis(500))
            .idle_timeout(Duration::from_millis(1500))
            .handshake_timeout(Duration::from_millis(1000))
            .secret(self.secret.then(|| Secret::new(b"simulated shared secret".to_vec())))
    }
}

/// The byte at sequence number `seq` of one side's stream: a pattern with
/// no short period, so a lost, repeated or reordered byte is noticed.
pub fn pattern(client: bool, seq: u64) -> u8 {
    let mixed = (seq ^ (seq >> 7) ^ (seq >> 17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 56) as u8 ^ if client { 0x5A } else { 0xA5 }
}

/// How a simulated write hands over its bytes.
#[derive(Debug, Clone, Copy)]
enum Handover {
    /// Borrowed, copied by the core ([`Core::write`]).
    Borrowed,
    /// As a shared chunk ([`Core::write_chunk`]).
    Shared,
}

/// What one application has done.
#[derive(Debug, Default, Clone)]
struct App {
    written: u64,
    read: u64,
    eof: bool,
    shut: bool,
    closed: bool,
}

#[derive(Debug)]
struct Link {
    client_gen: Generation,
    /// The server core the connection reaches: from the dial without a
    /// router, once its HELLO is routed with one.
    server_core: Option<usize>,
    server_gen: Generation,
    client_open: bool,
    server_open: bool,
    c2s: VecDeque<u8>,
    s2c: VecDeque<u8>,
    c2s_cut_after: Option<u64>,
    s2c_cut_after: Option<u64>,
    /// Bytes that may still arrive each way before the link breaks
    /// ([`Op::CutAtOffset`]).
    c2s_arrivals: Option<u64>,
    s2c_arrivals: Option<u64>,
    /// Bytes delivered each way.
    c2s_delivered: u64,
    s2c_delivered: u64,
    /// The router's part of the connection before it is routed: the HELLO
    /// read so far, and when the router gives up waiting for it.
    hello: Vec<u8>,
    hello_deadline: Instant,
    broken: bool,
    blackholed: bool,
    stalled_until: Option<Instant>,
    /// The server closed its end: the client sees EOF after `s2c` drains.
    eof_to_client: bool,
    /// The client closed its end: the server sees EOF after `c2s` drains.
    eof_to_server: bool,
}

impl Link {
    fn new(client_gen: Generation, hello_deadline: Instant) -> Link {
        Link {
            client_gen,
            server_core: None,
            server_gen: Generation(0),
            client_open: true,
            server_open: true,
            c2s: VecDeque::new(),
            s2c: VecDeque::new(),
            c2s_cut_after: None,
            s2c_cut_after: None,
            c2s_arrivals: None,
            s2c_arrivals: None,
            c2s_delivered: 0,
            s2c_delivered: 0,
            hello: Vec::new(),
            hello_deadline,
            broken: false,
            blackholed: false,
            stalled_until: None,
            eof_to_client: false,
            eof_to_server: false,
        }
    }

    /// Takes what one side writes, as far as there is room (all of it if
    /// the link swallows bytes); returns how many bytes were taken.
    fn carry(&mut self, client: bool, capacity: usize, parts: &[&[u8]]) -> usize {
        let (queue, budget, arrivals) = if client {
            (&mut self.c2s, &mut self.c2s_cut_after, &mut self.c2s_arrivals)
        } else {
            (&mut self.s2c, &mut self.s2c_cut_after, &mut self.s2c_arrivals)
        };
        // Past its arrival budget a direction is as good as cut.
        let swallow = self.broken || self.blackholed || *arrivals == Some(0);
        let mut room = if swallow { usize::MAX } else { capacity.saturating_sub(queue.len()) };
        if let Some(left) = budget {
            room = room.min(usize::try_from(*left).unwrap_or(usize::MAX));
        }
        if let Some(left) = arrivals.filter(|_| !swallow) {
            room = room.min(usize::try_from(left).unwrap_or(usize::MAX));
        }
        let mut taken = 0;
        for part in parts {
            let count = part.len().min(room - taken);
            if !swallow {
                queue.extend(&part[..count]);
            }
            taken += count;
        }
        if let Some(left) = arrivals.as_mut().filter(|_| !swallow) {
            *left -= taken as u64;
        }
        if let Some(left) = budget {
            *left -= taken as u64;
            if *left == 0 {
                self.broken = true;
            }
        }
        taken
    }

    /// Whether a direction used up its arrival budget and delivered what
    /// it took: time for the cut.
    fn arrivals_done(&self) -> bool {
        let c2s = self.c2s_arrivals == Some(0) && (self.c2s.is_empty() || !self.server_open);
        let s2c = self.s2c_arrivals == Some(0) && (self.s2c.is_empty() || !self.client_open);
        c2s || s2c
    }
}

/// What the simulated router did; see [`Sim::router_stats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RouterStats {
    /// New sessions started (a core made for a first handshake).
    pub sessions_started: u64,
    /// Of those, started under an unconfirmed id the client named.
    pub started_unconfirmed: u64,
    /// New sessions whose first handshake completed (handed out).
    pub sessions_created: u64,
    /// Of those, sessions started under an unconfirmed id.
    pub created_unconfirmed: u64,
    /// New sessions forgotten because their first handshake failed.
    pub failed_first_handshakes: u64,
    /// Connections routed to a session held or starting.
    pub resumes_routed: u64,
    /// Of those, HELLOs flagged unconfirmed.
    pub resumes_unconfirmed: u64,
    /// Of those, routed to a session still in its first handshake.
    pub routed_to_starting: u64,
    /// Connections refused with `SessionUnknown`.
    pub refused_unknown: u64,
    /// Connections refused for any other reason.
    pub refused_other: u64,
}

/// The session table of a `Listener`, as far as routing goes (no limits,
/// no expiry).
#[derive(Debug, Default)]
struct Router {
    /// Sessions whose first handshake completed: core numbers by id.
    sessions: BTreeMap<SessionId, usize>,
    /// New sessions in their first handshake.
    starting: BTreeMap<SessionId, Starting>,
    /// Sessions that existed and ended.
    ended: BTreeSet<SessionId>,
    /// Ids given out so far.
    ids: u64,
    stats: RouterStats,
}

impl Router {
    fn holds(&self, id: &SessionId) -> bool {
        self.sessions.contains_key(id) || self.starting.contains_key(id) || self.ended.contains(id)
    }

    /// A fresh session id (deterministic, never all zeros).
    fn fresh_id(&mut self) -> SessionId {
        self.ids += 1;
        let mut bytes = [0x5E; 16];
        bytes[..8].copy_from_slice(&self.ids.to_be_bytes());
        SessionId::from_bytes(bytes)
    }
}

/// A new session in its first handshake.
#[derive(Debug, Clone, Copy)]
struct Starting {
    core: usize,
    /// The id came from an unconfirmed client.
    unconfirmed: bool,
    /// The round in which the router saw its first handshake fail.
    failed_in_round: Option<u64>,
}

/// Where [`Sim::route`] sends a connection.
enum Route {
    To { core: usize },
    Refuse(ErrorCode, &'static str),
    Start { id: SessionId, unconfirmed: bool },
}

/// The server side: its passive cores, and the router that owns them.
#[derive(Debug)]
struct Server {
    /// Every passive core made, by number. A core the router forgot stays
    /// (closed) while its connections flush their last frames.
    cores: Vec<Core>,
    router: Option<Router>,
    /// See [`Setup::router_lags`].
    lags: bool,
    /// The core handed to the server's application, if any.
    handed: Option<usize>,
}

/// The core of one side of a link, and the link's generation there.
fn side_core<'a>(
    client_core: &'a mut Core,
    server_cores: &'a mut [Core],
    link: &Link,
    client: bool,
) -> Option<(&'a mut Core, Generation)> {
    if client {
        Some((client_core, link.client_gen))
    } else {
        link.server_core.map(|index| (&mut server_cores[index], link.server_gen))
    }
}

/// A client and a server over simulated links.
#[derive(Debug)]
pub struct Sim {
    now: Instant,
    options: Options,
    client: Core,
    server: Server,
    links: Vec<Link>,
    apps: [App; 2],
    link_capacity: usize,
    failing_dials: u32,
    nonces: u64,
    rounds: u64,
    cuts_at_offset: u64,
}

fn side(client: bool) -> usize {
    usize::from(!client)
}

impl Sim {
    /// A client and a server; the client has just dialled, and nothing has
    /// moved yet, so the first steps can break the first handshake.
    pub fn new(setup: &Setup) -> Sim {
        let options = setup.options();
        let server = if setup.router {
            Server { cores: Vec::new(), router: Some(Router::default()), lags: setup.router_lags, handed: None }
        } else {
            let core = Core::passive(options.clone(), SessionId::from_bytes([0x42; 16]));
            Server { cores: vec![core], router: None, lags: false, handed: Some(0) }
        };
        let mut sim = Sim {
            now: Instant::now(),
            client: Core::active(options.clone()),
            options,
            server,
            links: Vec::new(),
            apps: [App::default(), App::default()],
            link_capacity: usize::from(setup.link_capacity).clamp(1, 16384),
            failing_dials: 0,
            nonces: 0,
            rounds: 0,
            cuts_at_offset: 0,
        };
        sim.dial();
        sim
    }

    /// The core of one side's application: the server's only once a
    /// session was handed to it.
    fn app_core(&mut self, client: bool) -> Option<&mut Core> {
        if client {
            Some(&mut self.client)
        } else {
            let index = self.server.handed?;
            Some(&mut self.server.cores[index])
        }
    }

    /// The core of the session handed to the server's application, if
    /// one was (always, without a router).
    pub fn handed_core(&self) -> Option<&Core> {
        self.server.handed.map(|index| &self.server.cores[index])
    }

    fn nonce(&mut self) -> Nonce {
        self.nonces += 1;
        let mut bytes = [0; 32];
        bytes[..8].copy_from_slice(&self.nonces.to_be_bytes());
        Nonce::from_bytes(bytes)
    }

    /// Applies one operation, then checks the invariants.
    pub fn apply(&mut self, op: &Op) {
        match *op {
            Op::Write { client, len } => self.write(client, usize::from(len), Handover::Borrowed),
            Op::WriteChunk { client, len } => self.write(client, usize::from(len), Handover::Shared),
            Op::Read { client, len } => self.read(client, usize::from(len)),
            Op::Run { rounds } => {
                for _ in 0..rounds % 16 {
                    self.round();
                }
            }
            Op::Advance { millis } => self.advance(Duration::from_millis(u64::from(millis % 4000))),
            Op::Cut => {
                if let Some(link) = self.links.last_mut() {
                    link.broken = true;
                }
                self.round();
            }
            Op::CutAfter { c2s, bytes } => {
                if let Some(link) = self.links.last_mut() {
                    let budget = Some(u64::from(bytes));
                    if c2s { link.c2s_cut_after = budget } else { link.s2c_cut_after = budget }
                }
            }
            Op::CutAtOffset { c2s, bytes } => {
                if let Some(link) = self.links.last_mut() {
                    // A cut already armed (or due) is never put off.
                    let arrivals = if c2s { &mut link.c2s_arrivals } else { &mut link.s2c_arrivals };
                    *arrivals = Some(arrivals.map_or(u64::from(bytes), |left| left.min(u64::from(bytes))));
                }
            }
            Op::ClientOnlyCut => {
                let now = self.now;
                if let Some(link) = self.links.last_mut().filter(|link| link.client_open) {
                    link.client_open = false;
                    link.s2c.clear();
                    let generation = link.client_gen;
                    self.client.connection_lost(now, generation);
                }
                self.round();
            }
            Op::WriteFails { client } => {
                let now = self.now;
                if let Some(link) = self.links.last_mut() {
                    let open = if client { link.client_open } else { link.server_open };
                    if let Some((core, generation)) =
                        side_core(&mut self.client, &mut self.server.cores, link, client).filter(|_| open)
                    {
                        if client {
                            link.eof_to_server = true
                        } else {
                            link.eof_to_client = true
                        }
                        core.write_failed(now, generation);
                    }
                }
                self.round();
            }
            Op::Blackhole => {
                if let Some(link) = self.links.last_mut() {
                    link.blackholed = true;
                }
            }
            Op::Stall { millis } => {
                let until = self.now + Duration::from_millis(u64::from(millis % 4000));
                if let Some(link) = self.links.last_mut() {
                    link.stalled_until = Some(until);
                }
            }
            Op::ForceReconnect => {
                if self.client.state() != ConnectionState::Closed {
                    self.dial();
                }
            }
            Op::FailDials { count } => self.failing_dials = u32::from(count % 8),
            Op::Shutdown { client } => {
                // Without a session yet, the server's application has
                // nothing to shut down.
                let Some(core) = self.app_core(client) else { return self.check_invariants() };
                let result = core.shutdown_write();
                let failed = core.failure().is_some();
                let app = &mut self.apps[side(client)];
                if result.is_ok() {
                    app.shut = true;
                } else {
                    assert!(app.closed || failed, "shutdown refused: {result:?}");
                }
            }
            Op::Close { client } => {
                let now = self.now;
                let Some(core) = self.app_core(client) else { return self.check_invariants() };
                core.close(now);
                self.apps[side(client)].closed = true;
            }
            Op::LentTransmit { client, close } => self.lent_transmit(client, close),
        }
        self.check_invariants();
    }

    fn write(&mut self, client: bool, len: usize, how: Handover) {
        let app = self.apps[side(client)].clone();
        let data: Vec<u8> = (0..len as u64).map(|i| pattern(client, app.written + i)).collect();
        // Without a session yet, the server's application cannot write.
        let Some(core) = self.app_core(client) else { return };
        let result = match how {
            Handover::Borrowed => core.write(&data),
            Handover::Shared => core.write_chunk(bytes::Bytes::from(data)),
        };
        let failed = core.failure().is_some();
        match result {
            Ok(taken) => {
                assert!(!app.shut && !app.closed, "write accepted after shutdown or close");
                self.apps[side(client)].written += taken as u64;
            }
            Err(Error::WriteAfterShutdown) => assert!(app.shut, "spurious WriteAfterShutdown"),
            Err(Error::Closed) => assert!(app.closed, "spurious Closed"),
            Err(_) => assert!(failed, "write error without failure"),
        }
        self.transmit_all();
    }

    fn verify_read(&mut self, client: bool, bytes: &[u8]) {
        let app = &mut self.apps[side(client)];
        assert!(!app.eof || bytes.is_empty(), "data after end of stream");
        for (offset, byte) in bytes.iter().enumerate() {
            let seq = app.read + offset as u64;
            assert_eq!(*byte, pattern(!client, seq), "byte {seq} read by the {} is wrong", name(client));
        }
        app.read += bytes.len() as u64;
    }

    fn read(&mut self, client: bool, len: usize) {
        let mut buf = vec![0; len.max(1)];
        let Some(core) = self.app_core(client) else { return };
        match core.read(&mut buf) {
            ReadOutcome::Data(count) => {
                let bytes = buf[..count].to_vec();
                self.verify_read(client, &bytes);
            }
            ReadOutcome::EndOfStream => {
                let app = &self.apps[side(client)];
                let peer = &self.apps[side(!client)];
                assert!(peer.shut, "end of stream that the peer never sent");
                assert_eq!(app.read, peer.written, "end of stream before every byte");
                self.apps[side(client)].eof = true;
            }
            ReadOutcome::Failed(_) => {}
            ReadOutcome::Pending => self.direct_read(client, &mut buf),
        }
        self.transmit_all();
    }

    /// Reads straight from the link into the application's buffer, as the
    /// shell does when the core allows it.
    fn direct_read(&mut self, client: bool, buf: &mut [u8]) {
        let handed = self.server.handed;
        let Some(core) = self.app_core(client) else { return };
        let Some(generation) = core.current_generation() else { return };
        let allowed = core.direct_read_len(generation);
        let now = self.now;
        let Some(link) = self.links.iter_mut().find(|link| {
            if client {
                link.client_gen == generation
            } else {
                link.server_core == handed && link.server_gen == generation
            }
        }) else {
            return;
        };
        if link.broken || link.blackholed || link.stalled_until.is_some_and(|until| until > now) {
            return;
        }
        let (queue, delivered) =
            if client { (&mut link.s2c, &mut link.s2c_delivered) } else { (&mut link.c2s, &mut link.c2s_delivered) };
        let count = allowed.min(buf.len()).min(queue.len());
        for (slot, byte) in buf.iter_mut().zip(queue.drain(..count)) {
            *slot = byte;
        }
        *delivered += count as u64;
        let Some(core) = self.app_core(client) else { return };
        core.direct_read_done(now, generation, count);
        let bytes = buf[..count].to_vec();
        self.verify_read(client, &bytes);
    }

    fn dial(&mut self) {
        if self.failing_dials > 0 {
            self.failing_dials -= 1;
            return;
        }
        let now = self.now;
        let (client_nonce, server_nonce) = (self.nonce(), self.nonce());
        let Ok(client_gen) = self.client.connect(now, client_nonce) else { return };
        let mut link = Link::new(client_gen, now + self.options.handshake_timeout);
        if self.server.router.is_none() {
            let Ok(server_gen) = self.server.cores[0].accept(now, server_nonce) else {
                self.client.connection_lost(now, client_gen);
                return;
            };
            link.server_core = Some(0);
            link.server_gen = server_gen;
        }
        self.links.push(link);
    }

    /// Reads what has arrived of the HELLO of link `index`, not routed yet,
    /// and routes the connection once the HELLO is whole (the router reads
    /// no byte past it); returns whether bytes moved.
    fn read_hello(&mut self, index: usize) -> bool {
        let link = &mut self.links[index];
        let mut moved = false;
        let hello = loop {
            match Hello::decode(&link.hello) {
                Ok((hello, _)) => break hello,
                Err(DecodeError::Incomplete { needed }) => {
                    let take = needed.saturating_sub(link.hello.len()).min(link.c2s.len());
                    if take == 0 {
                        return moved;
                    }
                    link.hello.extend(link.c2s.drain(..take));
                    link.c2s_delivered += take as u64;
                    moved = true;
                }
                Err(_) => {
                    self.refuse(index, ErrorCode::Protocol, "not a HELLO");
                    return true;
                }
            }
        };
        let now = self.now;
        let nonce = self.nonce();
        let core = match self.route(&hello) {
            Route::Refuse(code, reason) => return self.refuse(index, code, reason),
            Route::To { core } => core,
            Route::Start { id, unconfirmed } => {
                let core = self.server.cores.len();
                self.server.cores.push(Core::passive(self.options.clone(), id));
                let router = self.server.router.as_mut().expect("routing with a router");
                router.starting.insert(id, Starting { core, unconfirmed, failed_in_round: None });
                router.stats.sessions_started += 1;
                router.stats.started_unconfirmed += u64::from(unconfirmed);
                core
            }
        };
        let link = &mut self.links[index];
        match self.server.cores[core].accept_with_hello(now, nonce, hello) {
            Ok(generation) => {
                link.server_core = Some(core);
                link.server_gen = generation;
            }
            Err(_) => {
                // The session ended meanwhile: the connection is dropped.
                link.server_open = false;
                link.eof_to_client = true;
            }
        }
        true
    }

    /// Where a connection with `hello` goes: `server::Router::route`'s
    /// decisions, in the same order.
    fn route(&mut self, hello: &Hello) -> Route {
        let Server { cores, router, .. } = &mut self.server;
        let router = router.as_mut().expect("routing with a router");
        let id = hello.session_id();
        if !id.is_new() {
            let live = router.sessions.get(&id).copied().filter(|&core| cores[core].state() != ConnectionState::Closed);
            let starting = router.starting.get(&id).map(|starting| starting.core);
            if let Some(core) = live.or(starting) {
                router.stats.resumes_routed += 1;
                router.stats.resumes_unconfirmed += u64::from(hello.is_unconfirmed());
                router.stats.routed_to_starting += u64::from(live.is_none());
                return Route::To { core };
            }
            if !hello.is_unconfirmed() || router.holds(&id) {
                return Route::Refuse(ErrorCode::SessionUnknown, "unknown session");
            }
            if hello.reader_seq() != 0 || hello.flags() & FLAG_EOS_RECEIVED != 0 {
                return Route::Refuse(ErrorCode::InvalidSequence, "an unconfirmed session has received nothing");
            }
            return Route::Start { id, unconfirmed: true };
        }
        Route::Start { id: router.fresh_id(), unconfirmed: false }
    }

    /// The router refuses the connection of link `index`: one ERROR frame,
    /// then its end is closed. Returns true (bytes moved).
    fn refuse(&mut self, index: usize, code: ErrorCode, reason: &str) -> bool {
        if let Some(router) = self.server.router.as_mut() {
            if code == ErrorCode::SessionUnknown {
                router.stats.refused_unknown += 1;
            } else {
                router.stats.refused_other += 1;
            }
        }
        let link = &mut self.links[index];
        // A refusal is small: any real socket buffer takes it whole.
        link.carry(false, usize::MAX, &[&proto::error_frame(code, reason)]);
        link.server_open = false;
        link.eof_to_client = true;
        true
    }

    /// The router's bookkeeping after the cores moved, as the listener's
    /// tasks do it: a new session whose first handshake completed enters
    /// the table and goes to the application, one whose first handshake
    /// failed is forgotten (and its core closed, as a dropped pipe is), and
    /// a session that ended leaves the table.
    fn settle_sessions(&mut self) {
        let (now, round) = (self.now, self.rounds);
        let Server { cores, router, lags, handed } = &mut self.server;
        let Some(router) = router.as_mut() else { return };
        let mut settled = Vec::new();
        for (&id, starting) in &mut router.starting {
            let Starting { core, unconfirmed, .. } = *starting;
            match cores[core].first_handshake() {
                FirstHandshake::UnderWay => starting.failed_in_round = None,
                FirstHandshake::Completed => settled.push((id, core, unconfirmed, true)),
                FirstHandshake::Failed => {
                    let seen = *starting.failed_in_round.get_or_insert(round);
                    // Lagging, the next round's dial still finds it.
                    if !*lags || seen + 1 < round {
                        settled.push((id, core, unconfirmed, false));
                    }
                }
            }
        }
        for (id, core, unconfirmed, completed) in settled {
            router.starting.remove(&id);
            if completed {
                router.sessions.insert(id, core);
                router.stats.sessions_created += 1;
                router.stats.created_unconfirmed += u64::from(unconfirmed);
                assert!(handed.is_none(), "a second session handed to the server's application: {id}");
                *handed = Some(core);
            } else {
                router.stats.failed_first_handshakes += 1;
                cores[core].close(now);
            }
        }
        let ended: Vec<SessionId> = router
            .sessions
            .iter()
            .filter(|&(_, &core)| cores[core].state() == ConnectionState::Closed)
            .map(|(&id, _)| id)
            .collect();
        for id in ended {
            router.sessions.remove(&id);
            router.ended.insert(id);
        }
    }

    fn drain_events(&mut self) {
        let now = self.now;
        while let Some(event) = self.client.poll_event() {
            if let Event::ConnectionClosed { generation } = event {
                for link in &mut self.links {
                    if link.client_gen == generation && link.client_open {
                        // The server sees EOF after the bytes in flight.
                        link.client_open = false;
                        link.eof_to_server = true;
                        link.s2c.clear();
                    }
                }
            }
        }
        for index in 0..self.server.cores.len() {
            while let Some(event) = self.server.cores[index].poll_event() {
                if let Event::ConnectionClosed { generation } = event {
                    for link in &mut self.links {
                        if link.server_core == Some(index) && link.server_gen == generation && link.server_open {
                            link.server_open = false;
                            link.eof_to_client = true;
                            link.c2s.clear();
                        }
                    }
                }
            }
        }
        self.settle_sessions();
        let mut cuts = 0;
        for link in &mut self.links {
            if !link.broken && link.arrivals_done() {
                link.broken = true;
                cuts += 1;
            }
            // The router stops waiting for a HELLO after the handshake
            // timeout.
            if link.server_core.is_none() && link.server_open && link.hello_deadline <= now {
                link.server_open = false;
                link.eof_to_client = true;
            }
        }
        self.cuts_at_offset += cuts;
        // Tell each side about broken links it still uses, and about ends
        // closed by the peer once the bytes before the close have arrived.
        let mut lost = Vec::new();
        for link in &mut self.links {
            if link.eof_to_client && link.client_open && link.s2c.is_empty() && !link.blackholed {
                link.client_open = false;
                lost.push((None, link.client_gen));
            }
            if link.eof_to_server && link.server_open && link.c2s.is_empty() && !link.blackholed {
                link.server_open = false;
                lost.push((Some(link.server_core), link.server_gen));
            }
            if link.broken {
                if link.client_open {
                    link.client_open = false;
                    lost.push((None, link.client_gen));
                }
                if link.server_open {
                    link.server_open = false;
                    lost.push((Some(link.server_core), link.server_gen));
                }
            }
        }
        for (server_core, generation) in lost {
            match server_core {
                None => self.client.connection_lost(now, generation),
                Some(Some(index)) => self.server.cores[index].connection_lost(now, generation),
                // A connection the router was still reading: nobody else knew it.
                Some(None) => {}
            }
        }
        self.links.retain(|link| link.client_open || link.server_open);
    }

    fn transmit_all(&mut self) {
        let now = self.now;
        let capacity = self.link_capacity;
        for index in 0..self.links.len() {
            for client in [true, false] {
                let link = &self.links[index];
                let open = if client { link.client_open } else { link.server_open };
                let Some((core, generation)) =
                    side_core(&mut self.client, &mut self.server.cores, link, client).filter(|_| open)
                else {
                    continue;
                };
                loop {
                    let link = &mut self.links[index];
                    let Some(transmit) = core.poll_transmit(generation) else { break };
                    let taken = link.carry(client, capacity, transmit.parts());
                    core.transmitted(now, generation, taken);
                    if taken == 0 {
                        break;
                    }
                }
            }
        }
    }

    fn lent_transmit(&mut self, client: bool, close: bool) {
        let now = self.now;
        let Some(link) = self.links.last() else { return };
        let open = if client { link.client_open } else { link.server_open };
        let server_core = link.server_core;
        // Only the application closes its pipe: not a core the server has
        // not handed out.
        let close = close && (client || server_core == self.server.handed);
        let Some((core, generation)) =
            side_core(&mut self.client, &mut self.server.cores, link, client).filter(|_| open)
        else {
            return;
        };
        let Some(transmit) = core.poll_transmit(generation) else { return };
        // As the shell does: the header copied, the payload as shared
        // chunks, which must stay intact while the core goes on (and
        // acknowledgements trim the send buffer).
        let head = transmit.parts()[0].to_vec();
        let [first, second] = transmit.payload_bytes();
        core.lend_transmit(generation);
        if close {
            core.close(now);
            self.apps[side(client)].closed = true;
        } else {
            self.deliver_all();
        }
        let capacity = self.link_capacity;
        let link = self.links.iter_mut().find(|link| {
            if client {
                link.client_open && link.client_gen == generation
            } else {
                link.server_open && link.server_core == server_core && link.server_gen == generation
            }
        });
        let taken = link.map_or(0, |link| link.carry(client, capacity, &[&head, &first, &second]));
        let core = if client { &mut self.client } else { &mut self.server.cores[server_core.unwrap_or(0)] };
        core.transmitted(now, generation, taken);
    }

    fn deliver_all(&mut self) -> bool {
        let now = self.now;
        let mut moved = false;
        let count = self.links.len();
        for step in 0..count {
            // Alternate the order so that a new connection's handshake
            // sometimes overtakes bytes still in flight on an old one.
            let index = if self.rounds.is_multiple_of(2) { step } else { count - 1 - step };
            let link = &self.links[index];
            if link.broken || link.blackholed || link.stalled_until.is_some_and(|until| until > now) {
                continue;
            }
            if link.server_core.is_none() && link.server_open {
                moved |= self.read_hello(index);
            }
            for client in [true, false] {
                let link = &mut self.links[index];
                let open = if client { link.client_open } else { link.server_open };
                let Some((core, generation)) =
                    side_core(&mut self.client, &mut self.server.cores, link, client).filter(|_| open)
                else {
                    continue;
                };
                let (queue, delivered) = if client {
                    (&mut link.s2c, &mut link.s2c_delivered)
                } else {
                    (&mut link.c2s, &mut link.c2s_delivered)
                };
                // Alternate between the two ways a driver feeds the core.
                let copy_path = self.rounds.is_multiple_of(3);
                while !queue.is_empty() {
                    if copy_path && core.recv_buffered() == 0 {
                        let chunk: Vec<u8> = queue.drain(..queue.len().min(97)).collect();
                        *delivered += chunk.len() as u64;
                        core.handle_read(now, generation, &chunk);
                        moved = true;
                        continue;
                    }
                    let Some(target) = core.recv_target(generation) else { break };
                    let count = target.len().min(queue.len());
                    for (slot, byte) in target.iter_mut().zip(queue.drain(..count)) {
                        *slot = byte;
                    }
                    *delivered += count as u64;
                    core.recv_done(now, generation, count);
                    moved |= count > 0;
                    if count == 0 {
                        break;
                    }
                }
            }
        }
        moved
    }

    /// One round: events, dialling, transmitting, delivering.
    fn round(&mut self) {
        self.rounds += 1;
        self.drain_events();
        if self.client.state() == ConnectionState::Disconnected {
            self.dial();
        }
        self.transmit_all();
        // Keep moving while bytes move (a small link needs many passes).
        for _ in 0..64 {
            let moved = self.deliver_all();
            self.drain_events();
            self.transmit_all();
            if !moved {
                break;
            }
        }
    }

    /// When a timer of either side (or the router's wait for a HELLO) is
    /// due next.
    fn next_timeout(&self) -> Option<Instant> {
        let routing = self.links.iter().filter(|link| link.server_core.is_none() && link.server_open);
        [self.client.poll_timeout()]
            .into_iter()
            .chain(self.server.cores.iter().map(Core::poll_timeout))
            .chain(routing.map(|link| Some(link.hello_deadline)))
            .flatten()
            .min()
    }

    /// Fires the timers due at `now` on every core.
    fn fire_timeouts(&mut self, now: Instant) {
        self.client.handle_timeout(now);
        for core in &mut self.server.cores {
            core.handle_timeout(now);
        }
    }

    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        for _ in 0..10_000 {
            self.round();
            match self.next_timeout() {
                Some(at) if at <= target => {
                    self.now = self.now.max(at);
                    self.fire_timeouts(self.now);
                }
                _ => break,
            }
        }
        self.now = target;
        self.fire_timeouts(self.now);
        self.round();
    }

    fn check_invariants(&self) {
        let client = &self.client;
        let sides = match self.handed_core() {
            Some(server) => vec![(true, client, Some(server)), (false, server, Some(client))],
            None => vec![(true, client, None)],
        };
        for (is_client, core, peer) in sides {
            let app = &self.apps[side(is_client)];
            let who = name(is_client);
            assert_eq!(core.written_seq(), app.written, "{who}: written");
            // Without a session on the server, nothing was written to the
            // client (the confirmation carries no byte).
            let peer_written = peer.map_or(0, Core::written_seq);
            assert!(core.recv_seq() <= peer_written, "{who}: received more than written");
            if let Some(peer) = peer {
                assert!(core.acked_seq() <= peer.recv_seq(), "{who}: acked beyond what the peer received");
            }
            assert!(app.read <= core.recv_seq(), "{who}: read more than received");
            assert_eq!(core.stats().bytes_received, core.recv_seq(), "{who}: received counter");
            let limit = core_storage_limit(core);
            assert!(core.allocated_bytes() <= limit, "{who}: {} bytes held", core.allocated_bytes());
        }
    }

    /// Removes every fault, lets both sides run to quiescence, and checks
    /// that both streams arrived whole (or, when a side closed, that what
    /// arrived is an exact prefix). With a router: exactly one session was
    /// handed to the server's application, and no connection was refused
    /// as naming an unknown session.
    pub fn heal_and_check(&mut self) {
        self.failing_dials = 0;
        for link in &mut self.links {
            link.c2s_cut_after = None;
            link.s2c_cut_after = None;
            link.stalled_until = None;
        }
        let closed = self.apps.iter().any(|app| app.closed);
        if closed {
            for _ in 0..20 {
                self.advance(Duration::from_millis(300));
            }
            for client in [true, false] {
                if self.apps[side(client)].closed {
                    let state = self.app_core(client).map(|core| core.state());
                    assert_eq!(state, Some(ConnectionState::Closed), "{} open after close", name(client));
                }
            }
            return;
        }
        for _ in 0..100_000 {
            self.round();
            for client in [true, false] {
                loop {
                    let before = self.apps[side(client)].read;
                    self.read(client, 4096);
                    if self.apps[side(client)].read == before {
                        break;
                    }
                }
            }
            self.check_invariants();
            if self.quiescent() {
                break;
            }
            if self.nothing_moves() {
                match self.next_timeout() {
                    Some(at) => {
                        self.now = self.now.max(at);
                        self.fire_timeouts(self.now);
                    }
                    None => self.now += Duration::from_millis(100),
                }
            }
        }
        assert!(self.client.failure().is_none(), "client failed: {:?}", self.client.failure());
        let server = self.handed_core().expect("a session handed to the server's application");
        assert!(server.failure().is_none(), "server failed: {:?}", server.failure());
        assert_eq!(self.router_stats().refused_unknown, 0, "a session was lost");
        assert!(self.quiescent(), "did not converge: {self:#?}");
        assert!(self.client.is_confirmed(), "connected and not confirmed");
        assert_eq!(self.client.session_id(), server.session_id(), "the client's session is the one handed out");
        for client in [true, false] {
            let (core, peer) = if client { (&self.client, server) } else { (server, &self.client) };
            assert_eq!(self.apps[side(client)].read, self.apps[side(!client)].written, "{} read", name(client));
            assert_eq!(core.recv_seq(), peer.written_seq(), "{} sequence", name(client));
            assert_eq!(core.acked_seq(), core.written_seq(), "{} acknowledged", name(client));
            assert_eq!(self.apps[side(client)].eof, self.apps[side(!client)].shut, "{} end of stream", name(client));
            if self.apps[side(client)].shut {
                assert!(core.is_shutdown_complete(), "{} shutdown not acknowledged", name(client));
            }
        }
    }

    fn quiescent(&self) -> bool {
        let Some(server) = self.handed_core() else { return false };
        self.client.state() == ConnectionState::Connected
            && self.apps.iter().enumerate().all(|(index, app)| {
                let peer = &self.apps[1 - index];
                app.read == peer.written && app.eof == peer.shut
            })
            && self.client.acked_seq() == self.client.written_seq()
            && server.acked_seq() == server.written_seq()
            && (!self.apps[0].shut || self.client.is_shutdown_complete())
            && (!self.apps[1].shut || server.is_shutdown_complete())
    }

    fn nothing_moves(&self) -> bool {
        let now = self.now;
        self.links.iter().all(|link| {
            link.broken
                || link.blackholed
                || link.stalled_until.is_some_and(|until| until > now)
                || ((link.c2s.is_empty() || !link.server_open) && (link.s2c.is_empty() || !link.client_open))
        })
    }

    /// The client's core and the core of the session handed to the
    /// server's application (for tests that look closer).
    ///
    /// # Panics
    ///
    /// With a router, before a session was handed out.
    pub fn cores(&self) -> (&Core, &Core) {
        (&self.client, self.handed_core().expect("a session handed to the server's application"))
    }

    /// What the router did (all zeros without one).
    pub fn router_stats(&self) -> RouterStats {
        self.server.router.as_ref().map(|router| router.stats).unwrap_or_default()
    }

    /// Bytes the newest link delivered so far, client to server and
    /// server to client.
    pub fn newest_link_delivered(&self) -> Option<(u64, u64)> {
        self.links.last().map(|link| (link.c2s_delivered, link.s2c_delivered))
    }

    /// How many links an [`Op::CutAtOffset`] broke.
    pub fn cuts_at_offset(&self) -> u64 {
        self.cuts_at_offset
    }
}

fn name(client: bool) -> &'static str {
    if client { "client" } else { "server" }
}

/// The most storage a core may hold: its send buffer, its receive buffer
/// (which may exceed its limit by one read), and rounding to powers of two.
fn core_storage_limit(_core: &Core) -> usize {
    // Generous but finite: twice the largest configurable send buffer plus
    // receive buffer plus one read.
    2 * 65536 + 4 * 16384
}

/// Runs `ops` from `setup`, then heals and checks.
pub fn run(setup: &Setup, ops: &[Op]) {
    let mut sim = Sim::new(setup);
    for op in ops {
        sim.apply(op);
    }
    sim.heal_and_check();
}

/// Feeds arbitrary bytes to the decoders and to cores in every phase: none
/// may panic, and memory stays bounded.
pub fn decode_garbage(data: &[u8]) {
    let _ = Hello::decode(data);
    for window in data.windows(proto::HEADER_LEN).take(64) {
        if let Some(header) = window.first_chunk::<{ proto::HEADER_LEN }>() {
            let _ = FrameHeader::decode(*header, 1 << 16);
        }
    }
    let split = data.first().map_or(0, |byte| usize::from(*byte)).min(data.len());
    let (first, second) = data.split_at(split);
    for secret in [false, true] {
        let setup = Setup {
            send_buffer: 4096,
            max_payload: 512,
            recv_buffer: 1024,
            secret,
            link_capacity: 4096,
            router: secret,
            router_lags: false,
        };
        let options = setup.options();
        let now = Instant::now();
        let nonce = Nonce::from_bytes([1; 32]);
        // A server fed garbage as a client's first bytes.
        let mut server = Core::passive(options.clone(), SessionId::from_bytes([7; 16]));
        if let Ok(generation) = server.accept(now, nonce) {
            server.handle_read(now, generation, first);
            server.handle_read(now, generation, second);
            drain(&mut server, generation);
        }
        // A client fed garbage as the server's answer.
        let mut client = Core::active(options.clone());
        if let Ok(generation) = client.connect(now, nonce) {
            client.handle_read(now, generation, data);
            drain(&mut client, generation);
        }
        // Both after a good handshake, then fed garbage as frames.
        let mut sim = Sim::new(&setup);
        sim.apply(&Op::Write { client: true, len: 100 });
        sim.apply(&Op::Run { rounds: 6 });
        for client in [true, false] {
            let Some(core) = sim.app_core(client) else { continue };
            if let Some(generation) = core.current_generation() {
                core.handle_read(now, generation, first);
                core.handle_read(now, generation, second);
                drain(core, generation);
                let mut buf = [0; 4096];
                while let ReadOutcome::Data(count) = core.read(&mut buf) {
                    if count == 0 {
                        break;
                    }
                }
                assert!(core.allocated_bytes() <= 4096 + 8192 + data.len().next_power_of_two() * 2);
            }
        }
    }
}

fn drain(core: &mut Core, generation: Generation) {
    while core.poll_event().is_some() {}
    for _ in 0..64 {
        let Some(transmit) = core.poll_transmit(generation) else { break };
        let count = transmit.len();
        core.transmitted(Instant::now(), generation, count);
        if count == 0 {
            break;
        }
    }
}
