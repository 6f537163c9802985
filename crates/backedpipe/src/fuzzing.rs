//! A deterministic simulated link between two [`Core`]s, with virtual time
//! and injectable faults (cuts at any byte offset, one-sided cuts, stalls,
//! black holes, failing dials), and the model checks that drive it: shared
//! by the proptest model test and the cargo-fuzz targets.
//!
//! Not part of the public API: it exists only under `cfg(test)` and
//! `cfg(fuzzing)`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::core::{ConnectionState, Core, Event, Generation, ReadOutcome};
use crate::error::Error;
use crate::options::{Options, Secret};
use crate::proto::{self, FrameHeader, Hello, Nonce, SessionId};

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
    /// one direction (this lands inside handshakes and replays too).
    CutAfter {
        /// Client-to-server direction (else server-to-client).
        c2s: bool,
        /// Bytes before the break.
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
}

impl Setup {
    fn options(&self) -> Options {
        let send_buffer_bytes = usize::from(self.send_buffer).clamp(64, 65536);
        Options::new()
            .send_buffer_bytes(send_buffer_bytes)
            .max_payload_bytes(u32::from(self.max_payload).clamp(1, 2048))
            .recv_buffer_bytes(usize::from(self.recv_buffer).clamp(1, 8192))
            .max_unsent_bytes(send_buffer_bytes / 2 + 1)
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
    server_gen: Generation,
    client_open: bool,
    server_open: bool,
    c2s: VecDeque<u8>,
    s2c: VecDeque<u8>,
    c2s_cut_after: Option<u64>,
    s2c_cut_after: Option<u64>,
    broken: bool,
    blackholed: bool,
    stalled_until: Option<Instant>,
    /// The server closed its end: the client sees EOF after `s2c` drains.
    eof_to_client: bool,
    /// The client closed its end: the server sees EOF after `c2s` drains.
    eof_to_server: bool,
}

impl Link {
    /// Takes what one side writes, as far as there is room (all of it if
    /// the link swallows bytes); returns how many bytes were taken.
    fn carry(&mut self, client: bool, capacity: usize, parts: &[&[u8]]) -> usize {
        let swallow = self.broken || self.blackholed;
        let (queue, budget) =
            if client { (&mut self.c2s, &mut self.c2s_cut_after) } else { (&mut self.s2c, &mut self.s2c_cut_after) };
        let mut room = if swallow { usize::MAX } else { capacity.saturating_sub(queue.len()) };
        if let Some(left) = budget {
            room = room.min(usize::try_from(*left).unwrap_or(usize::MAX));
        }
        let mut taken = 0;
        for part in parts {
            let count = part.len().min(room - taken);
            if !swallow {
                queue.extend(&part[..count]);
            }
            taken += count;
        }
        if let Some(left) = budget {
            *left -= taken as u64;
            if *left == 0 {
                self.broken = true;
            }
        }
        taken
    }
}

/// Two cores over simulated links.
#[derive(Debug)]
pub struct Sim {
    now: Instant,
    client: Core,
    server: Core,
    links: Vec<Link>,
    apps: [App; 2],
    link_capacity: usize,
    failing_dials: u32,
    nonces: u64,
    rounds: u64,
}

fn side(client: bool) -> usize {
    usize::from(!client)
}

impl Sim {
    /// A client and a server, disconnected; the client dials on the first
    /// step.
    pub fn new(setup: &Setup) -> Sim {
        let options = setup.options();
        Sim {
            now: Instant::now(),
            client: Core::active(options.clone()),
            server: Core::passive(options, SessionId::from_bytes([0x42; 16])),
            links: Vec::new(),
            apps: [App::default(), App::default()],
            link_capacity: usize::from(setup.link_capacity).clamp(1, 16384),
            failing_dials: 0,
            nonces: 0,
            rounds: 0,
        }
    }

    fn core(&mut self, client: bool) -> &mut Core {
        if client { &mut self.client } else { &mut self.server }
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
            Op::Write { client, len } => self.write(client, usize::from(len)),
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
                let failed = self.links.last_mut().and_then(|link| {
                    let open = if client { link.client_open } else { link.server_open };
                    if !open {
                        return None;
                    }
                    if client {
                        link.eof_to_server = true
                    } else {
                        link.eof_to_client = true
                    }
                    Some(if client { link.client_gen } else { link.server_gen })
                });
                if let Some(generation) = failed {
                    self.core(client).write_failed(now, generation);
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
                let result = self.core(client).shutdown_write();
                let app = &mut self.apps[side(client)];
                if result.is_ok() {
                    app.shut = true;
                } else {
                    assert!(app.closed || self.core(client).failure().is_some(), "shutdown refused: {result:?}");
                }
            }
            Op::Close { client } => {
                let now = self.now;
                self.core(client).close(now);
                self.apps[side(client)].closed = true;
            }
            Op::LentTransmit { client, close } => self.lent_transmit(client, close),
        }
        self.check_invariants();
    }

    fn write(&mut self, client: bool, len: usize) {
        let app = self.apps[side(client)].clone();
        let data: Vec<u8> = (0..len as u64).map(|i| pattern(client, app.written + i)).collect();
        match self.core(client).write(&data) {
            Ok(taken) => {
                assert!(!app.shut && !app.closed, "write accepted after shutdown or close");
                self.apps[side(client)].written += taken as u64;
            }
            Err(Error::WriteAfterShutdown) => assert!(app.shut, "spurious WriteAfterShutdown"),
            Err(Error::Closed) => assert!(app.closed, "spurious Closed"),
            Err(_) => assert!(self.core(client).failure().is_some(), "write error without failure"),
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
        match self.core(client).read(&mut buf) {
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
        let Some(generation) = self.core(client).current_generation() else { return };
        let allowed = self.core(client).direct_read_len(generation);
        let now = self.now;
        let Some(link) = self
            .links
            .iter_mut()
            .find(|link| if client { link.client_gen == generation } else { link.server_gen == generation })
        else {
            return;
        };
        if link.broken || link.blackholed || link.stalled_until.is_some_and(|until| until > now) {
            return;
        }
        let queue = if client { &mut link.s2c } else { &mut link.c2s };
        let count = allowed.min(buf.len()).min(queue.len());
        for (slot, byte) in buf.iter_mut().zip(queue.drain(..count)) {
            *slot = byte;
        }
        self.core(client).direct_read_done(now, generation, count);
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
        let Ok(server_gen) = self.server.accept(now, server_nonce) else {
            self.client.connection_lost(now, client_gen);
            return;
        };
        self.links.push(Link {
            client_gen,
            server_gen,
            client_open: true,
            server_open: true,
            c2s: VecDeque::new(),
            s2c: VecDeque::new(),
            c2s_cut_after: None,
            s2c_cut_after: None,
            broken: false,
            blackholed: false,
            stalled_until: None,
            eof_to_client: false,
            eof_to_server: false,
        });
    }

    fn drain_events(&mut self) {
        let now = self.now;
        for client in [true, false] {
            while let Some(event) = self.core(client).poll_event() {
                if let Event::ConnectionClosed { generation } = event {
                    for link in &mut self.links {
                        if client && link.client_gen == generation && link.client_open {
                            // The server sees EOF after the bytes in flight.
                            link.client_open = false;
                            link.eof_to_server = true;
                            link.s2c.clear();
                        } else if !client && link.server_gen == generation && link.server_open {
                            link.server_open = false;
                            link.eof_to_client = true;
                            link.c2s.clear();
                        }
                    }
                }
            }
        }
        // Tell each side about broken links it still uses, and about ends
        // closed by the peer once the bytes before the close have arrived.
        let mut lost = Vec::new();
        for link in &mut self.links {
            if link.eof_to_client && link.client_open && link.s2c.is_empty() && !link.blackholed {
                link.client_open = false;
                lost.push((true, link.client_gen));
            }
            if link.eof_to_server && link.server_open && link.c2s.is_empty() && !link.blackholed {
                link.server_open = false;
                lost.push((false, link.server_gen));
            }
            if link.broken {
                if link.client_open {
                    link.client_open = false;
                    lost.push((true, link.client_gen));
                }
                if link.server_open {
                    link.server_open = false;
                    lost.push((false, link.server_gen));
                }
            }
        }
        for (client, generation) in lost {
            self.core(client).connection_lost(now, generation);
        }
        self.links.retain(|link| link.client_open || link.server_open);
    }

    fn transmit_all(&mut self) {
        let now = self.now;
        let capacity = self.link_capacity;
        for index in 0..self.links.len() {
            for client in [true, false] {
                let link = &mut self.links[index];
                let (generation, open) =
                    if client { (link.client_gen, link.client_open) } else { (link.server_gen, link.server_open) };
                if !open {
                    continue;
                }
                let core = if client { &mut self.client } else { &mut self.server };
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
        let (generation, open) =
            if client { (link.client_gen, link.client_open) } else { (link.server_gen, link.server_open) };
        if !open {
            return;
        }
        let core = self.core(client);
        let Some(transmit) = core.poll_transmit(generation) else { return };
        let bytes = transmit.parts().concat();
        core.lend_transmit(generation);
        if close {
            core.close(now);
            self.apps[side(client)].closed = true;
        } else {
            self.deliver_all();
        }
        let capacity = self.link_capacity;
        let link = self.links.iter_mut().find(|link| {
            let (gen_of_side, open) =
                if client { (link.client_gen, link.client_open) } else { (link.server_gen, link.server_open) };
            open && gen_of_side == generation
        });
        let taken = link.map_or(0, |link| link.carry(client, capacity, &[&bytes]));
        self.core(client).transmitted(now, generation, taken);
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
            for client in [true, false] {
                let link = &mut self.links[index];
                let (generation, open, queue) = if client {
                    (link.client_gen, link.client_open, &mut link.s2c)
                } else {
                    (link.server_gen, link.server_open, &mut link.c2s)
                };
                if !open {
                    continue;
                }
                let core = if client { &mut self.client } else { &mut self.server };
                // Alternate between the two ways a driver feeds the core.
                let copy_path = self.rounds.is_multiple_of(3);
                while !queue.is_empty() {
                    if copy_path && core.recv_buffered() == 0 {
                        let chunk: Vec<u8> = queue.drain(..queue.len().min(97)).collect();
                        core.handle_read(now, generation, &chunk);
                        moved = true;
                        continue;
                    }
                    let Some(target) = core.recv_target(generation) else { break };
                    let count = target.len().min(queue.len());
                    for (slot, byte) in target.iter_mut().zip(queue.drain(..count)) {
                        *slot = byte;
                    }
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

    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        for _ in 0..10_000 {
            self.round();
            let next = [self.client.poll_timeout(), self.server.poll_timeout()].into_iter().flatten().min();
            match next {
                Some(at) if at <= target => {
                    self.now = self.now.max(at);
                    let now = self.now;
                    self.client.handle_timeout(now);
                    self.server.handle_timeout(now);
                }
                _ => break,
            }
        }
        self.now = target;
        let now = self.now;
        self.client.handle_timeout(now);
        self.server.handle_timeout(now);
        self.round();
    }

    fn check_invariants(&self) {
        for (client, core, peer) in [(true, &self.client, &self.server), (false, &self.server, &self.client)] {
            let app = &self.apps[side(client)];
            assert_eq!(core.written_seq(), app.written, "{}: written", name(client));
            assert!(core.recv_seq() <= peer.written_seq(), "{}: received more than written", name(client));
            assert!(core.acked_seq() <= peer.recv_seq(), "{}: acked beyond what the peer received", name(client));
            assert!(app.read <= core.recv_seq(), "{}: read more than received", name(client));
            assert_eq!(core.stats().bytes_received, core.recv_seq(), "{}: received counter", name(client));
            let limit = core_storage_limit(core);
            assert!(core.allocated_bytes() <= limit, "{}: {} bytes held", name(client), core.allocated_bytes());
        }
    }

    /// Removes every fault, lets both sides run to quiescence, and checks
    /// that both streams arrived whole (or, when a side closed, that what
    /// arrived is an exact prefix).
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
                    assert_eq!(self.core(client).state(), ConnectionState::Closed, "{} open after close", name(client));
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
                let next = [self.client.poll_timeout(), self.server.poll_timeout()].into_iter().flatten().min();
                match next {
                    Some(at) => {
                        self.now = self.now.max(at);
                        let now = self.now;
                        self.client.handle_timeout(now);
                        self.server.handle_timeout(now);
                    }
                    None => self.now += Duration::from_millis(100),
                }
            }
        }
        assert!(self.client.failure().is_none(), "client failed: {:?}", self.client.failure());
        assert!(self.server.failure().is_none(), "server failed: {:?}", self.server.failure());
        assert!(self.quiescent(), "did not converge: {self:#?}");
        for client in [true, false] {
            let (core, peer) = if client { (&self.client, &self.server) } else { (&self.server, &self.client) };
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
        self.client.state() == ConnectionState::Connected
            && self.apps.iter().enumerate().all(|(index, app)| {
                let peer = &self.apps[1 - index];
                app.read == peer.written && app.eof == peer.shut
            })
            && self.client.acked_seq() == self.client.written_seq()
            && self.server.acked_seq() == self.server.written_seq()
            && (!self.apps[0].shut || self.client.is_shutdown_complete())
            && (!self.apps[1].shut || self.server.is_shutdown_complete())
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

    /// The client and server cores (for tests that look closer).
    pub fn cores(&self) -> (&Core, &Core) {
        (&self.client, &self.server)
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
        let setup = Setup { send_buffer: 4096, max_payload: 512, recv_buffer: 1024, secret, link_capacity: 4096 };
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
            let core = if client { &mut sim.client } else { &mut sim.server };
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
