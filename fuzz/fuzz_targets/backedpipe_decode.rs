//! Arbitrary bytes into backedpipe's decoders: HELLO and frame headers, a
//! server core fed them as a client's first bytes, a client core fed them
//! as the server's answer, and both fed them as frames after a good
//! handshake. Nothing may panic, and memory stays bounded.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    backedpipe::fuzzing::decode_garbage(data);
});
