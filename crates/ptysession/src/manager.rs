//! [`SessionManager`]: sessions keyed by id, with a cap, for servers.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tracing::Instrument;

use crate::{Attachment, Error, Options, Session, SessionInfo, State, WindowSize};

/// Sessions keyed by id, at most `max_sessions` at once. A session leaves
/// the manager by itself when it is done (closed, timed out, or its command
/// exited and the linger time passed); looking it up then is
/// [`Error::NotFound`], never a new process.
///
/// Cheap to clone: clones share the same sessions.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ptysession::Error> {
/// use std::process::Command;
/// use ptysession::{Error, Options, SessionManager};
///
/// let manager = SessionManager::new(8);
/// manager.spawn("build", Command::new("sh"), Options::new())?;
/// assert!(matches!(
///     manager.spawn("build", Command::new("sh"), Options::new()),
///     Err(Error::AlreadyExists { .. })
/// ));
/// assert_eq!(manager.list()[0].0, "build");
/// let attachment = manager.attach("build", None)?;
/// drop(attachment);
/// manager.close("build").await?;
/// assert!(matches!(manager.attach("build", None), Err(Error::NotFound { .. })));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SessionManager {
    shared: Arc<ManagerShared>,
}

#[derive(Debug)]
struct ManagerShared {
    max_sessions: usize,
    sessions: Mutex<BTreeMap<String, Session>>,
}

impl ManagerShared {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SessionManager {
    /// A manager holding at most `max_sessions` sessions.
    pub fn new(max_sessions: usize) -> Self {
        Self { shared: Arc::new(ManagerShared { max_sessions, sessions: Mutex::new(BTreeMap::new()) }) }
    }

    /// The most sessions this manager holds at once.
    pub fn max_sessions(&self) -> usize {
        self.shared.max_sessions
    }

    /// Starts `command` as session `id`; see [`Session::spawn`].
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyExists`] if a session named `id` is not done yet,
    /// [`Error::TooManySessions`] at the cap, or an error of
    /// [`Session::spawn`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn(&self, id: impl Into<String>, command: Command, options: Options) -> Result<Session, Error> {
        let id = id.into();
        let mut sessions = self.shared.lock();
        sessions.retain(|_, session| session.state() != State::Done);
        if sessions.contains_key(&id) {
            return Err(Error::AlreadyExists { id });
        }
        if sessions.len() >= self.shared.max_sessions {
            return Err(Error::TooManySessions { limit: self.shared.max_sessions });
        }
        let session = Session::spawn_named(command, options, Some(&id))?;
        sessions.insert(id, session.clone());
        drop(sessions);
        let span = session.span();
        tokio::spawn(remove_when_done(Arc::downgrade(&self.shared), session.clone()).instrument(span));
        Ok(session)
    }

    /// The session named `id`, unless it is done.
    pub fn get(&self, id: &str) -> Option<Session> {
        self.shared.lock().get(id).filter(|session| session.state() != State::Done).cloned()
    }

    /// Attaches a client to session `id`; see [`Session::attach`].
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if there is no such session or it is closing or
    /// done, or an error of [`Session::attach`].
    pub fn attach(&self, id: &str, size: Option<WindowSize>) -> Result<Attachment, Error> {
        let not_found = || Error::NotFound { id: id.to_owned() };
        let session = self.get(id).ok_or_else(not_found)?;
        session.attach(size).map_err(|err| match err {
            Error::Closed => not_found(),
            err => err,
        })
    }

    /// Every session that is not done, by id, with a snapshot of each.
    pub fn list(&self) -> Vec<(String, SessionInfo)> {
        let sessions = self.shared.lock();
        sessions
            .iter()
            .map(|(id, session)| (id.clone(), session.info()))
            .filter(|(_, info)| info.state != State::Done)
            .collect()
    }

    /// The number of sessions that are not done.
    pub fn len(&self) -> usize {
        self.shared.lock().values().filter(|session| session.state() != State::Done).count()
    }

    /// Whether the manager holds no session that is not done.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes session `id` and waits until it is done; see
    /// [`Session::close`].
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if there is no such session.
    ///
    /// # Cancel safety
    ///
    /// As [`Session::close`]: the close goes on if the future is dropped.
    pub async fn close(&self, id: &str) -> Result<(), Error> {
        let session = self.get(id).ok_or_else(|| Error::NotFound { id: id.to_owned() })?;
        session.close().await;
        self.remove(id, &session);
        Ok(())
    }

    /// Closes every session and waits until all are done.
    ///
    /// # Cancel safety
    ///
    /// Every close is requested before the first wait; dropping the future
    /// stops only the waiting.
    pub async fn close_all(&self) {
        let sessions: Vec<(String, Session)> =
            self.shared.lock().iter().map(|(id, session)| (id.clone(), session.clone())).collect();
        for (_, session) in &sessions {
            session.request_close();
        }
        for (id, session) in sessions {
            session.close().await;
            self.remove(&id, &session);
        }
    }

    /// Gives session `from` the id `to`; the session, its clients and its
    /// process are untouched.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), ptysession::Error> {
    /// use std::process::Command;
    /// use ptysession::{Options, SessionManager};
    ///
    /// let manager = SessionManager::new(8);
    /// manager.spawn("build", Command::new("sh"), Options::new())?;
    /// manager.rename("build", "release")?;
    /// assert!(manager.get("build").is_none());
    /// manager.close("release").await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if there is no session `from` (or it is done),
    /// [`Error::AlreadyExists`] if a session `to` is not done yet.
    pub fn rename(&self, from: &str, to: impl Into<String>) -> Result<(), Error> {
        let to = to.into();
        let mut sessions = self.shared.lock();
        sessions.retain(|_, session| session.state() != State::Done);
        if !sessions.contains_key(from) {
            return Err(Error::NotFound { id: from.to_owned() });
        }
        if from == to {
            return Ok(());
        }
        if sessions.contains_key(&to) {
            return Err(Error::AlreadyExists { id: to });
        }
        if let Some(session) = sessions.remove(from) {
            sessions.insert(to, session);
        }
        Ok(())
    }

    fn remove(&self, id: &str, session: &Session) {
        let mut sessions = self.shared.lock();
        if sessions.get(id).is_some_and(|held| held.same(session)) {
            sessions.remove(id);
        } else {
            // Renamed meanwhile.
            sessions.retain(|_, held| !held.same(session));
        }
    }
}

/// Drops a session from its manager once it is done (if the manager and the
/// entry still exist), under whatever id it has by then.
async fn remove_when_done(manager: Weak<ManagerShared>, session: Session) {
    let mut state = session.watch_state();
    let _ = state.wait_for(|state| *state == State::Done).await;
    if let Some(manager) = manager.upgrade() {
        manager.lock().retain(|_, held| !held.same(&session));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::Duration;

    use super::*;

    /// A log the test reads back.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Log {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_lines_of_each_session_carry_its_id_and_pid() {
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish();
        // A current-thread runtime inside: every task logs on this thread.
        let pids = tracing::subscriber::with_default(subscriber, || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                let manager = SessionManager::new(4);
                let options = || Options::new().linger(Duration::ZERO);
                let mut pids = Vec::new();
                for (id, script) in [("alpha", "exit 3"), ("beta", "exit 4")] {
                    let mut command = Command::new("sh");
                    command.args(["-c", script]);
                    let session = manager.spawn(id, command, options()).expect("spawn");
                    pids.push((id, session.pid()));
                    let status = tokio::time::timeout(Duration::from_secs(10), session.wait()).await;
                    assert!(status.expect("the command's exit within 10 s").is_some());
                    tokio::time::timeout(Duration::from_secs(10), session.close()).await.expect("closed within 10 s");
                }
                pids
            })
        });

        let bytes = log.0.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        for (id, pid) in pids {
            let session = format!("session{{id={id} pid={pid}}}");
            for message in ["session started", "command exited", "session closing", "session done"] {
                assert!(
                    lines.iter().any(|line| line.contains(&session) && line.contains(message)),
                    "no {message:?} line in {session}: {lines:#?}"
                );
            }
            // childproc's lines about the command sit inside the session's.
            let child = format!("{session}:child{{pid={pid} program=sh}}");
            assert!(
                lines.iter().any(|line| line.contains(&child) && line.contains("child reaped")),
                "no reaping line in {child}: {lines:#?}"
            );
        }
        assert!(lines.iter().all(|line| line.contains("session{id=")), "a line outside a session: {lines:#?}");
    }
}
