//! Replays the tail of a stream to readers that fell behind.
//!
//! A producer writes a numbered log into a small ring; three readers
//! reconnect having seen different amounts of it. The one that is only a
//! little behind gets exactly the bytes it missed; the one too far behind
//! learns precisely what was lost and resynchronises at the oldest byte kept.
//!
//! Run with `cargo run -p seqring --example replay [CAPACITY_BYTES]`.

use seqring::{Error, Ring};

fn main() {
    let capacity: usize = std::env::args().nth(1).and_then(|arg| arg.parse().ok()).unwrap_or(256);
    let mut ring = Ring::with_capacity(capacity);
    let mut seq_of_line = Vec::new();
    for number in 1..=40 {
        seq_of_line.push(ring.end());
        ring.write(format!("line {number:02}: the quick brown fox\n").as_bytes());
    }
    println!(
        "wrote {} bytes; the ring ({} bytes) keeps sequence numbers {}..{}\n",
        ring.end(),
        ring.capacity(),
        ring.start(),
        ring.end()
    );

    for (reader, seen) in [("reader A", seq_of_line[38]), ("reader B", seq_of_line[33]), ("reader C", seq_of_line[5])] {
        println!("{reader} reconnects having read {seen} bytes:");
        match ring.slices_from(seen) {
            Ok((first, second)) => {
                let missed = [first, second].concat();
                println!("  replaying the {} bytes it missed:", missed.len());
                print_indented(&missed);
            }
            Err(Error::Evicted { seq, start }) => {
                println!("  bytes {seq}..{start} are gone ({} lost); resuming at {start}:", start - seq);
                let mut buf = vec![0; 120];
                let copied = ring.read_at(start, &mut buf).expect("start is always readable");
                print_indented(&buf[..copied]);
                println!("    ...");
            }
            Err(err) => println!("  cannot replay: {err}"),
        }
        println!();
    }
}

fn print_indented(bytes: &[u8]) {
    for line in String::from_utf8_lossy(bytes).lines() {
        println!("    {line}");
    }
}
