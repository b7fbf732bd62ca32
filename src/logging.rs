//! tracing setup: under systemd (stderr is the journal) plain lines with `<N>` syslog
//! priority prefixes, which journald turns into PRIORITY= and strips; JSON lines when
//! stderr is another non-terminal (files, containers); readable lines on a terminal.
//! `RUST_LOG`, when set, is the filter; else `log_level` (which a reload can swap).
//! pingora's `log` records are bridged in.

mod journald;
mod throttle;

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

pub use throttle::{Repeated, Throttle};

/// Swaps the log filter of the installed subscriber (config reload of `log_level`).
type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;
static SET_FILTER: OnceLock<SetFilter> = OnceLock::new();

/// Apply a new `log_level` to the running process. The value was checked when the
/// config was loaded; an error here means logging was not set up by [`init`].
pub fn set_level(level: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
    match SET_FILTER.get() {
        Some(set) => set(filter),
        None => Err("logging is not initialised".into()),
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Json,
    Pretty,
    Journald,
}

fn output(format: LogFormat, journal: bool, terminal: bool) -> Output {
    match format {
        LogFormat::Json => Output::Json,
        LogFormat::Pretty => Output::Pretty,
        LogFormat::Auto if journal => Output::Journald,
        LogFormat::Auto if terminal => Output::Pretty,
        LogFormat::Auto => Output::Json,
    }
}

pub fn init(config: &Config) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.trim().is_empty() => f,
        _ => config.log_level.clone(),
    };
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let out = output(
        config.log_format,
        crate::systemd::stderr_is_journal(),
        std::io::stderr().is_terminal(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Each format is its own builder type; install it with a reloadable filter.
    // A second init (tests calling twice) is harmless; ignore it.
    macro_rules! install {
        ($builder:expr) => {{
            let builder = $builder.with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_ok() {
                let _ = SET_FILTER.set(Box::new(move |f| {
                    handle.reload(f).map_err(|e| e.to_string())
                }));
            }
        }};
    }
    match out {
        Output::Json => install!(builder.json().flatten_event(true).with_current_span(false)),
        Output::Pretty => install!(builder.compact()),
        Output::Journald => install!(builder.with_ansi(false).event_format(journald::Journald)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_the_journal_first() {
        assert_eq!(output(LogFormat::Auto, true, false), Output::Journald);
        assert_eq!(output(LogFormat::Auto, false, true), Output::Pretty);
        assert_eq!(output(LogFormat::Auto, false, false), Output::Json);
        // An explicit format wins over the journal.
        assert_eq!(output(LogFormat::Json, true, false), Output::Json);
        assert_eq!(output(LogFormat::Pretty, true, true), Output::Pretty);
    }
}
