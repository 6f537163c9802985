//! Runs `sh` in a session, types a command into it, detaches, attaches
//! again and prints the replay: `cargo run -p ptysession --example shell`.

use std::process::Command;
use std::time::Duration;

use ptysession::{Event, Options, Session, WindowSize};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let session = Session::spawn(Command::new("sh"), Options::new())?;
    let mut client = session.attach(Some(WindowSize::new(24, 80)))?;
    client.write("echo hi\n").await?;
    let mut screen = String::from_utf8_lossy(client.replay()).into_owned();
    // The terminal echoes the typed line, then sh prints `hi`.
    while screen.matches("hi\r\n").count() < 2 {
        match tokio::time::timeout(Duration::from_secs(10), client.next()).await? {
            Some(Event::Output(data)) => screen.push_str(&String::from_utf8_lossy(&data)),
            other => return Err(format!("unexpected {other:?}").into()),
        }
    }
    println!("live output: {screen:?}");
    client.detach();

    let again = session.attach(None)?;
    println!("replay after attaching again: {:?}", String::from_utf8_lossy(again.replay()));
    drop(again);

    tokio::time::timeout(Duration::from_secs(20), session.close()).await?;
    println!("session {}, {:?}", session.state(), session.stats());
    Ok(())
}
