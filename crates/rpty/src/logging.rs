//! Logging to a file in the runtime directory (never to the terminal), at
//! the level named by `RPTY_LOG` (`error`, `warn`, `info`, `debug`,
//! `trace`; default `info`).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::filter::LevelFilter;

/// The environment variable that sets the log level.
const LOG_ENV: &str = "RPTY_LOG";

/// A log file larger than this is started afresh when opened.
const MAX_LOG_BYTES: u64 = 4 << 20;

/// Sends this process's logs to `path` (appending, or starting afresh when
/// `truncate` or when it has grown large). Logging is off when the file
/// cannot be opened: nothing ever goes to the terminal.
pub(crate) fn init(path: &Path, truncate: bool) {
    let large = std::fs::metadata(path).is_ok_and(|meta| meta.len() > MAX_LOG_BYTES);
    let mut options = OpenOptions::new();
    options.create(true).mode(0o600);
    if truncate || large {
        options.write(true).truncate(true);
    } else {
        options.append(true);
    }
    let Ok(file) = options.open(path) else { return };
    let level = std::env::var(LOG_ENV).ok().and_then(|level| level.parse::<LevelFilter>().ok());
    let _ = tracing_subscriber::fmt()
        .with_writer(Mutex::new(file))
        .with_max_level(level.unwrap_or(LevelFilter::INFO))
        .with_target(false)
        .try_init();
}
