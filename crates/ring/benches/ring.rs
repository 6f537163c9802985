//! Criterion benches of `seqring` against its baselines, in the same run:
//! 4 KiB writes into a full ring vs `memcpy` into a preallocated buffer, a
//! `VecDeque`, and `ringbuf`'s overwriting ring; read-back of the last 1 MiB.

use std::collections::VecDeque;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringbuf::HeapRb;
use seqring::Ring;

const CAPACITY: usize = 8 << 20;
const CHUNK: usize = 4 << 10;
/// Bytes written per iteration: 256 chunks of 4 KiB.
const PER_ITER: usize = 1 << 20;

fn write_4k(c: &mut Criterion) {
    let chunk: Vec<u8> = (0..CHUNK).map(|i| i as u8).collect();
    let mut group = c.benchmark_group("write_4k");
    group.throughput(Throughput::Bytes(PER_ITER as u64));

    let mut flat = vec![0u8; CAPACITY];
    let mut offset = 0;
    group.bench_function("memcpy_baseline", |b| {
        b.iter(|| {
            for _ in 0..PER_ITER / CHUNK {
                flat[offset..offset + CHUNK].copy_from_slice(black_box(&chunk));
                offset = (offset + CHUNK) % CAPACITY;
            }
            black_box(&flat);
        })
    });

    let mut ring = Ring::with_capacity(CAPACITY);
    ring.write(&vec![0; CAPACITY]);
    group.bench_function("seqring", |b| {
        b.iter(|| {
            for _ in 0..PER_ITER / CHUNK {
                ring.write(black_box(&chunk));
            }
            black_box(&ring);
        })
    });

    let mut deque: VecDeque<u8> = VecDeque::with_capacity(CAPACITY);
    deque.extend(std::iter::repeat_n(0, CAPACITY));
    group.bench_function("vecdeque", |b| {
        b.iter(|| {
            for _ in 0..PER_ITER / CHUNK {
                deque.drain(..CHUNK);
                deque.extend(black_box(&chunk));
            }
            black_box(&deque);
        })
    });

    let mut rb = HeapRb::<u8>::new(CAPACITY);
    rb.push_slice_overwrite(&vec![0; CAPACITY]);
    group.bench_function("ringbuf_overwrite", |b| {
        b.iter(|| {
            for _ in 0..PER_ITER / CHUNK {
                rb.push_slice_overwrite(black_box(&chunk));
            }
            black_box(&rb);
        })
    });
    group.finish();
}

fn read_back(c: &mut Criterion) {
    let mut ring = Ring::with_capacity(CAPACITY);
    let data: Vec<u8> = (0..CAPACITY + 12_345).map(|i| (i * 7) as u8).collect();
    ring.write(&data);
    let from = ring.end() - (1 << 20);
    let mut out = vec![0u8; 1 << 20];

    let mut group = c.benchmark_group("read_last_1mib");
    group.bench_function("slices_from_zero_copy", |b| {
        b.iter(|| {
            let (a, b) = ring.slices_from(black_box(from)).unwrap();
            black_box((a.len(), b.len()))
        })
    });
    group.throughput(Throughput::Bytes(1 << 20));
    group.bench_function("read_at_copy", |b| b.iter(|| ring.read_at(black_box(from), &mut out).unwrap()));
    let source = &data[data.len() - (1 << 20)..];
    group.bench_function("memcpy_baseline", |b| b.iter(|| out.copy_from_slice(black_box(source))));
    group.finish();
}

criterion_group!(benches, write_4k, read_back);
criterion_main!(benches);
