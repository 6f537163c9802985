//! The wire format (version 2): frame headers, the three handshake messages
//! and the frames that follow them, with their encoders and decoders.
//!
//! The [specification](crate::spec) is the normative description; this
//! module is its code.
//! Every decoder checks lengths before it looks at a byte, never allocates
//! more than [`MAX_HANDSHAKE_LEN`] bytes for a message, and never panics:
//! malformed input is a [`DecodeError`].
//!
//! A server that routes connections to sessions reads the first frame of a
//! new connection, decodes it with [`Hello::decode`], looks at
//! [`Hello::session_id`] and hands the connection and the `Hello` to the
//! right pipe (see `BackedPipe::resume_with_hello`).
//!
//! ```
//! use backedpipe::proto::{AuthMethod, Hello, Nonce, SessionId};
//!
//! let hello = Hello::new(AuthMethod::None, SessionId::NEW, 42, Nonce::from_bytes([7; 32]));
//! let bytes = hello.encode();
//! let (decoded, used) = Hello::decode(&bytes)?;
//! assert_eq!(used, bytes.len());
//! assert_eq!(decoded.reader_seq(), 42);
//! assert!(decoded.session_id().is_new());
//! # Ok::<(), backedpipe::proto::DecodeError>(())
//! ```

use std::fmt;

/// The protocol version this crate speaks.
pub const VERSION: u16 = 2;
/// The four bytes that open every HELLO payload.
pub const MAGIC: [u8; 4] = *b"BKPP";
/// Bytes in a frame header: a type byte and a big-endian `u32` length.
pub const HEADER_LEN: usize = 5;
/// The largest payload any handshake or control frame may have.
pub const MAX_HANDSHAKE_LEN: usize = 256;
/// The longest reason text an ERROR frame may carry.
pub const MAX_REASON_LEN: usize = 200;
/// The largest DATA payload a peer may ever announce it accepts (16 MiB).
pub const MAX_PAYLOAD_LIMIT: u32 = 16 << 20;
/// Bytes in an HMAC-SHA256 proof.
pub const PROOF_LEN: usize = 32;

/// HELLO payload length in version 2 (a longer HELLO is accepted; the extra
/// bytes are reserved for later versions and covered by the proofs).
pub const HELLO_LEN: usize = 4 + 2 + 1 + 1 + 16 + 8 + 8 + 8 + 4 + 32;
/// WELCOME payload length in version 2, without the proof.
pub const WELCOME_LEN: usize = 2 + 1 + 1 + 16 + 8 + 8 + 4 + 32;
/// Flag bit in HELLO, WELCOME and ACK: "I have received your end of stream".
pub const FLAG_EOS_RECEIVED: u8 = 0x01;
/// Flag bit in HELLO: "this session id came in a WELCOME, but the server has
/// sent nothing after my PROOF yet". The server may never have verified that
/// PROOF, and so may not hold the session: if it does not, it starts one
/// with this id instead of refusing the resume (see the
/// [specification](crate::spec), §5 and §10).
pub const FLAG_UNCONFIRMED: u8 = 0x02;

/// What a frame is, from its type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameKind {
    /// Client → server, first message of the handshake.
    Hello,
    /// Server → client, second message of the handshake.
    Welcome,
    /// Client → server, third message of the handshake.
    Proof,
    /// Application bytes; the sequence number is implicit.
    Data,
    /// The sender's reader sequence number: the peer may drop what is below.
    Ack,
    /// Keepalive request.
    Ping,
    /// Keepalive answer.
    Pong,
    /// End of stream: the sender will write no byte after the given one.
    EndOfStream,
    /// An error report; the connection is closed after it.
    Error,
}

impl FrameKind {
    /// The type byte on the wire.
    ///
    /// ```
    /// assert_eq!(backedpipe::proto::FrameKind::Data.to_byte(), 0x10);
    /// ```
    pub fn to_byte(self) -> u8 {
        match self {
            FrameKind::Hello => 0x01,
            FrameKind::Welcome => 0x02,
            FrameKind::Proof => 0x03,
            FrameKind::Data => 0x10,
            FrameKind::Ack => 0x11,
            FrameKind::Ping => 0x12,
            FrameKind::Pong => 0x13,
            FrameKind::EndOfStream => 0x14,
            FrameKind::Error => 0x1F,
        }
    }

    /// The kind for a type byte, if it is one.
    ///
    /// ```
    /// use backedpipe::proto::FrameKind;
    /// assert_eq!(FrameKind::from_byte(0x11), Some(FrameKind::Ack));
    /// assert_eq!(FrameKind::from_byte(0x99), None);
    /// ```
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0x01 => FrameKind::Hello,
            0x02 => FrameKind::Welcome,
            0x03 => FrameKind::Proof,
            0x10 => FrameKind::Data,
            0x11 => FrameKind::Ack,
            0x12 => FrameKind::Ping,
            0x13 => FrameKind::Pong,
            0x14 => FrameKind::EndOfStream,
            0x1F => FrameKind::Error,
            _ => return None,
        })
    }
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// More bytes are needed: at least `needed` in total.
    #[error("incomplete frame: {needed} bytes needed")]
    Incomplete {
        /// Total bytes needed to go on.
        needed: usize,
    },
    /// The type byte names no frame.
    #[error("unknown frame type {0:#04x}")]
    UnknownFrameType(u8),
    /// The length field is out of bounds for the frame's kind.
    #[error("{kind:?} frame with invalid length {len}")]
    BadLength {
        /// The frame's kind.
        kind: FrameKind,
        /// The length it announced.
        len: u32,
    },
    /// A HELLO that does not start with [`MAGIC`].
    #[error("not a backedpipe HELLO (bad magic)")]
    BadMagic,
    /// An authentication method this version does not know.
    #[error("unknown authentication method {0}")]
    UnknownAuthMethod(u8),
    /// A frame that is well-formed but not allowed at this point.
    #[error("unexpected {kind:?} frame {context}")]
    Unexpected {
        /// The frame's kind.
        kind: FrameKind,
        /// Where it arrived.
        context: &'static str,
    },
    /// A field whose value is impossible (e.g. an end of stream that does
    /// not match the bytes received).
    #[error("invalid {0}")]
    BadValue(&'static str),
}

/// A frame header: kind and payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the frame is.
    pub kind: FrameKind,
    /// Payload bytes that follow the header.
    pub len: u32,
}

impl FrameHeader {
    /// Decodes a header and checks its length against the bounds for its
    /// kind; DATA payloads may be at most `max_payload` bytes.
    ///
    /// # Errors
    ///
    /// [`DecodeError::UnknownFrameType`] or [`DecodeError::BadLength`].
    ///
    /// ```
    /// use backedpipe::proto::{FrameHeader, FrameKind};
    /// let header = FrameHeader::decode([0x10, 0, 0, 1, 0], 65536)?;
    /// assert_eq!(header, FrameHeader { kind: FrameKind::Data, len: 256 });
    /// assert!(FrameHeader::decode([0x10, 0, 2, 0, 0], 65536).is_err()); // 128 KiB > max
    /// # Ok::<(), backedpipe::proto::DecodeError>(())
    /// ```
    pub fn decode(bytes: [u8; HEADER_LEN], max_payload: u32) -> Result<Self, DecodeError> {
        let kind = FrameKind::from_byte(bytes[0]).ok_or(DecodeError::UnknownFrameType(bytes[0]))?;
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let ok = match kind {
            FrameKind::Hello => (HELLO_LEN as u32..=MAX_HANDSHAKE_LEN as u32).contains(&len),
            FrameKind::Welcome => len == WELCOME_LEN as u32 || len == (WELCOME_LEN + PROOF_LEN) as u32,
            FrameKind::Proof => len == 0 || len == PROOF_LEN as u32,
            FrameKind::Data => len >= 1 && len <= max_payload,
            FrameKind::Ack => len == 9,
            FrameKind::Ping | FrameKind::Pong | FrameKind::EndOfStream => len == 8,
            FrameKind::Error => (2..=(2 + MAX_REASON_LEN) as u32).contains(&len),
        };
        if ok { Ok(FrameHeader { kind, len }) } else { Err(DecodeError::BadLength { kind, len }) }
    }

    /// The five header bytes.
    ///
    /// ```
    /// use backedpipe::proto::{FrameHeader, FrameKind};
    /// let bytes = FrameHeader { kind: FrameKind::Ack, len: 9 }.encode();
    /// assert_eq!(bytes, [0x11, 0, 0, 0, 9]);
    /// ```
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let len = self.len.to_be_bytes();
        [self.kind.to_byte(), len[0], len[1], len[2], len[3]]
    }
}

/// A 128-bit session identifier; all zeros asks for a new session.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SessionId([u8; 16]);

impl SessionId {
    /// The all-zero id a client sends to ask for a new session.
    pub const NEW: SessionId = SessionId([0; 16]);

    /// A random, non-zero id from the operating system's generator.
    ///
    /// # Panics
    ///
    /// If the operating system's random number generator fails, which on
    /// Linux only happens before the kernel's pool is initialised at boot.
    ///
    /// ```
    /// let id = backedpipe::proto::SessionId::random();
    /// assert!(!id.is_new());
    /// ```
    pub fn random() -> SessionId {
        loop {
            let id = SessionId(random_bytes());
            if !id.is_new() {
                return id;
            }
        }
    }

    /// An id from its 16 bytes.
    ///
    /// ```
    /// let id = backedpipe::proto::SessionId::from_bytes([1; 16]);
    /// assert_eq!(id.to_bytes(), [1; 16]);
    /// ```
    pub const fn from_bytes(bytes: [u8; 16]) -> SessionId {
        SessionId(bytes)
    }

    /// The 16 bytes of the id.
    ///
    /// ```
    /// assert_eq!(backedpipe::proto::SessionId::NEW.to_bytes(), [0; 16]);
    /// ```
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// Whether this is [`SessionId::NEW`].
    ///
    /// ```
    /// assert!(backedpipe::proto::SessionId::NEW.is_new());
    /// ```
    pub fn is_new(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

/// A 256-bit handshake nonce; each side picks a fresh one per handshake.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce([u8; 32]);

impl Nonce {
    /// A nonce from the operating system's generator.
    ///
    /// # Panics
    ///
    /// As [`SessionId::random`].
    ///
    /// ```
    /// let (a, b) = (backedpipe::proto::Nonce::random(), backedpipe::proto::Nonce::random());
    /// assert_ne!(a, b);
    /// ```
    pub fn random() -> Nonce {
        Nonce(random_bytes())
    }

    /// A nonce from its bytes (for deterministic tests; real handshakes use
    /// [`Nonce::random`]).
    ///
    /// ```
    /// let nonce = backedpipe::proto::Nonce::from_bytes([3; 32]);
    /// assert_eq!(nonce.to_bytes(), [3; 32]);
    /// ```
    pub const fn from_bytes(bytes: [u8; 32]) -> Nonce {
        Nonce(bytes)
    }

    /// The bytes of the nonce.
    ///
    /// ```
    /// assert_eq!(backedpipe::proto::Nonce::from_bytes([0; 32]).to_bytes(), [0; 32]);
    /// ```
    pub const fn to_bytes(self) -> [u8; 32] {
        self.0
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Nonce(..)")
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    if let Err(err) = getrandom::fill(&mut bytes) {
        panic!("the operating system's random number generator failed: {err}");
    }
    bytes
}

/// How the two sides prove to each other that they share a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthMethod {
    /// No authentication; proofs are empty.
    None,
    /// HMAC-SHA256 over the handshake transcript, keyed with a pre-shared
    /// secret (see the [specification](crate::spec), "Proofs").
    HmacSha256,
}

impl AuthMethod {
    /// The byte on the wire.
    ///
    /// ```
    /// assert_eq!(backedpipe::proto::AuthMethod::HmacSha256.to_byte(), 1);
    /// ```
    pub fn to_byte(self) -> u8 {
        match self {
            AuthMethod::None => 0,
            AuthMethod::HmacSha256 => 1,
        }
    }

    /// The method for a byte.
    ///
    /// # Errors
    ///
    /// [`DecodeError::UnknownAuthMethod`] for a byte that names none.
    ///
    /// ```
    /// use backedpipe::proto::AuthMethod;
    /// assert_eq!(AuthMethod::from_byte(0), Ok(AuthMethod::None));
    /// assert!(AuthMethod::from_byte(9).is_err());
    /// ```
    pub fn from_byte(byte: u8) -> Result<Self, DecodeError> {
        match byte {
            0 => Ok(AuthMethod::None),
            1 => Ok(AuthMethod::HmacSha256),
            other => Err(DecodeError::UnknownAuthMethod(other)),
        }
    }

    /// Bytes in a proof made with this method.
    fn proof_len(self) -> usize {
        match self {
            AuthMethod::None => 0,
            AuthMethod::HmacSha256 => PROOF_LEN,
        }
    }
}

/// A little-endian-free cursor over a payload whose length was checked.
struct Fields<'a> {
    bytes: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        // Callers only read payloads whose length was validated first; a
        // short payload yields zeros rather than a panic.
        let n = N.min(self.bytes.len());
        out[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
    fn rest(self) -> &'a [u8] {
        self.bytes
    }
}

/// Reads one whole frame of `kind` from the front of `bytes`: its payload
/// and the number of bytes it took.
fn split_frame(bytes: &[u8], kind: FrameKind) -> Result<(&[u8], usize), DecodeError> {
    let Some(header) = bytes.first_chunk::<HEADER_LEN>() else {
        return Err(DecodeError::Incomplete { needed: HEADER_LEN });
    };
    let header = FrameHeader::decode(*header, 0)?;
    if header.kind != kind {
        return Err(DecodeError::Unexpected { kind: header.kind, context: "where a handshake message was due" });
    }
    let total = HEADER_LEN + header.len as usize;
    match bytes.get(HEADER_LEN..total) {
        Some(payload) => Ok((payload, total)),
        None => Err(DecodeError::Incomplete { needed: total }),
    }
}

fn frame(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    // Payloads built here are at most MAX_HANDSHAKE_LEN bytes.
    out.extend_from_slice(&FrameHeader { kind, len: payload.len() as u32 }.encode());
    out.extend_from_slice(payload);
    out
}

/// The client's opening message: who it is, what it has read, its nonce.
///
/// The exact payload bytes are kept (including bytes a later version may
/// add), because the authentication proofs cover them.
#[derive(Clone, PartialEq, Eq)]
pub struct Hello {
    payload: Vec<u8>,
    max_version: u16,
    auth: AuthMethod,
    flags: u8,
    session_id: SessionId,
    reader_seq: u64,
    attempt: u64,
    send_buffer_bytes: u64,
    max_payload: u32,
    nonce: Nonce,
}

impl Hello {
    /// A version-2 HELLO: attempt 1, no flags, a 64 MiB send buffer and a
    /// 64 KiB maximum payload announced (change them with the `with_`
    /// methods).
    ///
    /// ```
    /// use backedpipe::proto::{AuthMethod, Hello, Nonce, SessionId};
    /// let hello = Hello::new(AuthMethod::None, SessionId::NEW, 0, Nonce::random());
    /// assert_eq!((hello.max_version(), hello.attempt()), (2, 1));
    /// ```
    pub fn new(auth: AuthMethod, session_id: SessionId, reader_seq: u64, nonce: Nonce) -> Hello {
        let mut hello = Hello {
            payload: Vec::new(),
            max_version: VERSION,
            auth,
            flags: 0,
            session_id,
            reader_seq,
            attempt: 1,
            send_buffer_bytes: 64 << 20,
            max_payload: 64 << 10,
            nonce,
        };
        hello.encode_payload();
        hello
    }

    /// The same HELLO with another attempt number (the client numbers its
    /// connection attempts; a server ignores a handshake that completes
    /// after one with a higher number).
    ///
    /// ```
    /// use backedpipe::proto::{AuthMethod, Hello, Nonce, SessionId, FLAG_EOS_RECEIVED};
    /// let hello = Hello::new(AuthMethod::None, SessionId::NEW, 5, Nonce::random())
    ///     .with_attempt(9)
    ///     .with_flags(FLAG_EOS_RECEIVED)
    ///     .with_limits(1 << 20, 4096);
    /// assert_eq!((hello.attempt(), hello.flags()), (9, FLAG_EOS_RECEIVED));
    /// assert_eq!((hello.send_buffer_bytes(), hello.max_payload()), (1 << 20, 4096));
    /// ```
    pub fn with_attempt(mut self, attempt: u64) -> Hello {
        self.attempt = attempt;
        self.encode_payload();
        self
    }

    /// The same HELLO with other flag bits ([`FLAG_EOS_RECEIVED`],
    /// [`FLAG_UNCONFIRMED`]).
    pub fn with_flags(mut self, flags: u8) -> Hello {
        self.flags = flags;
        self.encode_payload();
        self
    }

    /// The same HELLO announcing another send buffer size and maximum DATA
    /// payload (at least 1).
    pub fn with_limits(mut self, send_buffer_bytes: u64, max_payload: u32) -> Hello {
        self.send_buffer_bytes = send_buffer_bytes;
        self.max_payload = max_payload.max(1);
        self.encode_payload();
        self
    }

    fn encode_payload(&mut self) {
        let mut payload = Vec::with_capacity(HELLO_LEN);
        payload.extend_from_slice(&MAGIC);
        payload.extend_from_slice(&self.max_version.to_be_bytes());
        payload.push(self.auth.to_byte());
        payload.push(self.flags);
        payload.extend_from_slice(&self.session_id.0);
        payload.extend_from_slice(&self.reader_seq.to_be_bytes());
        payload.extend_from_slice(&self.attempt.to_be_bytes());
        payload.extend_from_slice(&self.send_buffer_bytes.to_be_bytes());
        payload.extend_from_slice(&self.max_payload.to_be_bytes());
        payload.extend_from_slice(&self.nonce.0);
        self.payload = payload;
    }

    /// Decodes a whole HELLO frame (header included) from the front of
    /// `bytes`; returns it and the number of bytes it took.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Incomplete`] when `bytes` holds only part of the frame
    /// (read at least `needed` bytes in total and call again), and the other
    /// variants for bytes that are no HELLO.
    ///
    /// ```
    /// use backedpipe::proto::{DecodeError, Hello};
    /// assert_eq!(Hello::decode(&[1, 0]), Err(DecodeError::Incomplete { needed: 5 }));
    /// assert!(Hello::decode(b"GET / HTTP/1.1\r\n").is_err());
    /// ```
    pub fn decode(bytes: &[u8]) -> Result<(Hello, usize), DecodeError> {
        let (payload, used) = split_frame(bytes, FrameKind::Hello)?;
        Ok((Hello::decode_payload(payload)?, used))
    }

    /// Decodes a HELLO payload (the bytes after the header).
    pub(crate) fn decode_payload(payload: &[u8]) -> Result<Hello, DecodeError> {
        if payload.len() < HELLO_LEN || payload.len() > MAX_HANDSHAKE_LEN {
            return Err(DecodeError::BadLength { kind: FrameKind::Hello, len: payload.len() as u32 });
        }
        let mut fields = Fields { bytes: payload };
        if fields.take::<4>() != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let max_version = fields.u16();
        let auth = AuthMethod::from_byte(fields.u8())?;
        let flags = fields.u8();
        let session_id = SessionId(fields.take());
        let reader_seq = fields.u64();
        let attempt = fields.u64();
        let send_buffer_bytes = fields.u64();
        let max_payload = fields.u32();
        let nonce = Nonce(fields.take());
        if max_payload == 0 {
            return Err(DecodeError::BadValue("maximum payload of 0"));
        }
        if flags & FLAG_UNCONFIRMED != 0 && session_id.is_new() {
            return Err(DecodeError::BadValue("unconfirmed flag without a session id"));
        }
        Ok(Hello {
            payload: payload.to_vec(),
            max_version,
            auth,
            flags,
            session_id,
            reader_seq,
            attempt,
            send_buffer_bytes,
            max_payload,
            nonce,
        })
    }

    /// The whole frame, header included.
    ///
    /// ```
    /// use backedpipe::proto::{AuthMethod, Hello, Nonce, SessionId, HEADER_LEN, HELLO_LEN};
    /// let hello = Hello::new(AuthMethod::None, SessionId::NEW, 0, Nonce::random());
    /// assert_eq!(hello.encode().len(), HEADER_LEN + HELLO_LEN);
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        frame(FrameKind::Hello, &self.payload)
    }

    /// The payload bytes exactly as sent or received.
    pub(crate) fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The highest protocol version the client speaks.
    pub fn max_version(&self) -> u16 {
        self.max_version
    }
    /// The authentication method the client uses.
    pub fn auth(&self) -> AuthMethod {
        self.auth
    }
    /// Flag bits ([`FLAG_EOS_RECEIVED`], [`FLAG_UNCONFIRMED`]).
    pub fn flags(&self) -> u8 {
        self.flags
    }
    /// Whether the client holds its session id from a WELCOME that the
    /// server has not confirmed yet ([`FLAG_UNCONFIRMED`]).
    ///
    /// ```
    /// use backedpipe::proto::{AuthMethod, Hello, Nonce, SessionId, FLAG_UNCONFIRMED};
    /// let id = SessionId::random();
    /// let hello = Hello::new(AuthMethod::None, id, 0, Nonce::random()).with_flags(FLAG_UNCONFIRMED);
    /// assert!(hello.is_unconfirmed());
    /// // The flag needs an id: a HELLO asking for a new session cannot carry it.
    /// let bad = Hello::new(AuthMethod::None, SessionId::NEW, 0, Nonce::random()).with_flags(FLAG_UNCONFIRMED);
    /// assert!(Hello::decode(&bad.encode()).is_err());
    /// ```
    pub fn is_unconfirmed(&self) -> bool {
        self.flags & FLAG_UNCONFIRMED != 0
    }
    /// The session to resume, or [`SessionId::NEW`].
    pub fn session_id(&self) -> SessionId {
        self.session_id
    }
    /// Bytes the client has received from the server.
    pub fn reader_seq(&self) -> u64 {
        self.reader_seq
    }
    /// The client's attempt number.
    pub fn attempt(&self) -> u64 {
        self.attempt
    }
    /// The client's send buffer capacity (paces the server's ACKs).
    pub fn send_buffer_bytes(&self) -> u64 {
        self.send_buffer_bytes
    }
    /// The largest DATA payload the client accepts.
    pub fn max_payload(&self) -> u32 {
        self.max_payload
    }
    /// The client's nonce.
    pub fn nonce(&self) -> Nonce {
        self.nonce
    }
}

impl fmt::Debug for Hello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hello")
            .field("max_version", &self.max_version)
            .field("auth", &self.auth)
            .field("flags", &self.flags)
            .field("session_id", &self.session_id)
            .field("reader_seq", &self.reader_seq)
            .field("attempt", &self.attempt)
            .field("send_buffer_bytes", &self.send_buffer_bytes)
            .field("max_payload", &self.max_payload)
            .finish_non_exhaustive()
    }
}

/// The server's answer to a HELLO.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Welcome {
    /// The payload without the proof: what the proofs cover.
    pub(crate) signed: Vec<u8>,
    pub(crate) version: u16,
    pub(crate) auth: AuthMethod,
    pub(crate) flags: u8,
    pub(crate) session_id: SessionId,
    pub(crate) reader_seq: u64,
    pub(crate) send_buffer_bytes: u64,
    pub(crate) max_payload: u32,
    pub(crate) proof: Vec<u8>,
}

impl fmt::Debug for Welcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Welcome")
            .field("version", &self.version)
            .field("session_id", &self.session_id)
            .field("reader_seq", &self.reader_seq)
            .finish_non_exhaustive()
    }
}

impl Welcome {
    /// The signed part of a WELCOME payload.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn signed_bytes(
        auth: AuthMethod,
        flags: u8,
        session_id: SessionId,
        reader_seq: u64,
        send_buffer_bytes: u64,
        max_payload: u32,
        nonce: &Nonce,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(WELCOME_LEN + PROOF_LEN);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.push(auth.to_byte());
        out.push(flags);
        out.extend_from_slice(&session_id.0);
        out.extend_from_slice(&reader_seq.to_be_bytes());
        out.extend_from_slice(&send_buffer_bytes.to_be_bytes());
        out.extend_from_slice(&max_payload.to_be_bytes());
        out.extend_from_slice(&nonce.0);
        out
    }

    pub(crate) fn decode_payload(payload: &[u8]) -> Result<Welcome, DecodeError> {
        if payload.len() != WELCOME_LEN && payload.len() != WELCOME_LEN + PROOF_LEN {
            return Err(DecodeError::BadLength { kind: FrameKind::Welcome, len: payload.len() as u32 });
        }
        let (signed, proof) = payload.split_at(WELCOME_LEN);
        let mut fields = Fields { bytes: signed };
        let version = fields.u16();
        let auth = AuthMethod::from_byte(fields.u8())?;
        let flags = fields.u8();
        let session_id = SessionId(fields.take());
        let reader_seq = fields.u64();
        let send_buffer_bytes = fields.u64();
        let max_payload = fields.u32();
        let _nonce: [u8; 32] = fields.take();
        if proof.len() != auth.proof_len() {
            return Err(DecodeError::BadValue("proof length for the authentication method"));
        }
        if max_payload == 0 {
            return Err(DecodeError::BadValue("maximum payload of 0"));
        }
        Ok(Welcome {
            signed: signed.to_vec(),
            version,
            auth,
            flags,
            session_id,
            reader_seq,
            send_buffer_bytes,
            max_payload,
            proof: proof.to_vec(),
        })
    }
}

/// Error codes carried by ERROR frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// A malformed, oversized or unexpected frame.
    Protocol,
    /// No common protocol version.
    UnsupportedVersion,
    /// A proof did not verify, or the authentication methods differ.
    AuthenticationFailed,
    /// A reader sequence number beyond what the receiver wrote.
    InvalidSequence,
    /// A reader sequence number older than what the receiver still holds.
    DataLoss,
    /// The session id names no session the receiver has.
    SessionUnknown,
    /// The sender closed the pipe.
    Closed,
    /// The server holds as many sessions as it may and none can be evicted;
    /// a new session is refused.
    ServerFull,
    /// A code this version does not know.
    Other(u16),
}

impl ErrorCode {
    /// The code on the wire.
    ///
    /// ```
    /// use backedpipe::proto::ErrorCode;
    /// assert_eq!(ErrorCode::DataLoss.to_u16(), 5);
    /// assert_eq!(ErrorCode::from_u16(5), ErrorCode::DataLoss);
    /// ```
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Protocol => 1,
            ErrorCode::UnsupportedVersion => 2,
            ErrorCode::AuthenticationFailed => 3,
            ErrorCode::InvalidSequence => 4,
            ErrorCode::DataLoss => 5,
            ErrorCode::SessionUnknown => 6,
            ErrorCode::Closed => 7,
            ErrorCode::ServerFull => 8,
            ErrorCode::Other(code) => code,
        }
    }

    /// The code for a number; unknown numbers are [`ErrorCode::Other`].
    pub fn from_u16(code: u16) -> ErrorCode {
        match code {
            1 => ErrorCode::Protocol,
            2 => ErrorCode::UnsupportedVersion,
            3 => ErrorCode::AuthenticationFailed,
            4 => ErrorCode::InvalidSequence,
            5 => ErrorCode::DataLoss,
            6 => ErrorCode::SessionUnknown,
            7 => ErrorCode::Closed,
            8 => ErrorCode::ServerFull,
            other => ErrorCode::Other(other),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Protocol => f.write_str("protocol error"),
            ErrorCode::UnsupportedVersion => f.write_str("unsupported version"),
            ErrorCode::AuthenticationFailed => f.write_str("authentication failed"),
            ErrorCode::InvalidSequence => f.write_str("invalid sequence"),
            ErrorCode::DataLoss => f.write_str("data loss"),
            ErrorCode::SessionUnknown => f.write_str("unknown session"),
            ErrorCode::Closed => f.write_str("closed"),
            ErrorCode::ServerFull => f.write_str("server full"),
            ErrorCode::Other(code) => write!(f, "error {code}"),
        }
    }
}

/// A whole ERROR frame: what a server sends to refuse a connection it will
/// not hand to any session (e.g. [`ErrorCode::SessionUnknown`]) before it
/// closes it. The reason is cut to [`MAX_REASON_LEN`] bytes.
///
/// ```
/// use backedpipe::proto::{ErrorCode, error_frame};
/// let frame = error_frame(ErrorCode::SessionUnknown, "no such session");
/// assert_eq!(frame[0], 0x1F);
/// assert_eq!(&frame[5..7], &6u16.to_be_bytes());
/// assert_eq!(&frame[7..], b"no such session");
/// ```
pub fn error_frame(code: ErrorCode, reason: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 2 + reason.len().min(MAX_REASON_LEN));
    Control::Error { code, reason: reason.to_owned() }.encode_into(&mut out);
    out
}

/// A control frame after the handshake (everything but DATA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    Ack { seq: u64, flags: u8 },
    Ping(u64),
    Pong(u64),
    EndOfStream(u64),
    Error { code: ErrorCode, reason: String },
}

impl Control {
    /// Decodes the payload of a control frame of `kind`, whose length the
    /// header already checked.
    pub(crate) fn decode(kind: FrameKind, payload: &[u8]) -> Result<Control, DecodeError> {
        let mut fields = Fields { bytes: payload };
        Ok(match kind {
            FrameKind::Ack => Control::Ack { seq: fields.u64(), flags: fields.u8() },
            FrameKind::Ping => Control::Ping(fields.u64()),
            FrameKind::Pong => Control::Pong(fields.u64()),
            FrameKind::EndOfStream => Control::EndOfStream(fields.u64()),
            FrameKind::Error => {
                let code = ErrorCode::from_u16(fields.u16());
                let reason = String::from_utf8_lossy(fields.rest()).into_owned();
                Control::Error { code, reason }
            }
            other => return Err(DecodeError::Unexpected { kind: other, context: "as a control frame" }),
        })
    }

    /// Appends the whole frame to `out`.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        let mut payload = [0u8; 2 + MAX_REASON_LEN];
        let (kind, len) = match self {
            Control::Ack { seq, flags } => {
                payload[..8].copy_from_slice(&seq.to_be_bytes());
                payload[8] = *flags;
                (FrameKind::Ack, 9)
            }
            Control::Ping(value) | Control::Pong(value) | Control::EndOfStream(value) => {
                payload[..8].copy_from_slice(&value.to_be_bytes());
                let kind = match self {
                    Control::Ping(_) => FrameKind::Ping,
                    Control::Pong(_) => FrameKind::Pong,
                    _ => FrameKind::EndOfStream,
                };
                (kind, 8)
            }
            Control::Error { code, reason } => {
                payload[..2].copy_from_slice(&code.to_u16().to_be_bytes());
                let reason = truncate_utf8(reason, MAX_REASON_LEN);
                payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
                (FrameKind::Error, 2 + reason.len())
            }
        };
        out.extend_from_slice(&FrameHeader { kind, len: len as u32 }.encode());
        out.extend_from_slice(&payload[..len]);
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
fn truncate_utf8(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Appends a handshake frame (`kind` with `payload`) to `out`.
pub(crate) fn encode_handshake(out: &mut Vec<u8>, kind: FrameKind, payload: &[u8]) {
    out.extend_from_slice(&frame(kind, payload));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_keeps_extra_bytes() {
        let hello = Hello::new(AuthMethod::HmacSha256, SessionId([9; 16]), 77, Nonce([4; 32]))
            .with_attempt(3)
            .with_flags(1)
            .with_limits(1000, 512);
        let bytes = hello.encode();
        let (decoded, used) = Hello::decode(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(decoded, hello);
        // A later version may append fields: accepted, kept for the proofs.
        let mut longer = hello.payload().to_vec();
        longer.extend_from_slice(b"future");
        let framed = frame(FrameKind::Hello, &longer);
        let (decoded, _) = Hello::decode(&framed).unwrap();
        assert_eq!(decoded.payload(), &longer[..]);
        assert_eq!(decoded.reader_seq(), 77);
    }

    #[test]
    fn hello_rejects_garbage_and_reports_incomplete() {
        let bytes = Hello::new(AuthMethod::None, SessionId::NEW, 0, Nonce([0; 32])).encode();
        for cut in 0..bytes.len() {
            let needed = if cut < HEADER_LEN { HEADER_LEN } else { bytes.len() };
            assert_eq!(Hello::decode(&bytes[..cut]), Err(DecodeError::Incomplete { needed }), "cut at {cut}");
        }
        let mut bad_magic = bytes.clone();
        bad_magic[HEADER_LEN] = b'X';
        assert_eq!(Hello::decode(&bad_magic), Err(DecodeError::BadMagic));
        let mut oversized = bytes.clone();
        oversized[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(Hello::decode(&oversized), Err(DecodeError::BadLength { .. })));
        assert_eq!(Hello::decode(&[0xEE; 8]), Err(DecodeError::UnknownFrameType(0xEE)));
    }

    #[test]
    fn header_bounds_per_kind() {
        let max = 1000;
        assert!(FrameHeader::decode([0x10, 0, 0, 0, 0], max).is_err(), "empty DATA");
        assert!(FrameHeader::decode([0x10, 0, 0, 0x03, 0xE8], max).is_ok());
        assert!(FrameHeader::decode([0x10, 0, 0, 0x03, 0xE9], max).is_err());
        assert!(FrameHeader::decode([0x11, 0, 0, 0, 8], max).is_err());
        assert!(FrameHeader::decode([0x1F, 0, 0, 0, 1], max).is_err());
        assert!(FrameHeader::decode([0x03, 0, 0, 0, 32], max).is_ok());
        assert!(FrameHeader::decode([0x03, 0, 0, 0, 31], max).is_err());
    }

    #[test]
    fn control_frames_round_trip() {
        let frames = [
            Control::Ack { seq: 1 << 40, flags: 1 },
            Control::Ping(7),
            Control::Pong(8),
            Control::EndOfStream(99),
            Control::Error { code: ErrorCode::DataLoss, reason: "lost 3 bytes".into() },
            Control::Error { code: ErrorCode::Other(999), reason: String::new() },
        ];
        for control in frames {
            let mut bytes = Vec::new();
            control.encode_into(&mut bytes);
            let header = FrameHeader::decode(*bytes.first_chunk().unwrap(), 1).unwrap();
            assert_eq!(header.len as usize, bytes.len() - HEADER_LEN);
            assert_eq!(Control::decode(header.kind, &bytes[HEADER_LEN..]).unwrap(), control);
        }
    }

    #[test]
    fn long_reasons_are_truncated_on_a_character_boundary() {
        let reason = "é".repeat(300);
        let mut bytes = Vec::new();
        Control::Error { code: ErrorCode::Protocol, reason }.encode_into(&mut bytes);
        assert!(bytes.len() <= HEADER_LEN + 2 + MAX_REASON_LEN);
        let header = FrameHeader::decode(*bytes.first_chunk().unwrap(), 1).unwrap();
        let Control::Error { reason, .. } = Control::decode(header.kind, &bytes[HEADER_LEN..]).unwrap() else {
            panic!("not an error frame");
        };
        assert!(reason.chars().all(|c| c == 'é'));
    }

    #[test]
    fn welcome_checks_proof_length_against_method() {
        let signed = Welcome::signed_bytes(AuthMethod::HmacSha256, 0, SessionId([1; 16]), 5, 6, 7, &Nonce([2; 32]));
        assert!(Welcome::decode_payload(&signed).is_err(), "HMAC without proof");
        let mut with_proof = signed.clone();
        with_proof.extend_from_slice(&[0; PROOF_LEN]);
        let welcome = Welcome::decode_payload(&with_proof).unwrap();
        assert_eq!((welcome.reader_seq, welcome.send_buffer_bytes, welcome.max_payload), (5, 6, 7));
        assert_eq!(welcome.signed, signed);
    }
}
