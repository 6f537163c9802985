//! Unit tests of the ring's edges, and the proptest model test against a
//! `VecDeque` (`cargo xtask model` runs it with many more cases).

use super::*;
use crate::fuzzing::{Model, Op, apply};

fn contents(ring: &Ring) -> Vec<u8> {
    ring.to_vec()
}

#[test]
fn empty_ring() {
    let ring = Ring::with_capacity(16);
    assert!(ring.is_empty());
    assert_eq!((ring.start(), ring.end(), ring.len()), (0, 0, 0));
    assert_eq!(ring.slices_from(0), Ok((&[][..], &[][..])));
    assert_eq!(ring.slices_from(1), Err(Error::Future { seq: 1, end: 0 }));
    let mut buf = [0; 4];
    assert_eq!(ring.read_at(0, &mut buf), Ok(0));
    assert_eq!(ring.allocated_bytes(), 0);
}

#[test]
fn zero_capacity_counts_but_keeps_nothing() {
    let mut ring = Ring::with_capacity(0);
    assert_eq!(ring.write(b"abc"), 3);
    assert_eq!((ring.start(), ring.end()), (3, 3));
    assert_eq!(ring.write_bounded(b"x"), 0);
    assert_eq!(ring.slices_from(3), Ok((&[][..], &[][..])));
    assert_eq!(ring.slices_from(2), Err(Error::Evicted { seq: 2, start: 3 }));
    assert_eq!(ring.allocated_bytes(), 0);
}

#[test]
fn exact_capacity_evicts_nothing_then_one_byte_evicts_one() {
    let mut ring = Ring::with_capacity(4);
    assert_eq!(ring.write(b"ab"), 0);
    assert_eq!(ring.write(b"cd"), 0);
    assert_eq!((ring.start(), ring.end()), (0, 4));
    assert_eq!(ring.remaining_capacity(), 0);
    assert_eq!(ring.write(b"e"), 1);
    assert_eq!(contents(&ring), b"bcde");
    assert_eq!(ring.start(), 1);
}

#[test]
fn write_exactly_capacity_replaces_everything() {
    let mut ring = Ring::with_capacity(4);
    ring.write(b"xy");
    assert_eq!(ring.write(b"abcd"), 2);
    assert_eq!(contents(&ring), b"abcd");
    assert_eq!((ring.start(), ring.end()), (2, 6));
}

#[test]
fn wrapped_contents_come_back_as_two_slices() {
    let mut ring = Ring::with_capacity(8);
    ring.write(b"012345");
    ring.write(b"6789ab"); // wraps inside storage of 8 bytes
    let (a, b) = ring.slices_from(ring.start()).unwrap();
    assert!(!b.is_empty(), "expected a wrapped range, got {a:?} {b:?}");
    assert_eq!([a, b].concat(), b"456789ab");
    let (a, b) = ring.slices_from(9).unwrap();
    assert_eq!([a, b].concat(), b"9ab");
}

#[test]
fn write_larger_than_capacity_keeps_tail() {
    let mut ring = Ring::with_capacity(5);
    ring.write(b"ab");
    assert_eq!(ring.write(b"0123456789"), 7);
    assert_eq!(contents(&ring), b"56789");
    assert_eq!((ring.start(), ring.end()), (7, 12));
}

#[test]
fn read_at_start_and_at_end() {
    let mut ring = Ring::with_capacity(4);
    ring.write(b"abcdef");
    let mut buf = [0; 8];
    assert_eq!(ring.read_at(2, &mut buf), Ok(4));
    assert_eq!(&buf[..4], b"cdef");
    assert_eq!(ring.read_at(6, &mut buf), Ok(0));
    assert_eq!(ring.read_at(1, &mut buf), Err(Error::Evicted { seq: 1, start: 2 }));
    assert_eq!(ring.read_at(7, &mut buf), Err(Error::Future { seq: 7, end: 6 }));
}

#[test]
fn read_at_into_small_buffer_across_the_wrap() {
    let mut ring = Ring::with_capacity(8);
    ring.write(b"01234567");
    ring.write(b"89");
    let mut buf = [0; 3];
    assert_eq!(ring.read_at(5, &mut buf), Ok(3));
    assert_eq!(&buf, b"567");
    assert_eq!(ring.read_at(7, &mut buf), Ok(3));
    assert_eq!(&buf, b"789");
}

#[test]
fn discard_edges() {
    let mut ring = Ring::with_capacity(8);
    ring.write(b"abcdef");
    assert_eq!(ring.discard_until(0), Ok(0));
    assert_eq!(ring.discard_until(7), Err(Error::Future { seq: 7, end: 6 }));
    assert_eq!(contents(&ring), b"abcdef", "a failed discard drops nothing");
    assert_eq!(ring.discard_until(6), Ok(6));
    assert!(ring.is_empty());
    assert_eq!((ring.start(), ring.end()), (6, 6));
    ring.write(b"gh");
    assert_eq!(contents(&ring), b"gh");
}

#[test]
fn write_bounded_never_evicts() {
    let mut ring = Ring::with_capacity(4);
    assert_eq!(ring.write_bounded(b"abcdef"), 4);
    assert_eq!(ring.write_bounded(b"x"), 0);
    assert_eq!(contents(&ring), b"abcd");
    ring.discard_until(2).unwrap();
    assert_eq!(ring.write_bounded(b"xyz"), 2);
    assert_eq!(contents(&ring), b"cdxy");
}

#[test]
fn clear_keeps_end_and_frees_storage() {
    let mut ring = Ring::with_capacity(1 << 16);
    ring.write(&[1; 10_000]);
    ring.clear();
    assert_eq!((ring.start(), ring.end(), ring.len()), (10_000, 10_000, 0));
    assert_eq!(ring.allocated_bytes(), 0);
    ring.write(b"z");
    assert_eq!(ring.slices_from(10_000).unwrap().0, b"z");
}

#[test]
fn starting_at_offsets_every_sequence_number() {
    let mut ring = Ring::starting_at(4, u64::MAX - 100);
    ring.write(b"abcdef");
    assert_eq!(ring.start(), u64::MAX - 98);
    assert_eq!(ring.end(), u64::MAX - 94);
    assert_eq!(contents(&ring), b"cdef");
}

#[test]
fn debug_does_not_dump_contents() {
    let mut ring = Ring::with_capacity(64);
    ring.write(b"secret-token");
    let text = format!("{ring:?}");
    assert!(!text.contains("secret"), "{text}");
    assert!(text.contains("end: 12"), "{text}");
}

#[test]
fn empty_rings_of_large_capacity_allocate_nothing() {
    let rings: Vec<Ring> = (0..1000).map(|_| Ring::with_capacity(64 << 20)).collect();
    assert!(rings.iter().all(|ring| ring.allocated_bytes() == 0));
    // What 1000 of them cost: their handles only.
    assert!(std::mem::size_of::<Ring>() * rings.len() <= 64 * 1000);
}

#[test]
fn storage_grows_with_content_not_capacity() {
    let mut ring = Ring::with_capacity(64 << 20);
    ring.write(&[0; 100]);
    assert_eq!(ring.allocated_bytes(), MIN_STORAGE_BYTES);
    ring.write(&[0; 100_000]);
    assert_eq!(ring.allocated_bytes(), 131_072);
}

#[test]
fn send_buffer_stays_small_after_gigabytes() {
    // A send buffer: 64 KiB writes, acknowledged one write later.
    let mut ring = Ring::with_capacity(64 << 20);
    let chunk = vec![0x5A; 64 << 10];
    let mut max_allocated = 0;
    for _ in 0..(4u64 << 30) / chunk.len() as u64 {
        let acked = ring.end();
        ring.write(&chunk);
        ring.discard_until(acked).unwrap();
        max_allocated = max_allocated.max(ring.allocated_bytes());
    }
    assert_eq!(ring.end(), 4 << 30);
    assert!(max_allocated <= 128 << 10, "send buffer grew to {max_allocated} bytes");
}

#[test]
fn storage_shrinks_after_use_drops() {
    let mut ring = Ring::with_capacity(64 << 20);
    ring.write(&vec![1; 32 << 20]);
    assert_eq!(ring.allocated_bytes(), 32 << 20);
    ring.discard_until(ring.end()).unwrap();
    // Light traffic from now on: within two storage-fulls of it (the first
    // window still saw the ring full), the storage shrinks.
    for _ in 0..2 * (32 << 20) / 1024 {
        let end = ring.end();
        ring.write(&[2; 1024]);
        ring.discard_until(end).unwrap();
    }
    assert!(ring.allocated_bytes() <= 8192, "{}", ring.allocated_bytes());
}

#[test]
fn steady_full_ring_does_not_reallocate() {
    let mut ring = Ring::with_capacity(1 << 20);
    ring.write(&vec![0; 1 << 20]);
    let before = ring.slices_from(ring.start()).unwrap().0.as_ptr();
    for byte in 0..=255u8 {
        ring.write(&[byte; 4096]);
    }
    let (a, b) = ring.slices_from(ring.start()).unwrap();
    let storage_start = a.as_ptr().min(if b.is_empty() { a.as_ptr() } else { b.as_ptr() });
    assert_eq!(storage_start, before, "storage was reallocated");
}

#[test]
fn ring_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Ring>();
    assert_send_sync::<Error>();
}

mod model {
    use super::*;
    use proptest::prelude::*;

    fn op() -> impl Strategy<Value = Op> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..48);
        prop_oneof![
            4 => bytes().prop_map(Op::Write),
            1 => (any::<u8>(), any::<u16>()).prop_map(|(byte, len)| Op::WriteRepeated { byte, len }),
            2 => bytes().prop_map(Op::WriteBounded),
            2 => (-8i16..80, 0u16..64).prop_map(|(delta, buf_len)| Op::ReadAt { delta, buf_len }),
            2 => (-8i16..80).prop_map(|delta| Op::Slices { delta }),
            2 => (-8i16..80).prop_map(|delta| Op::Discard { delta }),
            1 => Just(Op::ShrinkToFit),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        #[test]
        fn model_matches_vecdeque(
            capacity in prop_oneof![0usize..70, Just(4096), Just(5000)],
            ops in proptest::collection::vec(op(), 1..64),
        ) {
            let mut ring = Ring::with_capacity(capacity);
            let mut model = Model::new(capacity);
            for op in &ops {
                apply(&mut ring, &mut model, op);
            }
        }
    }
}

#[test]
fn no_error_message_repeats_a_source() {
    use std::error::Error as _;
    // Every variant, through an exhaustive match, so that a new variant
    // must be looked at here.
    let every_variant = [Error::Evicted { seq: 2, start: 3 }, Error::Future { seq: 9, end: 4 }];
    for error in every_variant {
        let numbers = match error {
            Error::Evicted { seq, start } => [seq, start],
            Error::Future { seq, end } => [seq, end],
        };
        let message = error.to_string();
        for number in numbers {
            assert!(message.contains(&number.to_string()), "{message:?} lacks {number}");
        }
        // Nothing lies behind a ring error, so no cause can be said twice.
        assert!(error.source().is_none(), "{error:?} has a source");
    }
}
