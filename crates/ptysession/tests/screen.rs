//! The screen model seen from a client: attaching with `attach_screen`
//! restores what a terminal showed (real programs, at the same and at a
//! different size), terminal queries are never replayed, and a client that
//! never reads is resynchronised rather than detached.
//!
//! "What a terminal shows" is a reference emulator fed the raw output from
//! the command's first byte (resized when the session was).

#![cfg(feature = "screen")]

mod support;

use std::time::{Duration, Instant};

use ptysession::{Attachment, CaptureOptions, Event, Session, WindowSize};
use support::reference::Reference;
use support::{TempDir, WAIT, close, contains, read_until, sh};

const SIZE: WindowSize = WindowSize::new(24, 80);
/// How long output must pause for a program to count as done drawing.
const QUIET: Duration = Duration::from_millis(400);

/// The first event of a screen client: its repaint.
async fn repaint(client: &mut Attachment) -> Vec<u8> {
    match tokio::time::timeout(WAIT, client.next()).await.expect("a repaint within the wait bound") {
        Some(Event::Repaint(repaint)) => repaint.to_vec(),
        other => panic!("expected a repaint, got {other:?}"),
    }
}

/// Feeds output (and repaints) into `into` until none has come for
/// [`QUIET`].
async fn settle(client: &mut Attachment, into: &mut Vec<u8>) {
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "the program never stopped drawing");
        match tokio::time::timeout(QUIET, client.next()).await {
            Err(_quiet) => return,
            Ok(Some(Event::Output(data) | Event::Repaint(data))) => into.extend_from_slice(&data),
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
}

/// A session running `command` at [`SIZE`], with a raw client attached
/// from the start that has seen the command settle.
async fn started(script: &str) -> (Session, Attachment, Vec<u8>) {
    let session = Session::spawn(sh(script), support::options().initial_size(SIZE)).unwrap();
    let mut raw = session.attach(None).unwrap();
    let mut received = raw.replay().to_vec();
    settle(&mut raw, &mut received).await;
    (session, raw, received)
}

/// Asserts that a screen client attached now at `size` sees what a
/// terminal fed the raw output sees: first at the session's size, then,
/// after the program reacted to the new size, again.
async fn assert_restored(
    session: &Session,
    raw: &mut Attachment,
    mut received: Vec<u8>,
    size: WindowSize,
) -> Reference {
    let mut client = session.attach_screen(Some(size)).unwrap();
    let mut shown = Reference::new(size);
    shown.feed(&repaint(&mut client).await);
    let mut expected = Reference::new(SIZE);
    expected.feed(&received);
    expected.resize(size);
    if size == SIZE {
        assert_eq!(shown.rows(), expected.rows());
        assert_eq!(shown.cursor(), expected.cursor());
        assert_eq!(shown.mode(), expected.mode());
    }
    // Whatever the program draws after the resize, both see it.
    let mut after = Vec::new();
    settle(&mut client, &mut after).await;
    shown.feed(&after);
    let before = received.len();
    settle(raw, &mut received).await;
    expected.feed(&received[before..]);
    assert_eq!(shown.rows(), expected.rows(), "after {:?}", String::from_utf8_lossy(&after));
    assert_eq!(shown.cursor(), expected.cursor());
    assert_eq!(shown.mode(), expected.mode());
    shown
}

/// A program that draws once (colours, absolute positions, the cursor
/// left at a known spot) and never redraws, not even on SIGWINCH.
const DRAW_ONCE: &str = "trap '' WINCH; printf '\\033[2J\\033[H\\033[5;10H\\033[31mred\\033[0m\\033[10;20H\\033[1;44mbold blue\\033[0m\\033[7;3H'; exec sleep 1000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draw_once_program_is_restored_at_the_same_size() {
    let (session, mut raw, received) = started(DRAW_ONCE).await;
    let shown = assert_restored(&session, &mut raw, received, SIZE).await;
    assert_drawing(&shown);
    assert_eq!(shown.rows()[4], "         red");
    close(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draw_once_program_is_restored_at_other_sizes() {
    let (session, mut raw, received) = started(DRAW_ONCE).await;
    // Growing, a terminal brings lines back from its scrollback above the
    // drawing (clearing the screen put blank ones there): the drawing keeps
    // its shape wherever it lands.
    let wider = assert_restored(&session, &mut raw, received, WindowSize::new(30, 100)).await;
    assert_drawing(&wider);
    drop(raw);
    let (session2, mut raw2, received2) = started(DRAW_ONCE).await;
    let smaller = assert_restored(&session2, &mut raw2, received2, WindowSize::new(20, 60)).await;
    assert_drawing(&smaller);
    close(&session).await;
    close(&session2).await;
}

/// The draw-once picture, wherever its first line is.
fn assert_drawing(shown: &Reference) {
    let rows = shown.rows();
    let red = rows.iter().position(|row| row.ends_with("red")).unwrap_or_else(|| panic!("no red in {rows:#?}"));
    assert_eq!(&rows[red][9..], "red");
    assert_eq!(shown.fg_index(red as i32, 9), Some(1));
    assert_eq!(&rows[red + 5][19..], "bold blue");
    assert!(shown.bold(red as i32 + 5, 19));
    assert_eq!(shown.cursor(), (red as i32 + 2, 2));
}

fn numbered_file(dir: &TempDir, lines: usize) -> String {
    let path = dir.path().join("lines.txt");
    let text: String = (1..=lines).map(|n| format!("line {n} of the file\n")).collect();
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vim_is_restored_at_the_same_and_a_different_size() {
    let dir = TempDir::new();
    let file = numbered_file(&dir, 5);
    let (session, mut raw, received) = started(&format!("exec vim -u NONE -N '{file}'")).await;
    assert!(contains(&received, b"line 5 of the file"), "vim drew the file");
    let same = assert_restored(&session, &mut raw, received.clone(), SIZE).await;
    assert_eq!(same.rows()[0], "line 1 of the file");
    assert!(same.mode().contains(alacritty_terminal::term::TermMode::ALT_SCREEN));
    let mut all = received;
    settle(&mut raw, &mut all).await;
    let other = assert_restored(&session, &mut raw, all, WindowSize::new(30, 100)).await;
    assert_eq!(other.rows()[0], "line 1 of the file");
    assert_eq!(other.rows()[28], "~", "vim redrew at the new size");
    raw.write(":q!\r").await.unwrap();
    assert!(tokio::time::timeout(WAIT, session.wait()).await.expect("vim quit").is_some());
    close(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn less_is_restored_at_the_same_and_a_different_size() {
    let dir = TempDir::new();
    let file = numbered_file(&dir, 500);
    let (session, mut raw, received) = started(&format!("exec less '{file}'")).await;
    assert!(contains(&received, b"line 23 of the file"), "less drew a page");
    let same = assert_restored(&session, &mut raw, received.clone(), SIZE).await;
    assert_eq!(same.rows()[22], "line 23 of the file");
    let mut all = received;
    settle(&mut raw, &mut all).await;
    let other = assert_restored(&session, &mut raw, all, WindowSize::new(30, 100)).await;
    assert_eq!(other.rows()[28], "line 29 of the file", "less redrew at the new size");
    raw.write("q").await.unwrap();
    assert!(tokio::time::timeout(WAIT, session.wait()).await.expect("less quit").is_some());
    close(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_and_its_mark_are_on_screen_and_in_the_history() {
    let session =
        Session::spawn(sh("seq 1 100000; echo MARK; exec sleep 1000"), support::options().initial_size(SIZE)).unwrap();
    let mut raw = session.attach(None).unwrap();
    let mut received = raw.replay().to_vec();
    read_until(&mut raw, &mut received, b"MARK\r\n").await;
    let again = session.attach(None).unwrap();
    assert!(!again.replay().is_empty(), "the raw replay is never empty while the ring holds output");
    assert!(
        contains(again.replay(), b"MARK\r\n"),
        "{} bytes: {:?}",
        again.replay().len(),
        String::from_utf8_lossy(&again.replay()[again.replay().len().saturating_sub(100)..])
    );
    let mut client = session.attach_screen(Some(SIZE)).unwrap();
    let mut shown = Reference::new(SIZE);
    shown.feed(&repaint(&mut client).await);
    let rows = shown.rows();
    assert_eq!(rows[22], "MARK");
    assert_eq!(rows[21], "100000");
    assert_eq!(rows[0], "99979");
    assert_eq!(shown.cursor(), (23, 0));
    let history = shown.history();
    assert_eq!(history.last().map(String::as_str), Some("99978"), "the history lands in the scrollback");
    assert!(history.iter().any(|line| line == "98979"), "1000 lines of history");
    close(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_never_replayed_and_typed_input_arrives_exactly() {
    let dir = TempDir::new();
    let out = dir.path().join("typed");
    let script = format!(
        "stty raw -echo; printf '\\033[6n\\033[c\\033[>c\\033]11;?\\007\\033P$q m\\033\\\\ready'; head -c 6 > '{}'; printf done; exec sleep 1000",
        out.display()
    );
    let session = Session::spawn(sh(&script), support::options().initial_size(SIZE)).unwrap();
    let mut raw = session.attach(None).unwrap();
    let mut received = raw.replay().to_vec();
    read_until(&mut raw, &mut received, b"ready").await;
    let mut client = session.attach_screen(Some(SIZE)).unwrap();
    let repaint = repaint(&mut client).await;
    for query in [&b"\x1b[6n"[..], b"\x1b[c", b"\x1b[>c", b"\x1b]11;?", b"\x1bP$q"] {
        assert!(!contains(&repaint, query), "{:?} replayed", String::from_utf8_lossy(query));
    }
    client.write("typed\n").await.unwrap();
    read_until(&mut raw, &mut received, b"done").await;
    assert_eq!(std::fs::read(&out).unwrap(), b"typed\n");
    close(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_resynchronised_to_the_final_screen() {
    let script = "read go; head -c 256M /dev/urandom | base64; echo DONE; exec sleep 1000";
    let options = support::options().initial_size(SIZE).client_queue_bytes(1 << 20);
    let session = Session::spawn(sh(script), options).unwrap();
    let mut lazy = session.attach_screen(Some(SIZE)).unwrap();
    let mut reader = session.attach_screen(Some(SIZE)).unwrap();
    let started = Instant::now();
    reader.write("go\n").await.unwrap();
    // The reader keeps up (it is resynchronised too if the machine is too
    // busy to let it); it sees the end.
    let mut tail = Vec::new();
    let mut total = 0u64;
    while !contains(&tail, b"DONE\r\n") {
        match tokio::time::timeout(WAIT, reader.next()).await.expect("output within the wait bound") {
            Some(Event::Output(data) | Event::Repaint(data)) => {
                total += data.len() as u64;
                tail.extend_from_slice(&data);
                if tail.len() > 64 {
                    tail.drain(..tail.len() - 16);
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    eprintln!("reader: {total} bytes in {elapsed:?} while another client never read");
    // The client that never read: a repaint in place of what it missed,
    // then what followed; never detached.
    // Its repaint comes once the screen model has caught up.
    let mut shown = Reference::new(SIZE);
    shown.feed(&repaint(&mut lazy).await);
    let mut rest = Vec::new();
    settle(&mut lazy, &mut rest).await;
    shown.feed(&rest);
    let rows = shown.rows();
    assert_eq!(rows[22], "DONE", "{rows:#?}");
    assert_eq!(rows[21].len(), 76, "a line of base64 above it");
    let stats = session.stats();
    assert!(stats.resyncs >= 1);
    assert_eq!(stats.clients_lagged, 0);
    assert_eq!(session.clients(), 2);
    close(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_follows_the_output_read_so_far() {
    let (session, mut raw, mut received) = started("seq 1 30; printf 'last \\033[7mline\\033[0m'; sleep 60").await;
    read_until(&mut raw, &mut received, b"line").await;
    let screen = tokio::time::timeout(WAIT, session.capture(CaptureOptions::new())).await.unwrap().unwrap();
    let lines: Vec<&str> = screen.lines().collect();
    assert_eq!(lines.len(), usize::from(SIZE.rows));
    assert_eq!(lines[0], "8");
    assert_eq!(lines[22], "30");
    assert_eq!(lines[23], "last line");
    let with_history =
        session.capture(CaptureOptions::new().history_lines(5).escapes(true)).await.expect("a capture with escapes");
    assert!(with_history.starts_with("3\n4\n5\n6\n7\n8\n"), "{with_history}");
    assert!(with_history.ends_with("last \x1b[0;7mline\x1b[0m\n"), "{with_history:?}");
    close(&session).await;
    assert!(matches!(session.capture(CaptureOptions::new()).await, Err(ptysession::Error::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_a_screen_model_has_nothing_to_capture_or_repaint() {
    let session = Session::spawn(sh("sleep 60"), support::options().screen_model(false)).unwrap();
    let captured = session.capture(CaptureOptions::new()).await;
    assert!(matches!(captured, Err(ptysession::Error::NoScreenModel)), "{captured:?}");
    let client = session.attach(None).unwrap();
    assert!(matches!(client.input().request_repaint(), Err(ptysession::Error::NoScreenModel)));
    close(&session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_repaint_comes_after_the_output_not_yet_taken() {
    let (session, mut raw, mut received) =
        started("read go; seq 1 100; echo DONE; read more; echo AFTER; sleep 60").await;
    let mut client = session.attach_screen(Some(SIZE)).unwrap();
    let mut shown = Reference::new(SIZE);
    shown.feed(&repaint(&mut client).await);
    raw.write("go\n").await.unwrap();
    read_until(&mut raw, &mut received, b"DONE\r\n").await;
    // The client took none of that output: it still gets all of it, then
    // the repaint.
    client.input().request_repaint().unwrap();
    let mut output = Vec::new();
    let painted = loop {
        match tokio::time::timeout(WAIT, client.next()).await.expect("an event within the wait bound") {
            Some(Event::Output(data)) => output.extend_from_slice(&data),
            Some(Event::Repaint(data)) => break data,
            other => panic!("unexpected {other:?}"),
        }
    };
    let text = String::from_utf8_lossy(&output);
    assert!(text.contains("\r\n1\r\n2\r\n") && text.ends_with("100\r\nDONE\r\n"), "{text:?}");
    shown.feed(&output);
    let before = shown.rows();
    shown.feed(&painted);
    assert_eq!(shown.rows(), before, "the repaint draws what the output drew");
    assert_eq!(shown.rows()[22], "DONE");
    // Output continues exactly after it.
    raw.write("x\n").await.unwrap();
    let mut rest = Vec::new();
    settle(&mut client, &mut rest).await;
    assert!(!contains(&rest, b"DONE"), "nothing comes again: {:?}", String::from_utf8_lossy(&rest));
    shown.feed(&rest);
    let rows = shown.rows();
    let last = rows.iter().rposition(|row| !row.is_empty()).unwrap();
    assert_eq!(rows[last - 2..=last], ["DONE", "x", "AFTER"], "{rows:#?}");
    close(&session).await;
}
