//! The terminal as the command sees it: window size and SIGWINCH, the
//! resize policies, raw input bytes, the environment, and a replay that
//! starts at a clean boundary after the ring overflowed.

mod support;

use ptysession::{Event, ResizePolicy, Session, WindowSize};
use support::coloured::coloured_output;
use support::vt_model::Terminal;
use support::{TempDir, close, read_to_end, read_until, sh};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_reaches_a_child_trapping_winch() {
    let script = "trap 'stty size' WINCH; stty size; while :; do sleep 0.05; done";
    let session = Session::spawn(sh(script), support::options().initial_size(WindowSize::new(30, 90))).unwrap();
    let mut client = session.attach(None).unwrap();
    let mut received = client.replay().to_vec();
    read_until(&mut client, &mut received, b"30 90\r\n").await;
    client.resize(WindowSize::new(41, 132)).unwrap();
    read_until(&mut client, &mut received, b"41 132\r\n").await;
    assert_eq!(session.size(), WindowSize::new(41, 132));
    assert_eq!(session.stats().resizes, 1);
    close(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_most_recent_request_wins_by_default() {
    let session = Session::spawn(sh("exec sleep 1000"), support::options()).unwrap();
    let big = session.attach(Some(WindowSize::new(50, 200))).unwrap();
    let small = session.attach(Some(WindowSize::new(20, 60))).unwrap();
    assert_eq!(session.size(), WindowSize::new(20, 60));
    big.resize(WindowSize::new(51, 201)).unwrap();
    assert_eq!(session.size(), WindowSize::new(51, 201));
    drop(big);
    assert_eq!(session.size(), WindowSize::new(20, 60), "the remaining client's request is the latest now");
    let sizeless = session.attach(None).unwrap();
    assert_eq!(session.size(), WindowSize::new(20, 60), "a client without a size changes nothing");
    drop(small);
    assert_eq!(session.size(), WindowSize::new(20, 60), "with no size left to follow, the terminal keeps its own");
    drop(sizeless);
    close(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smallest_policy_fits_every_client() {
    let options = support::options().resize_policy(ResizePolicy::Smallest);
    let session = Session::spawn(sh("exec sleep 1000"), options).unwrap();
    let wide = session.attach(Some(WindowSize::new(20, 200))).unwrap();
    let tall = session.attach(Some(WindowSize::new(60, 80))).unwrap();
    let sizeless = session.attach(None).unwrap();
    assert_eq!(session.size(), WindowSize::new(20, 80));
    drop(wide);
    assert_eq!(session.size(), WindowSize::new(60, 80), "a client leaving lets the others grow");
    tall.resize(WindowSize::new(70, 90)).unwrap();
    assert_eq!(session.size(), WindowSize::new(70, 90));
    drop((tall, sizeless));
    close(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_byte_value_reaches_a_raw_mode_child_unchanged() {
    let dir = TempDir::new();
    let out = dir.path().join("input");
    let script = format!("stty raw -echo; printf R; head -c 512 > '{}'; printf D", out.display());
    let session = Session::spawn(sh(&script), support::options()).unwrap();
    let mut client = session.attach(None).unwrap();
    let mut received = client.replay().to_vec();
    read_until(&mut client, &mut received, b"R").await;
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    client.write(all_bytes.clone()).await.unwrap();
    client.write(all_bytes.clone()).await.unwrap();
    read_until(&mut client, &mut received, b"D").await;
    assert_eq!(std::fs::read(&out).unwrap(), [all_bytes.clone(), all_bytes].concat());
    assert_eq!(session.stats().bytes_in, 512);
    close(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_chunks_from_many_clients_are_never_interleaved() {
    many_clients_write_whole_chunks(3000).await;
}

/// Chunks larger than the terminal's input queue: each is written in
/// part at once and the rest is queued, still whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_chunks_larger_than_the_terminal_takes_at_once_stay_whole() {
    many_clients_write_whole_chunks(20_000).await;
}

async fn many_clients_write_whole_chunks(chunk_size: usize) {
    let dir = TempDir::new();
    let out = dir.path().join("input");
    const CLIENTS: usize = 4;
    const CHUNKS: usize = 20;
    let total = CLIENTS * CHUNKS * chunk_size;
    let script = format!("stty raw -echo; printf R; head -c {total} > '{}'; printf D", out.display());
    let session = Session::spawn(sh(&script), support::options()).unwrap();
    let mut watcher = session.attach(None).unwrap();
    let mut received = watcher.replay().to_vec();
    read_until(&mut watcher, &mut received, b"R").await;
    let writers: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let input = session.attach(None).unwrap().input();
            tokio::spawn(async move {
                for _ in 0..CHUNKS {
                    input.write(vec![b'a' + client as u8; chunk_size]).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        tokio::time::timeout(support::WAIT, writer).await.unwrap().unwrap();
    }
    read_until(&mut watcher, &mut received, b"D").await;
    let written = std::fs::read(&out).unwrap();
    assert_eq!(written.len(), total);
    for (index, chunk) in written.chunks(chunk_size).enumerate() {
        assert!(chunk.iter().all(|byte| *byte == chunk[0]), "chunk {index} is interleaved");
    }
    close(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_child_sees_term_and_a_utf8_locale() {
    let mut command = sh("echo \"term=$TERM\"; echo \"ctype=${LC_ALL:-${LC_CTYPE:-$LANG}}\"; exit 0");
    command.env_remove("LC_ALL").env_remove("LANG").env("LC_CTYPE", "C");
    let session = Session::spawn(command, support::options()).unwrap();
    let mut client = session.attach(None).unwrap();
    let mut received = client.replay().to_vec();
    received.extend_from_slice(&read_to_end(&mut client).await.0);
    let text = String::from_utf8_lossy(&received);
    assert!(text.contains("term=xterm-256color\r\n"), "{text:?}");
    assert!(text.contains("ctype=C.UTF-8\r\n"), "{text:?}");
    close(&session).await;

    // What the command sets explicitly is kept.
    let mut command = sh("echo \"term=$TERM ctype=$LC_CTYPE\"");
    command.env("TERM", "vt100").env("LC_CTYPE", "en_US.UTF-8");
    let session = Session::spawn(command, support::options()).unwrap();
    let mut client = session.attach(None).unwrap();
    let mut received = client.replay().to_vec();
    received.extend_from_slice(&read_to_end(&mut client).await.0);
    assert!(support::contains(&received, b"term=vt100 ctype=en_US.UTF-8\r\n"));
    close(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_after_overflow_starts_on_a_character_outside_any_escape_sequence() {
    let dir = TempDir::new();
    let mut rng = fastrand::Rng::with_seed(11);
    for round in 0..12 {
        let stream = coloured_output(&mut rng, 40_000 + round * 997);
        let file = dir.path().join(format!("out-{round}"));
        std::fs::write(&file, &stream).unwrap();
        // Raw output, so that the bytes the ring holds are the stream's.
        let script = format!("stty -opost -echo; cat '{}'; exec sleep 1000", file.display());
        let options = support::options().scrollback_bytes(4096 + round * 311);
        let session = Session::spawn(sh(&script), options).unwrap();
        let deadline = std::time::Instant::now() + support::WAIT;
        while session.stats().bytes_out < stream.len() as u64 {
            assert!(std::time::Instant::now() < deadline, "the output did not arrive");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }

        let client = session.attach(None).unwrap();
        let start = client.replay_seq() as usize;
        assert!(start > 0, "the ring overflowed");
        assert_eq!(client.replay().as_ref(), &stream[start..], "round {round}: the replay is the stream's tail");
        let mut terminal = Terminal::default();
        terminal.feed(&stream[..start]);
        assert!(terminal.is_clean(), "round {round}: replay starts at {start} in state {terminal:?}");
        assert!(std::str::from_utf8(client.replay()).is_ok(), "round {round}: the replay is whole characters");
        drop(client);
        close(&session).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_written_just_before_exit_is_not_lost_and_comes_before_the_status() {
    for round in 0..10 {
        let session = Session::spawn(sh("seq 1 3000; printf END"), support::options()).unwrap();
        let mut client = session.attach(None).unwrap();
        let mut received = client.replay().to_vec();
        let (rest, last) = read_to_end(&mut client).await;
        received.extend_from_slice(&rest);
        assert!(received.ends_with(b"2999\r\n3000\r\nEND"), "round {round}");
        assert_eq!(last, Some(Event::Exited(ptysession::ExitStatus::Code(0))));
        close(&session).await;
    }
}
