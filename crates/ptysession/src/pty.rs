//! The pseudo-terminal: opening a master/slave pair, its window size, and
//! non-blocking reads and writes of the master under tokio.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use bytes::BytesMut;
use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;
use rustix::termios::{self, InputModes, OptionalActions, Winsize};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The size of a terminal window, in character cells.
///
/// ```
/// use ptysession::WindowSize;
///
/// let size = WindowSize::new(24, 80);
/// assert_eq!((size.rows, size.cols), (24, 80));
/// assert_eq!(size, WindowSize::default());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowSize {
    /// Number of rows (lines).
    pub rows: u16,
    /// Number of columns (characters per line).
    pub cols: u16,
}

impl WindowSize {
    /// A window of `rows` × `cols` cells.
    ///
    /// ```
    /// assert_eq!(ptysession::WindowSize::new(50, 132).cols, 132);
    /// ```
    pub const fn new(rows: u16, cols: u16) -> Self {
        Self { rows, cols }
    }
}

impl Default for WindowSize {
    /// The classic 24 × 80 terminal.
    fn default() -> Self {
        Self::new(24, 80)
    }
}

impl From<WindowSize> for Winsize {
    fn from(size: WindowSize) -> Self {
        Winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 }
    }
}

/// A freshly opened pseudo-terminal: the master (already non-blocking) and
/// the slave the child will use as its terminal.
#[derive(Debug)]
pub(crate) struct PtyPair {
    pub(crate) master: OwnedFd,
    pub(crate) slave: OwnedFd,
}

/// Opens a new pseudo-terminal pair with window size `size`, the slave set up
/// for UTF-8 input (`IUTF8`), the master non-blocking. Both are close-on-exec.
pub(crate) fn open(size: WindowSize) -> io::Result<PtyPair> {
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let slave_path = rustix::pty::ptsname(&master, Vec::new())?;
    let slave =
        rustix::fs::open(slave_path.as_c_str(), OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC, Mode::empty())?;
    let mut modes = termios::tcgetattr(&slave)?;
    modes.input_modes |= InputModes::IUTF8;
    termios::tcsetattr(&slave, OptionalActions::Now, &modes)?;
    termios::tcsetwinsize(&master, size.into())?;
    let flags = rustix::fs::fcntl_getfl(&master)?;
    rustix::fs::fcntl_setfl(&master, flags | OFlags::NONBLOCK)?;
    Ok(PtyPair { master, slave })
}

/// Registers a non-blocking master with the tokio reactor of the current
/// runtime.
///
/// # Panics
///
/// Outside a tokio runtime with I/O enabled.
pub(crate) fn register(master: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // Readable only: a standing interest in room to write would wake the
    // reactor each time the program reads its input (see `write_all`).
    register_for(master, Interest::READABLE)
}

/// Registers `fd` with the tokio reactor of the current runtime for
/// `interest`.
fn register_for(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `OwnedFd` owns its descriptor: it stays open, and refers to the
    // same open file description, until the `AsyncFd` that now owns the
    // `OwnedFd` drops it, and `as_raw_fd` always returns that descriptor.
    let registered = unsafe { AsyncFd::register_with_interest(fd, interest) };
    registered.map_err(io::Error::from)
}

/// Sets the window size of the terminal; the kernel sends `SIGWINCH` to the
/// terminal's foreground process group when it changes.
pub(crate) fn set_size(master: &impl AsFd, size: WindowSize) -> io::Result<()> {
    Ok(termios::tcsetwinsize(master, size.into())?)
}

/// The smallest free space a read is given; below it, a new buffer is
/// reserved.
pub(crate) const MIN_READ_BYTES: usize = 4096;
/// The size of a newly reserved read buffer; chunks read into it share it.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// What one read of the master gave.
#[derive(Debug)]
pub(crate) enum ReadOutcome {
    /// Bytes were appended to the buffer.
    Data,
    /// End of output: every slave descriptor is closed (Linux reports this
    /// as `EIO`).
    End,
}

/// Waits until the master is readable and appends what it holds to `buf`.
///
/// # Cancel safety
///
/// Cancel safe: bytes are appended only when the read has happened.
pub(crate) async fn read_into(master: &AsyncFd<OwnedFd>, buf: &mut BytesMut) -> io::Result<ReadOutcome> {
    loop {
        let mut guard = master.readable().await?;
        match guard.try_io(|fd| read_now(fd.get_ref(), buf)) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

/// Whether `buf` has room for another read without growing (growing would
/// copy what it holds).
pub(crate) fn has_read_space(buf: &BytesMut) -> bool {
    buf.capacity() - buf.len() >= MIN_READ_BYTES
}

/// One non-blocking read of the master into the spare capacity of `buf`
/// (reserving a new buffer first when less than [`MIN_READ_BYTES`] is
/// free). `WouldBlock` is returned as an error, as the reactor expects.
pub(crate) fn read_now(master: &OwnedFd, buf: &mut BytesMut) -> io::Result<ReadOutcome> {
    if !has_read_space(buf) {
        buf.reserve(READ_BUFFER_BYTES);
    }
    loop {
        match rustix::io::read(master, buf.spare_capacity_mut()) {
            Ok((filled, _)) => {
                let count = filled.len();
                if count == 0 {
                    return Ok(ReadOutcome::End);
                }
                // SAFETY: the kernel has just initialised the first `count`
                // bytes of the spare capacity (`filled` is exactly them), so
                // the first `len + count` bytes of `buf` are initialised.
                unsafe { buf.set_len(buf.len() + count) };
                return Ok(ReadOutcome::Data);
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::IO) => return Ok(ReadOutcome::End),
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// Writes all of `data` to the master, waiting for room as needed.
///
/// The master is registered for reading only. Input nearly always fits at
/// once; only when the terminal's input queue is full is a copy of the
/// descriptor registered for writing, for as long as this call waits.
/// (A standing interest in writing would wake the runtime each time the
/// program takes its input, on the way of every keystroke's echo.)
///
/// # Cancel safety
///
/// Not cancel safe: a dropped future may have written a prefix of `data`.
pub(crate) async fn write_all(master: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    let mut room: Option<AsyncFd<OwnedFd>> = None;
    while !data.is_empty() {
        let Some(waiter) = &room else {
            match write_now(master.get_ref(), data) {
                Ok(count) => data = &data[count..],
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    // Registered after the refusal: if room came meanwhile,
                    // the registration reports it at once.
                    let copy = rustix::io::fcntl_dupfd_cloexec(master.get_ref(), 0)?;
                    room = Some(register_for(copy, Interest::WRITABLE)?);
                }
                Err(err) => return Err(err),
            }
            continue;
        };
        let mut guard = waiter.writable().await?;
        match guard.try_io(|fd| write_now(fd.get_ref(), data)) {
            Ok(result) => data = &data[result?..],
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

/// One non-blocking write of `data` to the master; `WouldBlock` when the
/// terminal's input queue is full.
pub(crate) fn write_now(master: &OwnedFd, data: &[u8]) -> io::Result<usize> {
    loop {
        match rustix::io::write(master, data) {
            Err(rustix::io::Errno::INTR) => continue,
            result => return result.map_err(io::Error::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn master_reads_what_the_slave_writes_then_ends_when_it_closes() {
        let pair = open(WindowSize::new(30, 100)).unwrap();
        assert_eq!(termios::tcgetwinsize(&pair.slave).unwrap().ws_col, 100);
        // Raw output so that the bytes arrive unchanged.
        let mut modes = termios::tcgetattr(&pair.slave).unwrap();
        modes.make_raw();
        termios::tcsetattr(&pair.slave, OptionalActions::Now, &modes).unwrap();
        let master = register(pair.master).unwrap();
        rustix::io::write(&pair.slave, b"hello\xe2\x82\xac").unwrap();
        let mut buf = BytesMut::new();
        while buf.len() < 8 {
            let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), read_into(&master, &mut buf));
            assert!(matches!(outcome.await.unwrap().unwrap(), ReadOutcome::Data));
        }
        assert_eq!(&buf[..], b"hello\xe2\x82\xac");
        drop(pair.slave);
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), read_into(&master, &mut buf));
        assert!(matches!(outcome.await.unwrap().unwrap(), ReadOutcome::End));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_that_finds_the_terminal_full_waits_for_room_and_loses_nothing() {
        let pair = open(WindowSize::default()).unwrap();
        let mut modes = termios::tcgetattr(&pair.slave).unwrap();
        modes.make_raw();
        termios::tcsetattr(&pair.slave, OptionalActions::Now, &modes).unwrap();
        let master = std::sync::Arc::new(register(pair.master).unwrap());
        // Far more than the terminal's input queue holds: the write must
        // wait for the reader below, several times.
        let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
        let writer = tokio::spawn({
            let (master, data) = (master.clone(), data.clone());
            async move { write_all(&master, &data).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!writer.is_finished(), "the terminal took everything without a reader");
        let slave = pair.slave;
        let reader = tokio::task::spawn_blocking(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 8192];
            while got.len() < 256 * 1024 {
                let read = rustix::io::read(&slave, &mut buf).unwrap();
                got.extend_from_slice(&buf[..read]);
            }
            got
        });
        let within = std::time::Duration::from_secs(10);
        tokio::time::timeout(within, writer).await.expect("the write waited for ever").unwrap().unwrap();
        let got = tokio::time::timeout(within, reader).await.unwrap().unwrap();
        assert!(got == data, "bytes lost or reordered");
    }

    #[tokio::test]
    async fn writes_to_the_master_reach_the_slave() {
        let pair = open(WindowSize::default()).unwrap();
        let mut modes = termios::tcgetattr(&pair.slave).unwrap();
        modes.make_raw();
        termios::tcsetattr(&pair.slave, OptionalActions::Now, &modes).unwrap();
        let master = register(pair.master).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), write_all(&master, b"\x00\xff\x03"))
            .await
            .unwrap()
            .unwrap();
        let mut got = [0u8; 3];
        let read = rustix::io::read(&pair.slave, &mut got).unwrap();
        assert_eq!(&got[..read], b"\x00\xff\x03");
        set_size(&master, WindowSize::new(10, 20)).unwrap();
        assert_eq!(termios::tcgetwinsize(&pair.slave).unwrap().ws_row, 10);
    }
}
