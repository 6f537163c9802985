//! Who waits for what: the wakers of the application's reader and writer
//! and of the driver, which of them a transport's readiness goes to, and
//! the readiness wakes left to the application that the driver takes over
//! when they are not claimed in time.
//!
//! Readiness of a transport wakes the application task that waits for it,
//! or the driver when none does. Work that arrives while an application
//! task is between two calls is left to its next call: incoming bytes to
//! a reader between two reads; acknowledgements, and room in the
//! transport, to a writer between two writes (a writer waiting in a write
//! is woken for incoming bytes, as a write reads what has arrived). Waking
//! the driver for them would put a second task in the runtime's queue,
//! which the other worker thread steals: the stream's tasks then bounce
//! between cores. If the application does not come back for the I/O
//! within [`CLAIM_DELAY`] (its read or write future was dropped, or it
//! stopped reading or writing), the driver does the I/O itself, so a
//! cancelled read never stalls acknowledgements. While the stream is busy,
//! the driver checks on this from its timer every [`CLAIM_DELAY`] instead
//! of being woken by each readiness event.
//!
//! The hub's lock is the innermost of the shell's (see `state`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use super::state::Party;

/// How long the driver leaves a transport's readiness to the application
/// task it woke before doing the I/O itself.
const CLAIM_DELAY: Duration = Duration::from_millis(5);

/// Who waits for what; see the module documentation.
pub(super) struct Hub {
    epoch: Instant,
    /// When an application read last returned, in nanoseconds after `epoch`.
    last_read_nanos: AtomicU64,
    /// When an application write last returned.
    last_write_nanos: AtomicU64,
    slots: Mutex<Slots>,
    /// The current transport became readable while no application read
    /// waited: a writer that holds the state anyway reads the
    /// acknowledgements itself rather than wait for the driver to get in.
    pub(super) read_ready: AtomicBool,
    /// Notified when a closed pipe has let go of its last connection.
    pub(super) drained: tokio::sync::Notify,
    /// Notified when acknowledgements arrive or the pipe ends.
    pub(super) acked: tokio::sync::Notify,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn register_reader(&self, waker: &Waker) {
        let mut slots = self.lock();
        slots.unclaimed_read = None;
        set_waker(&mut slots.reader, waker);
    }

    pub(super) fn clear_reader(&self) {
        self.lock().reader = None;
    }

    /// The application's writer waits in `call`.
    pub(super) fn register_writer(&self, waker: &Waker, call: WriterCall) {
        let mut slots = self.lock();
        slots.unclaimed_write = None;
        slots.writer_call = Some(call);
        set_waker(&mut slots.writer, waker);
    }

    pub(super) fn clear_writer(&self) {
        self.lock().writer = None;
    }

    pub(super) fn register_driver(&self, waker: &Waker) {
        let mut slots = self.lock();
        slots.driver_woken = false;
        set_waker(&mut slots.driver, waker);
    }

    /// Whether the driver has been woken and has not run since.
    pub(super) fn driver_woken(&self) -> bool {
        self.lock().driver_woken
    }

    pub(super) fn reader_waiting(&self) -> bool {
        self.lock().reader.is_some()
    }

    /// Wakes the driver (to reconnect, to read again, to send what was
    /// queued).
    pub(super) fn wake_driver(&self) {
        self.wake(Wakes::DRIVER);
    }

    /// Wakes whoever of `wakes` waits.
    pub(super) fn wake(&self, wakes: Wakes) {
        let wakers = {
            let mut slots = self.lock();
            let wakers = [
                if wakes.reader { slots.reader.take() } else { None },
                if wakes.writer { slots.writer.take() } else { None },
                if wakes.driver { slots.driver.take() } else { None },
            ];
            slots.driver_woken |= wakers[2].is_some();
            wakers
        };
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }

    /// Transport readiness in one direction.
    fn ready(&self, direction: Direction) {
        let (app, driver) = {
            let mut slots = self.lock();
            let mut app = match direction {
                Direction::Read => slots.reader.take(),
                Direction::Write => slots.writer.take(),
            };
            let mut wake_driver = app.is_none();
            let writer_call = slots.writer_call;
            let writer_reads = writer_call.is_some_and(WriterCall::reads);
            if direction == Direction::Read && app.is_none() {
                // No read waits: acknowledgements, pings or data nobody
                // asked for yet. A writer that waits for acknowledgements
                // is woken for them; a reader between two reads takes them
                // in on its next call; so does a writer between two writes,
                // and a writer waiting in a write is woken for them (its
                // write reads what arrived before it returns, so a broken
                // connection is found at once). Waking the driver for them
                // would only move the work to another thread. Otherwise,
                // the driver reads them. If the application does not come
                // back within the claim delay, the driver reads them too.
                self.read_ready.store(true, Ordering::Release);
                let reader_busy = self.reader_busy();
                if writer_call.is_some_and(WriterCall::needs_acks) || (writer_reads && !reader_busy) {
                    app = slots.writer.take();
                }
                if app.is_some() || reader_busy {
                    wake_driver = self.leave_to_app(&mut slots, Direction::Read);
                }
            } else if app.is_some()
                || (direction == Direction::Write && writer_reads && slots.reader.is_none() && self.writer_busy())
            {
                // A writer between two writes sends what waits on its next
                // one; but while a read waits (perhaps for the answer to
                // what was written), the driver sends it at once.
                wake_driver = self.leave_to_app(&mut slots, direction);
            }
            let driver = if wake_driver { slots.driver.take() } else { None };
            slots.driver_woken |= driver.is_some();
            (app, driver)
        };
        if let Some(waker) = app {
            waker.wake();
        }
        if let Some(waker) = driver {
            waker.wake();
        }
    }

    /// Notes a readiness wake left to the application; whether the driver
    /// must be woken to watch that it is claimed.
    fn leave_to_app(&self, slots: &mut Slots, direction: Direction) -> bool {
        let unclaimed = match direction {
            Direction::Read => &mut slots.unclaimed_read,
            Direction::Write => &mut slots.unclaimed_write,
        };
        if unclaimed.is_none() {
            *unclaimed = Some(self.nanos());
        }
        slots.claim_activity = true;
        !std::mem::replace(&mut slots.claim_armed, true)
    }

    /// Notes that the application takes in what the current transport has
    /// to read: a wake left to the reader is claimed.
    pub(super) fn claim_read(&self) {
        self.lock().unclaimed_read = None;
    }

    /// Tracks readiness wakes the application has not claimed, for the
    /// driver, whose watch runs until `watch_until`.
    ///
    /// A wake is claimed when the task it went to polls again; one left
    /// unclaimed for [`CLAIM_DELAY`] is taken over. While wakes keep being
    /// left to the application, the driver stays armed and looks again
    /// every [`CLAIM_DELAY`] on its timer, so a busy stream does not wake
    /// it for every readiness event.
    pub(super) fn check_claims(&self, now: Instant, watch_until: Option<Instant>) -> Claims {
        let mut slots = self.lock();
        let nanos = self.nanos();
        let delay = CLAIM_DELAY.as_nanos() as u64;
        let overdue = |since: Option<u64>| since.is_some_and(|at| nanos.saturating_sub(at) >= delay);
        let mut take_over_read = false;
        if overdue(slots.unclaimed_read) || overdue(slots.unclaimed_write) {
            take_over_read = slots.unclaimed_read.is_some() || self.read_ready.load(Ordering::Acquire);
            slots.unclaimed_read = None;
            slots.unclaimed_write = None;
        }
        let oldest = [slots.unclaimed_read, slots.unclaimed_write].into_iter().flatten().min();
        let watch_until = if let Some(at) = oldest {
            Some(now + Duration::from_nanos((at + delay).saturating_sub(nanos)))
        } else if slots.claim_activity {
            Some(now + CLAIM_DELAY)
        } else {
            // Keep an armed watch until it expires, then stop watching: the
            // next wake left to the application wakes the driver again.
            watch_until.filter(|&at| at > now)
        };
        slots.claim_activity = false;
        slots.claim_armed = watch_until.is_some();
        Claims { take_over_read, watch_until }
    }

    /// Notes that the driver has ended: nobody is woken for it any more.
    pub(super) fn driver_ended(&self) {
        self.lock().driver_woken = false;
    }

    /// Notes that an application read returned now.
    pub(super) fn reading(&self) {
        self.last_read_nanos.store(self.nanos(), Ordering::Relaxed);
    }

    fn nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
    }

    /// Whether an application read returned within the last
    /// [`CLAIM_DELAY`].
    pub(super) fn reader_busy(&self) -> bool {
        self.recent(&self.last_read_nanos)
    }

    /// Notes that an application write returned now.
    pub(super) fn writing(&self) {
        self.last_write_nanos.store(self.nanos(), Ordering::Relaxed);
    }

    /// Whether an application write returned within the last
    /// [`CLAIM_DELAY`].
    fn writer_busy(&self) -> bool {
        self.recent(&self.last_write_nanos)
    }

    fn recent(&self, at: &AtomicU64) -> bool {
        let last = at.load(Ordering::Relaxed);
        last != 0 && self.nanos().saturating_sub(last) < CLAIM_DELAY.as_nanos() as u64
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            epoch: Instant::now(),
            last_read_nanos: AtomicU64::new(0),
            last_write_nanos: AtomicU64::new(0),
            slots: Mutex::default(),
            read_ready: AtomicBool::new(false),
            drained: tokio::sync::Notify::new(),
            acked: tokio::sync::Notify::new(),
        }
    }
}

/// Who waits, and what is left to whom: the hub's state, behind its lock.
#[derive(Default)]
struct Slots {
    reader: Option<Waker>,
    writer: Option<Waker>,
    driver: Option<Waker>,
    /// A readiness wake went to the reader, which has not polled since
    /// (when the first such wake came, in [`Hub::nanos`]).
    unclaimed_read: Option<u64>,
    /// A readiness wake went to the writer, which has not polled since.
    unclaimed_write: Option<u64>,
    /// The driver looks at the unclaimed wakes again by itself (its timer
    /// is set, or it is about to run): wakes left to the application need
    /// not wake it.
    claim_armed: bool,
    /// A wake was left to the application since the driver last looked:
    /// while the stream is this busy, the driver keeps looking every
    /// [`CLAIM_DELAY`] instead of being woken for every wake.
    claim_activity: bool,
    /// What the writer's last call waits for, once it has made one.
    writer_call: Option<WriterCall>,
    /// The driver has been woken and has not run since (nor ended).
    driver_woken: bool,
}

fn set_waker(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(existing) if existing.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

/// What [`Hub::check_claims`] found.
pub(super) struct Claims {
    /// The driver reads the current connection itself: a wake left to the
    /// application went unclaimed.
    pub(super) take_over_read: bool,
    /// When the driver looks at the claims again, if it watches them.
    pub(super) watch_until: Option<Instant>,
}

/// Which of the pipe's parties to wake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Wakes {
    /// The application's reader.
    pub(super) reader: bool,
    /// The application's writer.
    pub(super) writer: bool,
    /// The driver.
    pub(super) driver: bool,
}

impl Wakes {
    /// Everyone.
    pub(super) const ALL: Wakes = Wakes { reader: true, writer: true, driver: true };
    /// The driver alone.
    const DRIVER: Wakes = Wakes { reader: false, writer: false, driver: true };

    /// These wakes without the one of `party`, who is running anyway.
    pub(super) fn except(self, party: Party) -> Wakes {
        Wakes {
            reader: self.reader && party != Party::Reader,
            writer: self.writer && party != Party::Writer,
            driver: self.driver && party != Party::Driver,
        }
    }

    /// Whether anyone is to be woken.
    pub(super) fn any(self) -> bool {
        self.reader || self.writer || self.driver
    }
}

/// What the application's writer waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WriterCall {
    /// A write, with room in the send buffer: it waits for the transport,
    /// and reads what has arrived before it returns.
    Write,
    /// A write into a full send buffer: it waits for acknowledgements, and
    /// reads them itself.
    WriteAwaitingAcks,
    /// A flush: it waits for the transport.
    Flush,
    /// A shutdown: it waits for its end of stream to be acknowledged.
    Shutdown,
}

impl WriterCall {
    /// Whether the call waits for acknowledgements, not only for a
    /// writable transport.
    fn needs_acks(self) -> bool {
        matches!(self, WriterCall::WriteAwaitingAcks | WriterCall::Shutdown)
    }

    /// Whether the call reads what has arrived before it returns.
    fn reads(self) -> bool {
        matches!(self, WriterCall::Write | WriterCall::WriteAwaitingAcks)
    }
}

/// A direction of a transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Read,
    Write,
}

/// The waker handed to transports: readiness goes through the hub.
pub(super) struct Readiness {
    hub: Arc<Hub>,
    direction: Direction,
}

impl Readiness {
    /// The waker a transport's read half wakes when it is readable.
    pub(super) fn read_waker(hub: &Arc<Hub>) -> Waker {
        Waker::from(Arc::new(Readiness { hub: Arc::clone(hub), direction: Direction::Read }))
    }

    /// The waker a transport's write half wakes when it is writable.
    pub(super) fn write_waker(hub: &Arc<Hub>) -> Waker {
        Waker::from(Arc::new(Readiness { hub: Arc::clone(hub), direction: Direction::Write }))
    }
}

impl Wake for Readiness {
    fn wake(self: Arc<Self>) {
        self.hub.ready(self.direction);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.hub.ready(self.direction);
    }
}
