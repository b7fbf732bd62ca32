//! Log lines for journald's stdout/stderr stream: `<N>target: message fields`, where
//! `<N>` is the syslog priority (journald stores it as PRIORITY= and strips it). No
//! timestamp or colour: the journal records the time itself.

use std::fmt::Write as _;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

pub struct Journald;

/// tracing level → syslog priority (err, warning, info, debug).
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

impl<S, N> FormatEvent<S, N> for Journald
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut line = String::new();
        ctx.field_format()
            .format_fields(Writer::new(&mut line), event)?;
        let prefix = format!("<{}>", priority(*meta.level()));
        // journald cuts the stream at newlines: every piece of a multi-line message
        // keeps the priority.
        let line = line.replace('\n', &format!("\n{prefix}"));
        let mut out = String::with_capacity(line.len() + 48);
        write!(out, "{prefix}{}: {line}", meta.target())?;
        writeln!(writer, "{out}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_carry_the_syslog_priority() {
        let buf = Buf::default();
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(Level::DEBUG)
            .event_format(Journald)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(app = "demo", "build failed");
            tracing::warn!("disk low");
            tracing::info!("serving");
            tracing::debug!("first\nsecond");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let target = module_path!();
        assert_eq!(
            text,
            format!(
                "<3>{target}: build failed app=\"demo\"\n<4>{target}: disk low\n\
                 <6>{target}: serving\n<7>{target}: first\n<7>second\n"
            )
        );
    }
}
