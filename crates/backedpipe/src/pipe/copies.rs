//! The storage a writing handle copies borrowed bytes into: a few blocks,
//! each carved into chunks that the send buffer keeps until the peer
//! acknowledges them, and reused once every chunk carved from it is gone.
//! Reusing them spares the allocator and the kernel: fresh storage for
//! every write costs a page fault per page written.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// The size of a block.
const BLOCK_BYTES: usize = 256 << 10;

/// The most blocks kept for reuse, whatever the bytes in flight.
const MAX_BLOCKS: usize = 16;

/// See the [module documentation](self).
#[derive(Debug)]
pub(super) struct Copies {
    /// The block being carved first, then the others, the least recently
    /// used last.
    blocks: VecDeque<BytesMut>,
    /// The most blocks kept; more may be in flight, and are freed once
    /// acknowledged.
    max_blocks: usize,
}

impl Copies {
    /// Storage for a writer that has at most `in_flight_bytes` written
    /// and not yet acknowledged while connected: enough blocks to reuse
    /// rather than allocate, but at most [`MAX_BLOCKS`].
    pub(super) fn new(in_flight_bytes: usize) -> Copies {
        let max_blocks = (in_flight_bytes.div_ceil(BLOCK_BYTES) + 1).clamp(2, MAX_BLOCKS);
        Copies { blocks: VecDeque::new(), max_blocks }
    }

    /// The bytes of storage kept.
    pub(super) fn held_bytes(&self) -> usize {
        self.blocks.iter().map(BytesMut::capacity).sum()
    }

    /// Lets go of every block (a block still in flight is freed once its
    /// chunks are acknowledged).
    pub(super) fn release(&mut self) {
        self.blocks = VecDeque::new();
    }

    /// `data` in a chunk of its own.
    pub(super) fn copy(&mut self, data: &[u8]) -> Bytes {
        if data.len() > BLOCK_BYTES {
            return Bytes::copy_from_slice(data);
        }
        let fits = |block: &mut BytesMut| block.capacity() >= data.len() || block.try_reclaim(data.len());
        if !self.blocks.front_mut().is_some_and(fits) {
            match self.blocks.iter_mut().skip(1).position(fits) {
                Some(index) => {
                    // The current block goes last: its chunks are the ones
                    // least likely to be acknowledged yet.
                    let found = self.blocks.remove(index + 1).expect("found");
                    self.blocks.rotate_left(1);
                    self.blocks.push_front(found);
                }
                None => {
                    if self.blocks.len() >= self.max_blocks {
                        // Freed when its chunks are acknowledged.
                        self.blocks.pop_back();
                    }
                    self.blocks.rotate_left(usize::from(!self.blocks.is_empty()));
                    self.blocks.push_front(BytesMut::with_capacity(BLOCK_BYTES));
                }
            }
        }
        let block = self.blocks.front_mut().expect("a block that fits");
        block.extend_from_slice(data);
        block.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_reused_once_its_chunks_are_gone() {
        let mut copies = Copies::new(1 << 20);
        let first = copies.copy(&[1; 1000]);
        let address = first.as_ptr();
        drop(first);
        // The rest of the block first, then the block again from its start.
        let mut chunks: Vec<Bytes> = (0..(BLOCK_BYTES / 1000 - 1)).map(|_| copies.copy(&[2; 1000])).collect();
        assert_eq!(copies.blocks.len(), 1);
        chunks.clear();
        let again = copies.copy(&[3; 1000]);
        assert_eq!(again.as_ptr(), address);
        assert_eq!(&again[..], &[3; 1000]);
        assert!(copies.held_bytes() > 0);
        copies.release();
        assert_eq!(copies.held_bytes(), 0);
        // A chunk outlives the release of its block.
        assert_eq!(&again[..], &[3; 1000]);
    }

    #[test]
    fn blocks_still_referenced_are_not_reused_and_few_are_kept() {
        let mut copies = Copies::new(1 << 20);
        assert_eq!(copies.max_blocks, 5);
        let held: Vec<Bytes> =
            (0..(copies.max_blocks + 2) * 4).map(|i| copies.copy(&[i as u8; BLOCK_BYTES / 4])).collect();
        assert_eq!(copies.blocks.len(), copies.max_blocks);
        for (i, chunk) in held.iter().enumerate() {
            assert!(chunk.iter().all(|&byte| byte == i as u8), "chunk {i} was overwritten");
        }
        let big = copies.copy(&vec![9; BLOCK_BYTES + 1]);
        assert_eq!(big.len(), BLOCK_BYTES + 1);
    }
}
