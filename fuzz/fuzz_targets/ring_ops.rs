//! Differential fuzzing of `seqring::Ring` against a `VecDeque` model: an
//! arbitrary capacity and sequence of operations, with every observable
//! (start, end, length, contents, errors) compared after each step.

#![no_main]

use libfuzzer_sys::fuzz_target;
use seqring::Ring;
use seqring::fuzzing::{Model, Op, apply};

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    capacity: u16,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let capacity = usize::from(input.capacity % 9000);
    let mut ring = Ring::with_capacity(capacity);
    let mut model = Model::new(capacity);
    for op in &input.ops {
        apply(&mut ring, &mut model, op);
    }
});
