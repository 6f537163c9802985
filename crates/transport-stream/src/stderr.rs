//! The task that drains the child's stderr: it forwards every byte to the
//! caller's writer, if any, and keeps the last bytes for error reports.

use std::sync::{Arc, Mutex, PoisonError};

use seqring::Ring;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

use crate::options::StderrWriter;

/// The captured tail of the child's stderr.
#[derive(Debug)]
pub(crate) struct Capture {
    ring: Mutex<Ring>,
}

impl Capture {
    pub(crate) fn new(bytes: usize) -> Arc<Self> {
        Arc::new(Self { ring: Mutex::new(Ring::with_capacity(bytes)) })
    }

    /// A copy of what is captured.
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner).to_vec()
    }

    fn append(&self, bytes: &[u8]) {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner).write(bytes);
    }
}

/// Starts draining `stderr` until its end: forwarding to `forward` (which
/// is dropped at the first write error) and appending to `capture`.
pub(crate) fn spawn_drain(
    mut stderr: pipe::Receiver,
    mut forward: Option<StderrWriter>,
    capture: Arc<Capture>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0; 16 << 10];
        loop {
            let count = match stderr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(count) => count,
            };
            capture.append(&buf[..count]);
            if let Some(writer) = &mut forward
                && writer.write_all(&buf[..count]).await.is_err()
            {
                forward = None;
            }
        }
        if let Some(writer) = &mut forward {
            let _ = writer.flush().await;
        }
    })
}
