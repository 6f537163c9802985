//! The send buffer of the core: the written bytes the peer has not
//! acknowledged yet, addressed by stream sequence number, as a queue of
//! shared chunks ([`Bytes`]).
//!
//! A chunk the application hands over whole ([`SendQueue::push_chunk`]) is
//! kept as it is, without a copy; the send buffer holds a reference to the
//! caller's bytes until the peer acknowledges them. Small chunks and
//! borrowed bytes ([`SendQueue::write_copy`]) are copied into an open tail,
//! which becomes a chunk of its own when it is transmitted
//! ([`SendQueue::seal`]), so that many small writes still travel in few
//! frames. Acknowledged bytes leave from the front; a chunk's storage goes
//! back to the allocator once no one else refers to it.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

/// Chunks shorter than this are copied into the tail rather than queued:
/// a chunk costs a queue entry, and a frame boundary in what
/// [`SendQueue::slices_from`] hands out.
pub(crate) const MIN_SHARED_CHUNK: usize = 1024;

/// The first storage the tail takes; each further block is twice the
/// size of the one before, up to [`TAIL_BLOCK`].
const FIRST_TAIL_BLOCK: usize = 4096;

/// The largest block the tail grows by when it needs room.
const TAIL_BLOCK: usize = 64 << 10;

/// A queue of written, unacknowledged bytes; see the [module
/// documentation](self).
#[derive(Debug)]
pub(crate) struct SendQueue {
    /// Sealed chunks, oldest first, each with the sequence number of its
    /// first byte; they follow one another without a gap from `start`.
    chunks: VecDeque<Chunk>,
    /// Copied bytes after the last chunk, not sealed yet.
    tail: BytesMut,
    /// The sequence number of the oldest byte held.
    start: u64,
    /// Bytes held (chunks and tail).
    len: usize,
    /// The most bytes held at once.
    capacity: usize,
    /// The size of the tail's next block.
    tail_block: usize,
}

#[derive(Debug)]
struct Chunk {
    seq: u64,
    bytes: Bytes,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.seq + self.bytes.len() as u64
    }
}

/// Bytes from a sequence number on, as [`SendQueue::slices_from`] gives
/// them: at most two contiguous parts, each with the chunk it lies in (if
/// sealed).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slices<'a> {
    pub(crate) parts: [&'a [u8]; 2],
    pub(crate) owners: [Option<&'a Bytes>; 2],
}

impl SendQueue {
    /// An empty queue that holds at most `capacity` bytes.
    pub(crate) fn with_capacity(capacity: usize) -> SendQueue {
        SendQueue {
            chunks: VecDeque::new(),
            tail: BytesMut::new(),
            start: 0,
            len: 0,
            capacity,
            tail_block: FIRST_TAIL_BLOCK,
        }
    }

    /// The sequence number of the oldest byte held.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// One past the newest byte written.
    pub(crate) fn end(&self) -> u64 {
        self.start + self.len as u64
    }

    /// Bytes held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many more bytes may be written.
    pub(crate) fn remaining_capacity(&self) -> usize {
        self.capacity.saturating_sub(self.len)
    }

    /// Bytes of storage the queue holds, as far as it knows: the bytes
    /// held and the tail's spare room. (A shared chunk may be a view into
    /// a larger allocation of its owner's.)
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.len + (self.tail.capacity() - self.tail.len())
    }

    /// Copies as much of `data` as fits; returns how many bytes that was.
    pub(crate) fn write_copy(&mut self, data: &[u8]) -> usize {
        let accepted = data.len().min(self.remaining_capacity());
        if accepted == 0 {
            return 0;
        }
        if self.tail.capacity() - self.tail.len() < accepted {
            // Reclaims the tail's storage if every chunk sealed from it is
            // gone, else allocates.
            self.tail.reserve(accepted.max(self.tail_block));
            self.tail_block = (self.tail_block * 2).min(TAIL_BLOCK);
        }
        self.tail.extend_from_slice(&data[..accepted]);
        self.len += accepted;
        accepted
    }

    /// Appends as much of `chunk` as fits, without a copy unless it is
    /// shorter than [`MIN_SHARED_CHUNK`]; returns how many bytes that was.
    pub(crate) fn push_chunk(&mut self, chunk: Bytes) -> usize {
        if chunk.len() < MIN_SHARED_CHUNK {
            return self.write_copy(&chunk);
        }
        let accepted = chunk.len().min(self.remaining_capacity());
        if accepted == 0 {
            return 0;
        }
        self.seal();
        let seq = self.end();
        let mut chunk = chunk;
        chunk.truncate(accepted);
        self.chunks.push_back(Chunk { seq, bytes: chunk });
        self.len += accepted;
        accepted
    }

    /// Makes the tail's bytes a chunk, so that they can be handed out as
    /// [`Bytes`].
    pub(crate) fn seal(&mut self) {
        if self.tail.is_empty() {
            return;
        }
        let seq = self.end() - self.tail.len() as u64;
        let bytes = self.tail.split().freeze();
        self.chunks.push_back(Chunk { seq, bytes });
    }

    /// The bytes from `seq` to the end, as at most two parts (the rest
    /// follows in further calls); `None` unless `start() <= seq <= end()`.
    pub(crate) fn slices_from(&self, seq: u64) -> Option<Slices<'_>> {
        if seq < self.start || seq > self.end() {
            return None;
        }
        let index = self.chunks.partition_point(|chunk| chunk.end() <= seq);
        let mut slices = Slices { parts: [&[], &[]], owners: [None, None] };
        let mut filled = 0;
        if let Some(chunk) = self.chunks.get(index) {
            let offset = (seq - chunk.seq) as usize;
            slices.parts[0] = &chunk.bytes[offset..];
            slices.owners[0] = Some(&chunk.bytes);
            filled = 1;
            if let Some(next) = self.chunks.get(index + 1) {
                slices.parts[1] = &next.bytes;
                slices.owners[1] = Some(&next.bytes);
                return Some(slices);
            }
        }
        // The rest is in the tail.
        let tail_start = self.end() - self.tail.len() as u64;
        let offset = (seq.max(tail_start) - tail_start) as usize;
        slices.parts[filled] = &self.tail[offset..];
        Some(slices)
    }

    /// Drops the bytes before `seq`; returns whether any went.
    pub(crate) fn discard_until(&mut self, seq: u64) -> bool {
        let seq = seq.min(self.end());
        if seq <= self.start {
            return false;
        }
        while let Some(front) = self.chunks.front_mut() {
            if front.end() <= seq {
                self.chunks.pop_front();
            } else {
                if front.seq < seq {
                    front.bytes.advance((seq - front.seq) as usize);
                    front.seq = seq;
                }
                break;
            }
        }
        let tail_start = self.end() - self.tail.len() as u64;
        if seq > tail_start {
            self.tail.advance((seq - tail_start) as usize);
        }
        self.len -= (seq - self.start) as usize;
        self.start = seq;
        true
    }

    /// Gives back storage held for nothing: the tail's spare room when
    /// the queue is empty, and the queue's own slots.
    pub(crate) fn shrink_to_fit(&mut self) {
        if self.tail.is_empty() {
            self.tail = BytesMut::new();
            self.tail_block = FIRST_TAIL_BLOCK;
        }
        if self.chunks.is_empty() {
            self.chunks = VecDeque::new();
        } else {
            self.chunks.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Everything from `seq` to the end, gathered through `slices_from`.
    fn gather(queue: &SendQueue, mut seq: u64) -> Vec<u8> {
        let mut out = Vec::new();
        while seq < queue.end() {
            let slices = queue.slices_from(seq).expect("in range");
            let [a, b] = slices.parts;
            assert!(!a.is_empty(), "no progress at {seq}");
            for (part, owner) in slices.parts.iter().zip(slices.owners) {
                if let Some(owner) = owner {
                    // A part lies inside the chunk it names.
                    assert_eq!(owner.slice_ref(part).as_ref(), *part);
                }
            }
            out.extend_from_slice(a);
            out.extend_from_slice(b);
            seq += (a.len() + b.len()) as u64;
        }
        out
    }

    #[test]
    fn a_shared_chunk_is_not_copied() {
        let mut queue = SendQueue::with_capacity(1 << 20);
        let chunk = Bytes::from(vec![7u8; 4096]);
        assert_eq!(queue.push_chunk(chunk.clone()), 4096);
        let slices = queue.slices_from(0).unwrap();
        assert_eq!(slices.parts[0].as_ptr(), chunk.as_ptr());
        assert_eq!(slices.parts[0].len(), 4096);
    }

    #[test]
    fn small_writes_gather_in_one_chunk_once_sealed() {
        let mut queue = SendQueue::with_capacity(1 << 20);
        for byte in 0..100u8 {
            assert_eq!(queue.write_copy(&[byte]), 1);
        }
        assert_eq!(queue.push_chunk(Bytes::from_static(b"tiny")), 4);
        queue.seal();
        let slices = queue.slices_from(10).unwrap();
        assert_eq!(slices.parts[0].len(), 94);
        assert!(slices.owners[0].is_some());
    }

    #[test]
    fn capacity_bounds_both_paths() {
        let mut queue = SendQueue::with_capacity(5000);
        assert_eq!(queue.push_chunk(Bytes::from(vec![1; 4000])), 4000);
        assert_eq!(queue.push_chunk(Bytes::from(vec![2; 4000])), 1000);
        assert_eq!(queue.write_copy(b"x"), 0);
        assert_eq!(queue.remaining_capacity(), 0);
        assert!(queue.discard_until(4500));
        assert_eq!((queue.start(), queue.len()), (4500, 500));
        assert_eq!(queue.write_copy(&[3; 10]), 10);
        assert_eq!(gather(&queue, 4500), [vec![2; 500], vec![3; 10]].concat());
    }

    #[test]
    fn discarding_everything_and_shrinking_releases_the_tail() {
        let mut queue = SendQueue::with_capacity(1 << 20);
        queue.write_copy(&[1; 100]);
        assert!(queue.allocated_bytes() >= FIRST_TAIL_BLOCK);
        assert!(queue.discard_until(100));
        assert!(!queue.discard_until(100));
        queue.shrink_to_fit();
        assert_eq!(queue.allocated_bytes(), 0);
        assert!(queue.slices_from(99).is_none());
        assert!(queue.slices_from(101).is_none());
        let end = queue.slices_from(100).unwrap();
        assert!(end.parts.iter().all(|part| part.is_empty()));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Copy(Vec<u8>),
        Push(Vec<u8>),
        Seal,
        Discard(u16),
        Shrink,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Op::Copy),
            proptest::collection::vec(any::<u8>(), 0..3000).prop_map(Op::Push),
            Just(Op::Seal),
            any::<u16>().prop_map(Op::Discard),
            Just(Op::Shrink),
        ]
    }

    proptest! {
        /// The queue holds exactly the bytes a plain vector would, from
        /// every sequence number, whatever mix of copies, shared chunks,
        /// seals and discards built it.
        #[test]
        fn matches_a_plain_buffer(ops in proptest::collection::vec(op(), 0..60)) {
            let capacity = 8000;
            let mut queue = SendQueue::with_capacity(capacity);
            let mut model: Vec<u8> = Vec::new();
            let mut model_start = 0u64;
            for op in ops {
                match op {
                    Op::Copy(data) => {
                        let fit = data.len().min(capacity - model.len());
                        prop_assert_eq!(queue.write_copy(&data), fit);
                        model.extend_from_slice(&data[..fit]);
                    }
                    Op::Push(data) => {
                        let fit = data.len().min(capacity - model.len());
                        prop_assert_eq!(queue.push_chunk(Bytes::from(data.clone())), fit);
                        model.extend_from_slice(&data[..fit]);
                    }
                    Op::Seal => queue.seal(),
                    Op::Discard(by) => {
                        let seq = model_start + u64::from(by) % (model.len() as u64 + 1);
                        prop_assert_eq!(queue.discard_until(seq), seq > model_start);
                        model.drain(..(seq - model_start) as usize);
                        model_start = seq;
                    }
                    Op::Shrink => queue.shrink_to_fit(),
                }
                prop_assert_eq!(queue.start(), model_start);
                prop_assert_eq!(queue.len(), model.len());
                for from in [0, model.len() / 3, model.len() / 2, model.len()] {
                    let got = gather(&queue, model_start + from as u64);
                    prop_assert_eq!(&got[..], &model[from..]);
                }
            }
        }
    }
}
