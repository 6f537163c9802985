//! One proxied connection: connecting upstream, forwarding both directions
//! through delay queues, and ending by completion, error, cut or shutdown.

use std::future::pending;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{ConnCtl, CutStyle, Registration, Shared};

/// Size of one read, and of the largest chunk queued.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks queued per direction: at most 4 MiB waiting for delivery.
const QUEUE_CHUNKS: usize = 64;

/// How forwarding stopped.
enum Outcome {
    /// Both directions reached end of stream and passed it on.
    Finished,
    /// A read or write failed.
    Failed,
    /// The proxy ended the connection.
    Ended,
}

/// Closes a socket in the given style. Errors are ignored: the socket is
/// going away either way.
pub(crate) fn close(style: CutStyle, socket: TcpStream) {
    if style == CutStyle::Reset {
        let _ = socket.set_zero_linger();
    }
    drop(socket);
}

/// Runs one connection from accept to close.
pub(crate) async fn run(shared: Arc<Shared>, client: TcpStream, ctl: Arc<ConnCtl>, _registration: Registration) {
    // A time limit runs from the accept, so it can expire while connecting.
    let mut connecting = pin!(TcpStream::connect(shared.upstream));
    let connected = loop {
        if ctl.ended().is_some() {
            close(shared.style(), client);
            return;
        }
        tokio::select! {
            connected = &mut connecting => break connected,
            () = ctl.wake.notified() => {}
            () = sleep_until(ctl.deadline()) => {
                shared.cut(&ctl);
            }
        }
    };
    let Ok(mut upstream) = connected else {
        shared.counters.refused.fetch_add(1, Ordering::Relaxed);
        close(CutStyle::Reset, client);
        return;
    };
    let mut client = client;
    // Small writes (a test's request and reply) go out at once.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);

    match relay(&shared, &ctl, &mut client, &mut upstream).await {
        Outcome::Finished => {}
        Outcome::Failed => {
            close(CutStyle::Reset, client);
            close(CutStyle::Reset, upstream);
        }
        Outcome::Ended => {
            let style = shared.style();
            close(style, client);
            close(style, upstream);
        }
    }
}

/// Forwards both directions until they finish, one fails, or the proxy ends
/// the connection (by request or by its deadline).
async fn relay(shared: &Shared, ctl: &ConnCtl, client: &mut TcpStream, upstream: &mut TcpStream) -> Outcome {
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    let up = direction(shared, ctl, client_read, upstream_write, &shared.counters.bytes_up);
    let down = direction(shared, ctl, upstream_read, client_write, &shared.counters.bytes_down);
    let mut both = pin!(async { tokio::try_join!(up, down) });
    loop {
        if ctl.ended().is_some() {
            return Outcome::Ended;
        }
        let deadline = ctl.deadline();
        tokio::select! {
            forwarded = &mut both => {
                return if forwarded.is_ok() { Outcome::Finished } else { Outcome::Failed };
            }
            () = ctl.wake.notified() => {}
            () = sleep_until(deadline) => {
                shared.cut(ctl);
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => pending().await,
    }
}

/// A chunk read from one side, due for delivery to the other.
struct Chunk {
    due: Option<Instant>,
    bytes: Vec<u8>,
}

/// Forwards one direction: a reader filling a bounded queue and a writer
/// draining it, so a delay does not serialise throughput.
///
/// A black-holed connection never finishes a direction: end of stream and
/// errors are swallowed like everything else.
async fn direction(
    shared: &Shared,
    ctl: &ConnCtl,
    source: ReadHalf<'_>,
    sink: WriteHalf<'_>,
    counter: &AtomicU64,
) -> io::Result<()> {
    let (queue_tx, queue_rx) = mpsc::channel(QUEUE_CHUNKS);
    let result =
        tokio::try_join!(read_side(shared, ctl, source, queue_tx), write_side(shared, ctl, sink, queue_rx, counter));
    if ctl.is_black_holed() {
        pending::<()>().await;
    }
    result.map(|_| ())
}

async fn read_side(
    shared: &Shared,
    ctl: &ConnCtl,
    mut source: ReadHalf<'_>,
    queue: mpsc::Sender<Chunk>,
) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(CHUNK_BYTES);
    loop {
        if source.read_buf(&mut bytes).await? == 0 {
            return Ok(());
        }
        if ctl.is_black_holed() {
            bytes.clear();
            continue;
        }
        let delay = shared.delay();
        let due = if delay.is_zero() { None } else { Instant::now().checked_add(delay) };
        let chunk = Chunk { due, bytes: std::mem::replace(&mut bytes, Vec::with_capacity(CHUNK_BYTES)) };
        if queue.send(chunk).await.is_err() {
            // The writer stopped (at its byte limit); keep the connection
            // as it is until the cut closes it.
            return pending().await;
        }
    }
}

async fn write_side(
    shared: &Shared,
    ctl: &ConnCtl,
    mut sink: WriteHalf<'_>,
    mut queue: mpsc::Receiver<Chunk>,
    counter: &AtomicU64,
) -> io::Result<()> {
    while let Some(chunk) = queue.recv().await {
        if let Some(due) = chunk.due {
            tokio::time::sleep_until(due).await;
        }
        if ctl.is_black_holed() {
            continue;
        }
        let take = ctl.reserve(chunk.bytes.len() as u64);
        if take > 0 {
            // `take` never exceeds the chunk's length, so it fits a usize.
            let end = usize::try_from(take).unwrap_or(chunk.bytes.len());
            sink.write_all(&chunk.bytes[..end]).await?;
            counter.fetch_add(take, Ordering::Relaxed);
        }
        if ctl.limit_reached() {
            shared.cut(ctl);
            return pending().await;
        }
    }
    if ctl.is_black_holed() {
        return pending().await;
    }
    sink.shutdown().await
}
