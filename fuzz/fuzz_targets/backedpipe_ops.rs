//! backedpipe's client core and a server (one passive core, or a session
//! table that routes connections by their HELLO as the `Listener` does)
//! over the simulated link, driven by arbitrary operation sequences
//! (writes, reads, cuts at any byte offset, first handshake included,
//! one-sided cuts, stalls, black holes, forced reconnects, failing dials,
//! half-close, close); afterwards both streams must be byte-exact and no
//! session lost, as in the proptest model.

#![no_main]

use backedpipe::fuzzing::{Op, Setup, run};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    setup: Setup,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    // Long inputs add time, not coverage.
    if input.ops.len() <= 128 {
        run(&input.setup, &input.ops);
    }
});
