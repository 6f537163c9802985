//! Non-blocking descriptors on tokio's reactor: registration for one
//! interest, and a writer that asks to be told of room only while it has
//! to wait for it.

use std::io;
use std::os::fd::OwnedFd;

use bytes::{Buf, BytesMut};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Registers `fd` (already non-blocking) with the current runtime's
/// reactor for `interest` only.
///
/// # Panics
///
/// Outside a tokio runtime with I/O enabled.
pub(crate) fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `OwnedFd` owns its descriptor: it stays open, and refers to the
    // same open file description, until the `AsyncFd` that now owns the
    // `OwnedFd` drops it, and `as_raw_fd` always returns that descriptor.
    let registered = unsafe { AsyncFd::register_with_interest(fd, interest) };
    registered.map_err(io::Error::from)
}

/// Writes that find room this many times in a row end the registration
/// for room (a stream that keeps filling the descriptor keeps it, instead
/// of registering anew each time).
const ROOMY_WRITES_BEFORE_FORGETTING: u32 = 32;

/// Writes to a non-blocking descriptor registered for reading only (a
/// terminal, whose standing interest in room would wake the reactor each
/// time the other end reads). Only when a write finds no room is a copy of
/// the descriptor registered for writing, kept while writes keep filling
/// it.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    room: Option<AsyncFd<OwnedFd>>,
    roomy: u32,
}

impl Writer {
    /// Writes `buf` to `fd` until it is empty, waiting for room as needed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: what was written is gone from `buf`, what was not is
    /// still there.
    pub(crate) async fn drain(&mut self, fd: &OwnedFd, buf: &mut BytesMut) -> io::Result<()> {
        while !buf.is_empty() {
            let count = self.write_some(fd, buf).await?;
            buf.advance(count);
        }
        Ok(())
    }

    /// One write of a non-empty prefix of `data`, after waiting for room
    /// if there is none; returns how much was written.
    ///
    /// Cancel safe: the future completes as soon as the write is made.
    async fn write_some(&mut self, fd: &OwnedFd, data: &[u8]) -> io::Result<usize> {
        loop {
            match write_now(fd, data) {
                Ok(count) => {
                    if self.room.is_some() {
                        self.roomy += 1;
                        if self.roomy >= ROOMY_WRITES_BEFORE_FORGETTING {
                            self.room = None;
                        }
                    }
                    return Ok(count);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.roomy = 0;
                    let room = match &mut self.room {
                        Some(room) => room,
                        // Registered after the refusal: if room came
                        // meanwhile, the registration reports it at once.
                        None => {
                            self.room.insert(register(rustix::io::fcntl_dupfd_cloexec(fd, 0)?, Interest::WRITABLE)?)
                        }
                    };
                    let mut guard = room.writable().await?;
                    // The next write finds out whether the room is still
                    // there; the readiness is cleared for the next wait.
                    guard.clear_ready();
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// One non-blocking write of `data`; `WouldBlock` when there is no room.
fn write_now(fd: &OwnedFd, data: &[u8]) -> io::Result<usize> {
    loop {
        match rustix::io::write(fd, data) {
            Err(rustix::io::Errno::INTR) => continue,
            result => return result.map_err(io::Error::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::OFlags;

    /// A non-blocking pipe: (read end, write end).
    fn pipe() -> (OwnedFd, OwnedFd) {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        rustix::fs::fcntl_setfl(&write, OFlags::NONBLOCK).unwrap();
        (read, write)
    }

    #[tokio::test]
    async fn a_full_descriptor_is_waited_for_and_nothing_is_lost() {
        let (read, write) = pipe();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 7000];
            loop {
                std::thread::sleep(std::time::Duration::from_micros(200));
                match rustix::io::read(&read, &mut buf[..]).unwrap() {
                    0 => return got,
                    count => got.extend_from_slice(&buf[..count]),
                }
            }
        });
        let mut writer = Writer::default();
        let mut buf = BytesMut::from(&data[..]);
        let sent = tokio::time::timeout(std::time::Duration::from_secs(20), writer.drain(&write, &mut buf)).await;
        sent.expect("the writer finished").unwrap();
        assert!(writer.room.is_some(), "a write that found the pipe full registered for room");
        drop(write);
        drop(writer);
        assert_eq!(reader.join().unwrap(), data);
    }

    #[tokio::test]
    async fn a_drain_cut_short_keeps_exactly_what_was_not_written() {
        let (read, write) = pipe();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let mut buf = BytesMut::from(&data[..]);
        let mut writer = Writer::default();
        // Nobody reads: the pipe fills and the drain waits; cut it short.
        let cut = tokio::time::timeout(std::time::Duration::from_millis(50), writer.drain(&write, &mut buf)).await;
        assert!(cut.is_err(), "a full pipe makes the drain wait");
        let written = data.len() - buf.len();
        assert!(written > 0 && !buf.is_empty(), "{written} bytes written before the wait");
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut chunk = vec![0u8; 8192];
            loop {
                match rustix::io::read(&read, &mut chunk[..]).unwrap() {
                    0 => return got,
                    count => got.extend_from_slice(&chunk[..count]),
                }
            }
        });
        tokio::time::timeout(std::time::Duration::from_secs(20), writer.drain(&write, &mut buf))
            .await
            .expect("the drain finished")
            .unwrap();
        assert!(buf.is_empty());
        drop(write);
        drop(writer);
        assert_eq!(reader.join().unwrap(), data, "every byte once, in order");
    }

    #[tokio::test]
    async fn writes_that_find_room_need_no_registration_and_forget_it() {
        let (read, write) = pipe();
        let room = register(rustix::io::fcntl_dupfd_cloexec(&write, 0).unwrap(), Interest::WRITABLE).unwrap();
        let mut writer = Writer { room: Some(room), roomy: 0 };
        for _ in 0..ROOMY_WRITES_BEFORE_FORGETTING {
            writer.drain(&write, &mut BytesMut::from(&b"x"[..])).await.unwrap();
        }
        assert!(writer.room.is_none(), "the registration for room was dropped");
        writer.drain(&write, &mut BytesMut::from(&b"y"[..])).await.unwrap();
        assert!(writer.room.is_none(), "a write with room registered nothing");
        let mut buf = [0u8; 64];
        let count = rustix::io::read(&read, &mut buf[..]).unwrap();
        assert_eq!(count, usize::try_from(ROOMY_WRITES_BEFORE_FORGETTING).unwrap() + 1);
    }
}
