//! A reference model of [`Ring`] and the operations that drive both, shared
//! by the proptest model test and the cargo-fuzz differential target.
//!
//! Not part of the public API: it exists only under `cfg(test)` and
//! `cfg(fuzzing)`.

use std::collections::VecDeque;

use crate::{Error, Ring};

/// One operation applied to a ring and to the model alike.
#[derive(Debug, Clone)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub enum Op {
    /// [`Ring::write`].
    Write(Vec<u8>),
    /// [`Ring::write`] of `len` copies of `byte` (reaches large sizes cheaply).
    WriteRepeated {
        /// The byte to repeat.
        byte: u8,
        /// How many times, reduced modulo a few capacities.
        len: u16,
    },
    /// [`Ring::write_bounded`].
    WriteBounded(Vec<u8>),
    /// [`Ring::read_at`] at `start() + delta` (may be out of range either
    /// way) into a buffer of `buf_len` bytes.
    ReadAt {
        /// Offset from `start()`, possibly negative.
        delta: i16,
        /// Size of the destination buffer.
        buf_len: u16,
    },
    /// [`Ring::slices_from`] at `start() + delta`.
    Slices {
        /// Offset from `start()`, possibly negative.
        delta: i16,
    },
    /// [`Ring::discard_until`] at `start() + delta`.
    Discard {
        /// Offset from `start()`, possibly negative.
        delta: i16,
    },
    /// [`Ring::shrink_to_fit`].
    ShrinkToFit,
    /// [`Ring::clear`].
    Clear,
}

/// The obviously-correct ring: a `VecDeque` of the retained bytes.
#[derive(Debug)]
pub struct Model {
    retained: VecDeque<u8>,
    start: u64,
    capacity: usize,
}

impl Model {
    /// An empty model with the given capacity.
    pub fn new(capacity: usize) -> Self {
        Self { retained: VecDeque::new(), start: 0, capacity }
    }

    fn end(&self) -> u64 {
        self.start + self.retained.len() as u64
    }

    fn check(&self, seq: u64) -> Result<usize, Error> {
        if seq < self.start {
            Err(Error::Evicted { seq, start: self.start })
        } else if seq > self.end() {
            Err(Error::Future { seq, end: self.end() })
        } else {
            Ok((seq - self.start) as usize)
        }
    }

    fn write(&mut self, data: &[u8]) -> u64 {
        let old_start = self.start;
        for &byte in data {
            self.retained.push_back(byte);
            if self.retained.len() > self.capacity {
                self.retained.pop_front();
                self.start += 1;
            }
        }
        self.start - old_start
    }
}

fn seq_at(start: u64, delta: i16) -> u64 {
    start.saturating_add_signed(i64::from(delta))
}

/// Applies `op` to both and panics with a description at the first
/// observable difference.
pub fn apply(ring: &mut Ring, model: &mut Model, op: &Op) {
    match op {
        Op::Write(data) => assert_eq!(ring.write(data), model.write(data), "write"),
        Op::WriteRepeated { byte, len } => {
            let data = vec![*byte; usize::from(*len) % (model.capacity * 3 + 7)];
            assert_eq!(ring.write(&data), model.write(&data), "write repeated");
        }
        Op::WriteBounded(data) => {
            let room = model.capacity - model.retained.len();
            let accepted = data.len().min(room);
            model.retained.extend(&data[..accepted]);
            assert_eq!(ring.write_bounded(data), accepted, "write_bounded");
        }
        Op::ReadAt { delta, buf_len } => {
            let seq = seq_at(model.start, *delta);
            let mut buf = vec![0xAA; usize::from(*buf_len) % 4096];
            let expected = model.check(seq).map(|offset| {
                let bytes: Vec<u8> = model.retained.iter().skip(offset).take(buf.len()).copied().collect();
                bytes
            });
            match (ring.read_at(seq, &mut buf), expected) {
                (Ok(n), Ok(bytes)) => assert_eq!(&buf[..n], &bytes[..], "read_at({seq})"),
                (got, want) => assert_eq!(got, want.map(|b| b.len()), "read_at({seq})"),
            }
        }
        Op::Slices { delta } => {
            let seq = seq_at(model.start, *delta);
            let expected =
                model.check(seq).map(|offset| model.retained.iter().skip(offset).copied().collect::<Vec<u8>>());
            let got = ring.slices_from(seq).map(|(a, b)| {
                assert!(!a.is_empty() || b.is_empty(), "second slice without a first");
                [a, b].concat()
            });
            assert_eq!(got, expected, "slices_from({seq})");
        }
        Op::Discard { delta } => {
            let seq = seq_at(model.start, *delta);
            let expected = model.check(seq).map(|offset| {
                model.retained.drain(..offset);
                model.start = seq;
                offset as u64
            });
            let expected = match expected {
                // Discarding below start is not an error: it drops nothing.
                Err(Error::Evicted { .. }) => Ok(0),
                other => other,
            };
            assert_eq!(ring.discard_until(seq), expected, "discard_until({seq})");
        }
        Op::ShrinkToFit => ring.shrink_to_fit(),
        Op::Clear => {
            model.start = model.end();
            model.retained.clear();
            ring.clear();
        }
    }
    assert_eq!(ring.start(), model.start, "start after {op:?}");
    assert_eq!(ring.end(), model.end(), "end after {op:?}");
    assert_eq!(ring.len(), model.retained.len(), "len after {op:?}");
    assert!(ring.allocated_bytes() <= ring.capacity(), "storage above capacity");
    assert!(ring.allocated_bytes() >= ring.len(), "storage below len");
    assert_eq!(ring.to_vec(), model.retained.iter().copied().collect::<Vec<u8>>(), "contents after {op:?}");
}
