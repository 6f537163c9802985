//! Logging to a file in the runtime directory (never to the terminal),
//! filtered by `RPTY_LOG`: `RUST_LOG`-style directives, a level (`error`,
//! `warn`, `info`, `debug`, `trace`) or per-crate ones such as
//! `info,backedpipe=debug` (default `info`). Every line carries the spans
//! it happened in (a pipe with its session id, a session, a child), so the
//! lines of many sessions in one log can be told apart.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// The environment variable that holds the log filter.
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
    let directives = std::env::var(LOG_ENV).unwrap_or_default();
    let (filter, invalid) = filter(&directives);
    if tracing_subscriber::fmt().with_writer(Mutex::new(file)).with_env_filter(filter).try_init().is_ok()
        && let Some(error) = invalid
    {
        tracing::warn!("{LOG_ENV}={directives:?} is not a valid filter ({error}); logging at info");
    }
}

/// The filter `directives` describe (`info` when empty), or `info` and the
/// reason they were refused.
fn filter(directives: &str) -> (EnvFilter, Option<String>) {
    let directives = directives.trim();
    if directives.is_empty() {
        return (EnvFilter::new("info"), None);
    }
    match EnvFilter::try_new(directives) {
        Ok(filter) => (filter, None),
        Err(error) => (EnvFilter::new("info"), Some(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::filter;

    #[test]
    fn directives_are_read_like_rust_log_and_bad_ones_fall_back_to_info() {
        assert_eq!(filter("").0.to_string(), "info");
        assert_eq!(filter("debug").0.to_string(), "debug");
        let (per_crate, error) = filter("warn,backedpipe=debug");
        assert!(error.is_none());
        assert!(per_crate.to_string().contains("backedpipe=debug"), "{per_crate}");
        let (fallback, error) = filter("backedpipe=loud");
        assert_eq!(fallback.to_string(), "info");
        assert!(error.is_some());
    }
}
