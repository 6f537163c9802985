//! The receive buffer of the core: received application bytes waiting to be
//! read, in storage that grows with what it holds and is released when idle.

/// The smallest storage the buffer allocates.
const MIN_STORAGE_BYTES: usize = 4096;

/// A FIFO of bytes with contiguous free space at its tail, so that a
/// transport can read straight into it.
#[derive(Debug, Default)]
pub(crate) struct RecvBuffer {
    storage: Box<[u8]>,
    head: usize,
    tail: usize,
}

impl RecvBuffer {
    /// Bytes waiting to be read.
    pub(crate) fn len(&self) -> usize {
        self.tail - self.head
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    /// Bytes of storage held.
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.storage.len()
    }

    /// Free space at the tail for up to `want` bytes, growing the storage so
    /// that the buffer may hold up to `max_len` bytes in total. Empty when
    /// the buffer already holds `max_len` bytes or `want` is 0.
    pub(crate) fn space(&mut self, want: usize, max_len: usize) -> &mut [u8] {
        let want = want.min(max_len.saturating_sub(self.len()));
        if want == 0 {
            return &mut [];
        }
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        }
        if self.storage.len() - self.tail < want && self.head > 0 {
            self.storage.copy_within(self.head..self.tail, 0);
            self.tail -= self.head;
            self.head = 0;
        }
        let free = self.storage.len() - self.tail;
        if free < want {
            let needed = self.tail + want;
            let size = needed.checked_next_power_of_two().unwrap_or(needed).max(MIN_STORAGE_BYTES);
            let size = size.min(max_len.max(needed));
            let mut storage = vec![0; size].into_boxed_slice();
            storage[..self.tail].copy_from_slice(&self.storage[..self.tail]);
            self.storage = storage;
        }
        let end = self.storage.len().min(self.tail + want);
        &mut self.storage[self.tail..end]
    }

    /// Marks `count` bytes of the space last returned as filled.
    pub(crate) fn commit(&mut self, count: usize) {
        self.tail = (self.tail + count).min(self.storage.len());
    }

    /// Copies bytes out into `out`; returns how many.
    pub(crate) fn read(&mut self, out: &mut [u8]) -> usize {
        let count = out.len().min(self.len());
        out[..count].copy_from_slice(&self.storage[self.head..self.head + count]);
        self.head += count;
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        }
        count
    }

    /// Gives the storage back when nothing is buffered.
    pub(crate) fn release_if_empty(&mut self) {
        if self.is_empty() {
            self.storage = Box::default();
            self.head = 0;
            self.tail = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_order_growth_compaction_and_release() {
        let mut buffer = RecvBuffer::default();
        let mut expected = std::collections::VecDeque::new();
        let mut next = 0u8;
        for round in 0..200usize {
            let want = (round * 37) % 5000 + 1;
            let space = buffer.space(want, 16 << 10);
            let fill = space.len().min(want);
            for byte in &mut space[..fill] {
                *byte = next;
                expected.push_back(next);
                next = next.wrapping_add(1);
            }
            buffer.commit(fill);
            assert!(buffer.len() <= 16 << 10);
            let mut out = vec![0; (round * 53) % 3000];
            let got = buffer.read(&mut out);
            for byte in &out[..got] {
                assert_eq!(Some(*byte), expected.pop_front());
            }
            assert_eq!(buffer.len(), expected.len());
        }
        let mut out = vec![0; 1 << 20];
        let got = buffer.read(&mut out);
        assert_eq!(got, expected.len());
        buffer.release_if_empty();
        assert_eq!(buffer.allocated_bytes(), 0);
    }

    #[test]
    fn full_buffer_offers_no_space() {
        let mut buffer = RecvBuffer::default();
        let space = buffer.space(100, 10);
        assert_eq!(space.len(), 10);
        buffer.commit(10);
        assert!(buffer.space(1, 10).is_empty());
        assert_eq!(buffer.space(5, 20).len(), 5);
    }
}
