//! tracing setup: under systemd (stderr is the journal) plain lines with `<N>` syslog
//! priority prefixes, which journald turns into PRIORITY= and strips; JSON lines when
//! stderr is another non-terminal (files, containers); readable lines on a terminal.
//! `RUST_LOG`, when set, is the filter; else `log_level`. pingora's `log` records are
//! bridged in.

mod journald;
mod throttle;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

pub use throttle::{Repeated, Throttle};

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
    // A second init (tests calling twice) is harmless; ignore it.
    let _ = match out {
        Output::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        Output::Pretty => builder.compact().try_init(),
        Output::Journald => builder
            .with_ansi(false)
            .event_format(journald::Journald)
            .try_init(),
    };
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
