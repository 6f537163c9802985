//! Who waits for what: the wakers of the application's reader and writer
//! and of the driver, which of them a transport's readiness goes to, and
//! the readiness wakes left to the application that the driver takes over
//! when they are not claimed in time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

/// How long the driver leaves a transport's readiness to the application
/// task it woke before doing the I/O itself.
pub(super) const CLAIM_DELAY: Duration = Duration::from_millis(5);

/// Who waits for what. Its lock is a leaf: nothing is called under it.
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
    pub(super) fn lock(&self) -> MutexGuard<'_, Slots> {
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

    pub(super) fn register_writer(&self, waker: &Waker, needs_acks: bool, reads: bool) {
        let mut slots = self.lock();
        slots.unclaimed_write = None;
        slots.writer_needs_acks = needs_acks;
        slots.writer_reads = reads;
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

    pub(super) fn wake(&self, reader: bool, writer: bool, driver: bool) {
        let wakers = {
            let mut slots = self.lock();
            let wakers = [
                if reader { slots.reader.take() } else { None },
                if writer { slots.writer.take() } else { None },
                if driver { slots.driver.take() } else { None },
            ];
            slots.driver_woken |= wakers[2].is_some();
            wakers
        };
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }

    /// Transport readiness in one direction.
    fn ready(&self, read: bool) {
        let (app, driver) = {
            let mut slots = self.lock();
            let mut app = if read { slots.reader.take() } else { slots.writer.take() };
            let mut wake_driver = app.is_none();
            if read && app.is_none() {
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
                if slots.writer_needs_acks || (slots.writer_reads && !reader_busy) {
                    app = slots.writer.take();
                }
                if app.is_some() || reader_busy {
                    wake_driver = self.leave_to_app(&mut slots, true);
                }
            } else if app.is_some() || (!read && slots.writer_reads && slots.reader.is_none() && self.writer_busy()) {
                // A writer between two writes sends what waits on its next
                // one; but while a read waits (perhaps for the answer to
                // what was written), the driver sends it at once.
                wake_driver = self.leave_to_app(&mut slots, read);
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
    fn leave_to_app(&self, slots: &mut Slots, read: bool) -> bool {
        let unclaimed = if read { &mut slots.unclaimed_read } else { &mut slots.unclaimed_write };
        if unclaimed.is_none() {
            *unclaimed = Some(self.nanos());
        }
        slots.claim_activity = true;
        !std::mem::replace(&mut slots.claim_armed, true)
    }

    /// Notes that an application read returned now.
    pub(super) fn reading(&self) {
        self.last_read_nanos.store(self.nanos(), Ordering::Relaxed);
    }

    pub(super) fn nanos(&self) -> u64 {
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
pub(super) struct Slots {
    reader: Option<Waker>,
    writer: Option<Waker>,
    driver: Option<Waker>,
    /// A readiness wake went to the reader, which has not polled since
    /// (when the first such wake came, in [`Hub::nanos`]).
    pub(super) unclaimed_read: Option<u64>,
    /// A readiness wake went to the writer, which has not polled since.
    pub(super) unclaimed_write: Option<u64>,
    /// The driver looks at the unclaimed wakes again by itself (its timer
    /// is set, or it is about to run): wakes left to the application need
    /// not wake it.
    pub(super) claim_armed: bool,
    /// A wake was left to the application since the driver last looked:
    /// while the stream is this busy, the driver keeps looking every
    /// [`CLAIM_DELAY`] instead of being woken for every wake.
    pub(super) claim_activity: bool,
    /// The waiting writer needs acknowledgements (the send buffer is full,
    /// or a shutdown waits for its end of stream to be acknowledged), not
    /// only a writable transport.
    writer_needs_acks: bool,
    /// The writer's last call was a write (not a flush or shutdown), which
    /// reads what has arrived before it returns.
    writer_reads: bool,
    /// The driver has been woken and has not run since (nor ended).
    pub(super) driver_woken: bool,
}

fn set_waker(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(existing) if existing.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

/// The waker handed to transports: readiness goes through the hub.
pub(super) struct Readiness {
    hub: Arc<Hub>,
    read: bool,
}

impl Readiness {
    /// A waker that reports readiness in one direction to `hub`.
    pub(super) fn waker(hub: &Arc<Hub>, read: bool) -> Waker {
        Waker::from(Arc::new(Readiness { hub: Arc::clone(hub), read }))
    }
}

impl Wake for Readiness {
    fn wake(self: Arc<Self>) {
        self.hub.ready(self.read);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.hub.ready(self.read);
    }
}
