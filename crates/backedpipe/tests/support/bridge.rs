//! A stdio-to-Unix-socket bridge: connects to the socket named by its only
//! argument and copies its stdin to the socket and the socket to its
//! stdout until either side ends. It is the child process of the stdio
//! transport tests (what `ssh host agent` would be in real use).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

fn copy(mut from: impl Read, mut to: impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let count = from.read(&mut buf)?;
        if count == 0 {
            return Ok(());
        }
        to.write_all(&buf[..count])?;
        to.flush()?;
    }
}

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: backedpipe-bridge-probe SOCKET");
        return ExitCode::from(2);
    };
    let socket = match UnixStream::connect(&path) {
        Ok(socket) => socket,
        Err(err) => {
            eprintln!("cannot connect to {}: {err}", path.to_string_lossy());
            return ExitCode::from(1);
        }
    };
    let Ok(reader) = socket.try_clone() else {
        return ExitCode::from(1);
    };
    std::thread::spawn(move || {
        let _ = copy(reader, io::stdout().lock());
        // The server went away: so does the transport.
        std::process::exit(0);
    });
    let _ = copy(io::stdin().lock(), &socket);
    let _ = socket.shutdown(std::net::Shutdown::Write);
    ExitCode::SUCCESS
}
