//! A byte ring buffer addressed by absolute sequence numbers.
//!
//! A [`Ring`] remembers the most recent bytes of a stream, up to a fixed
//! capacity, and names every byte by its position in the whole stream: the
//! first byte ever written is sequence number 0, the next 1, and so on. That
//! is the bookkeeping a replay buffer (resend what the peer has not seen) and
//! a terminal scrollback (show a re-attaching client the recent output) both
//! need, without either of them doing offset arithmetic of its own.
//!
//! - [`Ring::start`] is the sequence number of the oldest byte still held,
//!   [`Ring::end`] the number of bytes ever written (one past the newest).
//! - [`Ring::write`] appends and evicts the oldest bytes when full; a write
//!   longer than the capacity keeps its tail.
//! - [`Ring::write_bounded`] never evicts: it takes only what fits and says
//!   how much, for flow-controlled senders that must not drop bytes the peer
//!   has not acknowledged.
//! - [`Ring::slices_from`] reads the retained bytes from any sequence number
//!   without copying (at most two slices); [`Ring::read_at`] copies.
//! - [`Ring::discard_until`] drops bytes that are no longer needed (an
//!   acknowledgement).
//!
//! Reading before [`Ring::start`] is [`Error::Evicted`]; reading beyond
//! [`Ring::end`] is [`Error::Future`]. No method panics on any input.
//!
//! # Memory
//!
//! The capacity is a bound, not an allocation. Storage grows (in powers of
//! two) with what the ring holds, up to the capacity, and shrinks again when a
//! ring that was once full has been holding far less for a while, so an idle
//! or promptly-acknowledged 64 MiB ring costs kilobytes, not 64 MiB. Storage
//! is reused in place once grown, so a steadily full ring never allocates;
//! [`Ring::allocated_bytes`] reports what is held.
//!
//! # Example
//!
//! ```
//! use seqring::{Error, Ring};
//!
//! let mut ring = Ring::with_capacity(8);
//! ring.write(b"hello, world"); // 12 bytes; only the last 8 fit
//! assert_eq!((ring.start(), ring.end()), (4, 12));
//!
//! // A reader that has seen 9 bytes resumes at sequence number 9.
//! let (a, b) = ring.slices_from(9)?;
//! assert_eq!([a, b].concat(), b"rld");
//!
//! // A reader that has seen only 2 bytes cannot be served any more.
//! assert_eq!(ring.slices_from(2), Err(Error::Evicted { seq: 2, start: 4 }));
//! # Ok::<(), seqring::Error>(())
//! ```

#![forbid(unsafe_code)]

use std::fmt;

#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod fuzzing;

/// The smallest storage a non-empty ring allocates (unless its capacity is
/// smaller), so that tiny writes do not reallocate over and over.
const MIN_STORAGE_BYTES: usize = 4096;

/// Why a sequence number cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The byte at `seq` was written but is no longer retained.
    #[error("sequence number {seq} was evicted; the oldest retained is {start}")]
    Evicted {
        /// The sequence number asked for.
        seq: u64,
        /// The oldest sequence number still retained.
        start: u64,
    },
    /// The byte at `seq` has not been written yet.
    #[error("sequence number {seq} is beyond the end of the stream ({end})")]
    Future {
        /// The sequence number asked for.
        seq: u64,
        /// The number of bytes ever written.
        end: u64,
    },
}

/// A byte ring addressed by absolute `u64` sequence numbers.
///
/// See the [crate documentation](crate) for the model. `Ring` is `Send` and
/// `Sync`; it does no locking of its own.
#[derive(Clone)]
pub struct Ring {
    /// Physical storage; grows and shrinks between 0 and `capacity` bytes.
    storage: Box<[u8]>,
    /// Index in `storage` of the byte at `start`.
    head: usize,
    /// Number of bytes retained.
    len: usize,
    /// Sequence number of the oldest retained byte.
    start: u64,
    /// The most bytes ever retained at once.
    capacity: usize,
    /// The largest `len` seen since the last shrink check.
    peak_len: usize,
    /// Bytes written since the last shrink check.
    written_since_check: usize,
}

impl Ring {
    /// Creates an empty ring that retains at most `capacity_bytes` bytes.
    ///
    /// Nothing is allocated until the first write.
    ///
    /// ```
    /// let ring = seqring::Ring::with_capacity(64 << 20);
    /// assert_eq!(ring.capacity(), 64 << 20);
    /// assert_eq!(ring.allocated_bytes(), 0);
    /// ```
    pub fn with_capacity(capacity_bytes: usize) -> Self {
        Self::starting_at(capacity_bytes, 0)
    }

    /// Creates an empty ring whose next byte will have sequence number `seq`.
    ///
    /// Useful when a stream is picked up part-way, e.g. a replay buffer
    /// restored after the first `seq` bytes were already delivered.
    ///
    /// ```
    /// let mut ring = seqring::Ring::starting_at(16, 1000);
    /// ring.write(b"abc");
    /// assert_eq!((ring.start(), ring.end()), (1000, 1003));
    /// ```
    pub fn starting_at(capacity_bytes: usize, seq: u64) -> Self {
        Self {
            storage: Box::default(),
            head: 0,
            len: 0,
            start: seq,
            capacity: capacity_bytes,
            peak_len: 0,
            written_since_check: 0,
        }
    }

    /// The most bytes the ring retains at once.
    ///
    /// ```
    /// assert_eq!(seqring::Ring::with_capacity(10).capacity(), 10);
    /// ```
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The number of bytes retained: `end() - start()`.
    ///
    /// ```
    /// let mut ring = seqring::Ring::with_capacity(4);
    /// ring.write(b"abcdef");
    /// assert_eq!(ring.len(), 4);
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no bytes are retained.
    ///
    /// ```
    /// let mut ring = seqring::Ring::with_capacity(4);
    /// assert!(ring.is_empty());
    /// ring.write(b"a");
    /// assert!(!ring.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many more bytes fit before a write evicts: `capacity() - len()`.
    ///
    /// ```
    /// let mut ring = seqring::Ring::with_capacity(4);
    /// ring.write(b"ab");
    /// assert_eq!(ring.remaining_capacity(), 2);
    /// ```
    pub fn remaining_capacity(&self) -> usize {
        self.capacity - self.len
    }

    /// The sequence number of the oldest retained byte (equal to `end()` when
    /// the ring is empty).
    ///
    /// ```
    /// let mut ring = seqring::Ring::with_capacity(4);
    /// ring.write(b"abcdef");
    /// assert_eq!(ring.start(), 2);
    /// ```
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The number of bytes ever written: the sequence number the next byte
    /// will get.
    ///
    /// ```
    /// let mut ring = seqring::Ring::with_capacity(4);
    /// ring.write(b"abcdef");
    /// assert_eq!(ring.end(), 6);
    /// ```
    pub fn end(&self) -> u64 {
        self.start + self.len as u64
    }

    /// The bytes of storage currently allocated (at most `capacity()`).
    ///
    /// ```
    /// let mut ring = seqring::Ring::with_capacity(1 << 20);
    /// ring.write(&[7; 10]);
    /// assert!(ring.allocated_bytes() >= 10 && ring.allocated_bytes() <= 4096);
    /// ```
    pub fn allocated_bytes(&self) -> usize {
        self.storage.len()
    }

    /// Appends `data`, evicting the oldest bytes as needed, and returns how
    /// many bytes were evicted (how far `start()` moved).
    ///
    /// A write longer than the capacity keeps its last `capacity()` bytes;
    /// `end()` still advances by the whole length.
    ///
    /// ```
    /// let mut ring = seqring::Ring::with_capacity(4);
    /// assert_eq!(ring.write(b"abc"), 0);
    /// assert_eq!(ring.write(b"de"), 1); // 'a' evicted
    /// assert_eq!(ring.write(b"0123456789"), 10);
    /// assert_eq!(ring.to_vec(), b"6789");
    /// ```
    pub fn write(&mut self, data: &[u8]) -> u64 {
        let old_start = self.start;
        if data.len() >= self.capacity {
            let tail = &data[data.len() - self.capacity..];
            let end = self.end() + data.len() as u64;
            if self.storage.len() < tail.len() {
                self.storage = zeroed(self.capacity);
            }
            self.storage[..tail.len()].copy_from_slice(tail);
            self.head = 0;
            self.len = tail.len();
            self.start = end - self.len as u64;
            self.note_written(data.len());
            return self.start - old_start;
        }
        let overflow = (self.len + data.len()).saturating_sub(self.capacity);
        self.advance_start(overflow);
        self.copy_in(data);
        self.note_written(data.len());
        self.start - old_start
    }

    /// Appends as much of `data` as fits without evicting anything and
    /// returns how many bytes that was (0 when the ring is full).
    ///
    /// ```
    /// let mut ring = seqring::Ring::with_capacity(4);
    /// assert_eq!(ring.write_bounded(b"abc"), 3);
    /// assert_eq!(ring.write_bounded(b"def"), 1);
    /// assert_eq!(ring.write_bounded(b"g"), 0);
    /// assert_eq!(ring.to_vec(), b"abcd");
    /// ```
    pub fn write_bounded(&mut self, data: &[u8]) -> usize {
        let accepted = data.len().min(self.remaining_capacity());
        self.copy_in(&data[..accepted]);
        self.note_written(accepted);
        accepted
    }

    /// The retained bytes from `seq` to `end()`, as at most two slices (the
    /// second is empty unless the range wraps), without copying.
    ///
    /// # Errors
    ///
    /// [`Error::Evicted`] when `seq < start()`, [`Error::Future`] when
    /// `seq > end()`. `seq == end()` gives two empty slices.
    ///
    /// ```
    /// let mut ring = seqring::Ring::with_capacity(4);
    /// ring.write(b"abcdef");
    /// let (a, b) = ring.slices_from(3)?;
    /// assert_eq!([a, b].concat(), b"def");
    /// assert!(ring.slices_from(7).is_err());
    /// # Ok::<(), seqring::Error>(())
    /// ```
    pub fn slices_from(&self, seq: u64) -> Result<(&[u8], &[u8]), Error> {
        let offset = self.offset_of(seq)?;
        let count = self.len - offset;
        if count == 0 {
            return Ok((&[], &[]));
        }
        let first = self.physical(offset);
        let to_storage_end = self.storage.len() - first;
        if count <= to_storage_end {
            Ok((&self.storage[first..first + count], &[]))
        } else {
            Ok((&self.storage[first..], &self.storage[..count - to_storage_end]))
        }
    }

    /// Copies retained bytes starting at `seq` into `buf` and returns how
    /// many were copied: `min(buf.len(), end() - seq)`.
    ///
    /// # Errors
    ///
    /// [`Error::Evicted`] when `seq < start()`, [`Error::Future`] when
    /// `seq > end()`.
    ///
    /// ```
    /// let mut ring = seqring::Ring::with_capacity(8);
    /// ring.write(b"abcdef");
    /// let mut buf = [0; 3];
    /// assert_eq!(ring.read_at(2, &mut buf)?, 3);
    /// assert_eq!(&buf, b"cde");
    /// assert_eq!(ring.read_at(6, &mut buf)?, 0);
    /// # Ok::<(), seqring::Error>(())
    /// ```
    pub fn read_at(&self, seq: u64, buf: &mut [u8]) -> Result<usize, Error> {
        let (a, b) = self.slices_from(seq)?;
        let from_a = a.len().min(buf.len());
        buf[..from_a].copy_from_slice(&a[..from_a]);
        let from_b = b.len().min(buf.len() - from_a);
        buf[from_a..from_a + from_b].copy_from_slice(&b[..from_b]);
        Ok(from_a + from_b)
    }

    /// Copies every retained byte into a new vector.
    ///
    /// ```
    /// let mut ring = seqring::Ring::with_capacity(3);
    /// ring.write(b"abcd");
    /// assert_eq!(ring.to_vec(), b"bcd");
    /// ```
    pub fn to_vec(&self) -> Vec<u8> {
        let (a, b) = self.slices_from(self.start).unwrap_or_default();
        [a, b].concat()
    }

    /// Drops every retained byte before `seq` and returns how many were
    /// dropped. A `seq` at or before `start()` drops nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Future`] when `seq > end()`; nothing is dropped then.
    ///
    /// ```
    /// let mut ring = seqring::Ring::with_capacity(8);
    /// ring.write(b"abcdef");
    /// assert_eq!(ring.discard_until(4)?, 4);
    /// assert_eq!(ring.to_vec(), b"ef");
    /// assert_eq!(ring.discard_until(1)?, 0);
    /// assert!(ring.discard_until(7).is_err());
    /// # Ok::<(), seqring::Error>(())
    /// ```
    pub fn discard_until(&mut self, seq: u64) -> Result<u64, Error> {
        if seq > self.end() {
            return Err(Error::Future { seq, end: self.end() });
        }
        let count = seq.saturating_sub(self.start);
        // `count <= len`, which is a `usize`.
        self.advance_start(count as usize);
        Ok(count)
    }

    /// Drops every retained byte and releases the storage. `end()` is
    /// unchanged; `start()` becomes `end()`.
    ///
    /// ```
    /// let mut ring = seqring::Ring::with_capacity(8);
    /// ring.write(b"abc");
    /// ring.clear();
    /// assert_eq!((ring.start(), ring.end(), ring.allocated_bytes()), (3, 3, 0));
    /// ```
    pub fn clear(&mut self) {
        self.start = self.end();
        self.len = 0;
        self.head = 0;
        self.storage = Box::default();
        self.peak_len = 0;
        self.written_since_check = 0;
    }

    /// Reduces the storage to what the retained bytes need (at least a small
    /// minimum while non-empty, nothing when empty).
    ///
    /// The ring shrinks by itself while it is written to; call this when a
    /// ring goes idle holding far less than it once did.
    ///
    /// ```
    /// let mut ring = seqring::Ring::with_capacity(1 << 20);
    /// ring.write(&[1; 1 << 20]);
    /// ring.discard_until(ring.end() - 10)?;
    /// ring.shrink_to_fit();
    /// assert!(ring.allocated_bytes() <= 4096);
    /// assert_eq!(ring.to_vec(), [1; 10]);
    /// # Ok::<(), seqring::Error>(())
    /// ```
    pub fn shrink_to_fit(&mut self) {
        self.resize_storage(self.target_storage(self.len));
    }

    /// Offset from `start` of `seq`, checked against the retained range.
    fn offset_of(&self, seq: u64) -> Result<usize, Error> {
        if seq < self.start {
            return Err(Error::Evicted { seq, start: self.start });
        }
        let end = self.end();
        if seq > end {
            return Err(Error::Future { seq, end });
        }
        // `seq - start <= len`, which is a `usize`.
        Ok((seq - self.start) as usize)
    }

    /// Index in `storage` of the byte `offset` bytes after `start`
    /// (`offset <= storage.len()`).
    fn physical(&self, offset: usize) -> usize {
        let index = self.head + offset;
        if index >= self.storage.len() { index - self.storage.len() } else { index }
    }

    /// Forgets the oldest `count` bytes (`count <= len`).
    fn advance_start(&mut self, count: usize) {
        if count == 0 {
            return;
        }
        self.head = if count == self.len { 0 } else { self.physical(count) };
        self.len -= count;
        self.start += count as u64;
    }

    /// Appends `data`, which fits within the capacity.
    fn copy_in(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let needed = self.len + data.len();
        if needed > self.storage.len() {
            self.resize_storage(self.target_storage(needed));
        }
        let tail = self.physical(self.len);
        let first = data.len().min(self.storage.len() - tail);
        self.storage[tail..tail + first].copy_from_slice(&data[..first]);
        self.storage[..data.len() - first].copy_from_slice(&data[first..]);
        self.len = needed;
    }

    /// The storage size for holding `bytes` bytes.
    fn target_storage(&self, bytes: usize) -> usize {
        if bytes == 0 {
            return 0;
        }
        bytes.checked_next_power_of_two().unwrap_or(usize::MAX).max(MIN_STORAGE_BYTES).min(self.capacity)
    }

    /// Moves the retained bytes into fresh storage of `size >= len` bytes.
    fn resize_storage(&mut self, size: usize) {
        if size == self.storage.len() {
            return;
        }
        let mut storage = zeroed(size);
        let (a, b) = self.slices_from(self.start).unwrap_or_default();
        storage[..a.len()].copy_from_slice(a);
        storage[a.len()..a.len() + b.len()].copy_from_slice(b);
        self.storage = storage;
        self.head = 0;
    }

    /// Shrink policy: each time as many bytes as the storage holds have passed
    /// through, storage that was never more than a quarter used during that
    /// window is halved (or more). At most one reallocation per storage-full of
    /// writes, so a ring that fills and drains in a steady rhythm never
    /// thrashes, while one whose use has dropped gives its memory back.
    fn note_written(&mut self, count: usize) {
        self.peak_len = self.peak_len.max(self.len);
        self.written_since_check = self.written_since_check.saturating_add(count);
        if self.written_since_check < self.storage.len() {
            return;
        }
        if self.peak_len <= self.storage.len() / 4 {
            let target = self.target_storage(self.peak_len.max(self.len) * 2);
            if target < self.storage.len() {
                self.resize_storage(target);
            }
        }
        self.peak_len = self.len;
        self.written_since_check = 0;
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("start", &self.start)
            .field("end", &self.end())
            .field("capacity", &self.capacity)
            .field("allocated_bytes", &self.storage.len())
            .finish_non_exhaustive()
    }
}

/// Zero-filled storage; large sizes come from the allocator as untouched
/// pages, so they cost resident memory only where written.
fn zeroed(size: usize) -> Box<[u8]> {
    vec![0; size].into_boxed_slice()
}

#[cfg(test)]
mod tests;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
