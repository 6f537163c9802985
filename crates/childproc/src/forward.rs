//! Signal forwarding: one process-wide signal-hook delivery thread relays
//! each chosen signal this process receives to every subscribed run.

use std::sync::{Mutex, MutexGuard, PoisonError, Weak};

use signal_hook::iterator::{Handle as SignalsHandle, Signals};

use crate::run::Run;
use crate::{Error, Signal};

/// Signals that are never forwarded: uncatchable ones, `SIGCHLD` (about our
/// own children), and those the kernel raises synchronously in a faulting
/// thread, which a handler must not swallow.
const REFUSED: [Signal; 12] = [
    Signal::KILL,
    Signal::STOP,
    Signal::CHILD,
    Signal::ILL,
    Signal::TRAP,
    Signal::ABORT,
    Signal::BUS,
    Signal::FPE,
    Signal::SEGV,
    Signal::SYS,
    Signal::PIPE,
    Signal::XFSZ,
];

/// The delivery thread's handle and the runs listening.
struct Forwarder {
    handle: SignalsHandle,
    subscribers: Vec<Subscriber>,
    next_id: u64,
}

struct Subscriber {
    id: u64,
    signals: Vec<Signal>,
    run: Weak<Run>,
}

impl Subscriber {
    fn is_live(&self) -> bool {
        self.run.upgrade().is_some_and(|run| run.outcome().is_none())
    }
}

/// Created with the first subscription; lives as long as the process.
static FORWARDER: Mutex<Option<Forwarder>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<Forwarder>> {
    FORWARDER.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Fails for a signal that must not be forwarded.
pub(crate) fn check(signals: &[Signal]) -> Result<(), Error> {
    match signals.iter().find(|signal| REFUSED.contains(signal)) {
        Some(signal) => Err(Error::UnforwardableSignal { signal: signal.as_raw() }),
        None => Ok(()),
    }
}

/// Installs handlers for `signals` (before the child is spawned, so that no
/// signal arriving right after the spawn is lost) and relays them to `run`
/// until it ends. Returns the subscription's id, `None` for no signals.
pub(crate) fn subscribe(signals: &[Signal], run: Weak<Run>) -> Result<Option<u64>, Error> {
    if signals.is_empty() {
        return Ok(None);
    }
    check(signals)?;
    let mut forwarder = lock();
    if forwarder.is_none() {
        *forwarder = Some(start()?);
    }
    let Some(forwarder) = forwarder.as_mut() else {
        return Ok(None);
    };
    for signal in signals {
        forwarder
            .handle
            .add_signal(signal.as_raw())
            .map_err(|err| Error::io("cannot install a handler for a forwarded signal", err))?;
    }
    forwarder.subscribers.retain(Subscriber::is_live);
    let id = forwarder.next_id;
    forwarder.next_id += 1;
    forwarder.subscribers.push(Subscriber { id, signals: signals.to_vec(), run });
    Ok(Some(id))
}

/// Removes a subscription (its start failed).
pub(crate) fn unsubscribe(id: u64) {
    if let Some(forwarder) = lock().as_mut() {
        forwarder.subscribers.retain(|subscriber| subscriber.id != id);
    }
}

/// Starts the delivery thread.
fn start() -> Result<Forwarder, Error> {
    let mut signals = Signals::new(std::iter::empty::<i32>())
        .map_err(|err| Error::io("cannot create the signal delivery pipe", err))?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("childproc-signals".into())
        .spawn(move || {
            for raw in signals.forever() {
                dispatch(raw);
            }
        })
        .map_err(|err| Error::io("cannot start the signal forwarding thread", err))?;
    Ok(Forwarder { handle, subscribers: Vec::new(), next_id: 0 })
}

/// Relays one received signal to every live run subscribed to it.
fn dispatch(raw: i32) {
    let targets: Vec<(Signal, std::sync::Arc<Run>)> = {
        let mut forwarder = lock();
        let Some(forwarder) = forwarder.as_mut() else { return };
        forwarder.subscribers.retain(Subscriber::is_live);
        forwarder
            .subscribers
            .iter()
            .filter_map(|subscriber| {
                let signal = *subscriber.signals.iter().find(|signal| signal.as_raw() == raw)?;
                Some((signal, subscriber.run.upgrade()?))
            })
            .collect()
    };
    for (signal, run) in targets {
        run.forward(signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synchronous_and_child_signals_are_refused() {
        for signal in REFUSED {
            assert!(matches!(
                check(&[Signal::HUP, signal]),
                Err(Error::UnforwardableSignal { signal: raw }) if raw == signal.as_raw()
            ));
        }
        assert!(check(&[Signal::INT, Signal::TERM, Signal::HUP, Signal::USR1, Signal::USR2, Signal::WINCH]).is_ok());
    }
}
