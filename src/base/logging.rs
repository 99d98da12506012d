//! Log output: readable on a terminal, journald-friendly under systemd, JSON for shippers.

use std::fmt;

use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// `journal` when running under systemd (JOURNAL_STREAM is set), `text` otherwise.
    #[default]
    Auto,
    /// Timestamps and colours for a terminal.
    Text,
    /// No timestamps or colours, a `<priority>` prefix journald turns into the log level.
    Journal,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Crates that log whole protocol frames at trace level — Janus requests carry the
/// api_secret, the token, the admin_key and room pins. Their trace output is dropped
/// whatever `RUST_LOG` says: no secret is ever logged.
const FRAME_LOGGERS: [&str; 2] = ["tungstenite", "tokio_tungstenite"];

/// Whether an event or span may be logged at all (see [`FRAME_LOGGERS`]).
fn never_secret(metadata: &tracing::Metadata<'_>) -> bool {
    !(*metadata.level() == Level::TRACE
        && FRAME_LOGGERS.iter().any(|target| {
            metadata
                .target()
                .strip_prefix(target)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        }))
}

/// Installs the global subscriber. The filter comes from `RUST_LOG` (default `info`).
pub fn init(format: LogFormat) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = match format {
        LogFormat::Auto if std::env::var_os("JOURNAL_STREAM").is_some() => LogFormat::Journal,
        LogFormat::Auto => LogFormat::Text,
        other => other,
    };
    type Boxed = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;
    let output: Boxed = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
        LogFormat::Journal => tracing_subscriber::fmt::layer()
            .with_writer(|| Escaping::new(std::io::stderr(), false))
            .with_ansi(false)
            .event_format(JournalFormat(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_level(false)
                    .with_ansi(false),
            ))
            .boxed(),
        // Colours only for a person at a terminal: a log file or a pipe gets plain text.
        LogFormat::Text | LogFormat::Auto => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            tracing_subscriber::fmt::layer()
                .with_writer(move || Escaping::new(std::io::stderr(), ansi))
                .with_ansi(ansi)
                .boxed()
        }
    };
    let result = tracing_subscriber::registry()
        .with(
            output
                .with_filter(filter)
                .with_filter(tracing_subscriber::filter::filter_fn(never_secret)),
        )
        .try_init();
    // A subscriber is already installed (tests): keep it.
    let _ = result;
}

/// Writes each formatted event as exactly one line: control characters inside it (a
/// newline, a carriage return, an escape sequence) are written escaped (`\n`, `\r`,
/// `\u{1b}`), so text that came from outside — a command id, an argument name, a room
/// participant's name — cannot start a forged line (`<0>…` for journald) or rewrite the
/// terminal. The event's own final newline is kept; with `ansi`, so are escape sequences
/// (the colours of a terminal; values are not coloured, so that is no way in).
/// JSON logs need none of this: serde escapes every string.
struct Escaping<W> {
    inner: W,
    ansi: bool,
}

impl<W: std::io::Write> Escaping<W> {
    fn new(inner: W, ansi: bool) -> Self {
        Self { inner, ansi }
    }
}

impl<W: std::io::Write> std::io::Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner
            .write_all(escape_line(buf, self.ansi).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// One formatted event as one line (see [`Escaping`]).
fn escape_line(buf: &[u8], ansi: bool) -> String {
    let text = String::from_utf8_lossy(buf);
    let (body, end) = match text.strip_suffix('\n') {
        Some(body) => (body, "\n"),
        None => (&*text, ""),
    };
    let mut line = String::with_capacity(text.len());
    for c in body.chars() {
        match c {
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push('\t'),
            '\u{1b}' if ansi => line.push(c),
            c if c.is_control() => line.push_str(&c.escape_unicode().to_string()),
            c => line.push(c),
        }
    }
    line.push_str(end);
    line
}

/// Prefixes each line with the sd-daemon priority (`<3>` error … `<7>` debug).
struct JournalFormat<F>(F);

impl<S, N, F> FormatEvent<S, N> for JournalFormat<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", journal_priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

fn journal_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_loggers_never_log_at_trace() {
        use tracing::metadata::Kind;
        use tracing::{Metadata, callsite::Identifier, field::FieldSet};
        struct Site;
        impl tracing::Callsite for Site {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                unimplemented!()
            }
        }
        static SITE: Site = Site;
        let meta = |target: &'static str, level| {
            Metadata::new(
                "event",
                target,
                level,
                None,
                None,
                None,
                FieldSet::new(&[], Identifier(&SITE)),
                Kind::EVENT,
            )
        };
        assert!(!never_secret(&meta("tungstenite::protocol", Level::TRACE)));
        assert!(!never_secret(&meta("tokio_tungstenite", Level::TRACE)));
        assert!(never_secret(&meta("tungstenite::protocol", Level::DEBUG)));
        assert!(never_secret(&meta("tungstenitex", Level::TRACE)));
        assert!(never_secret(&meta("roomcast::rooms", Level::TRACE)));
    }

    #[test]
    fn one_event_is_one_line_whatever_its_values() {
        let forged = "INFO command refused id=\"x\n<0>root login ok\r\u{1b}[2J\u{7}\"\n";
        let line = escape_line(forged.as_bytes(), false);
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        assert!(line.ends_with('\n'));
        assert!(
            line.contains("\\n<0>root login ok\\r\\u{1b}[2J\\u{7}"),
            "{line:?}"
        );
        // A terminal keeps its colours; the newline is escaped all the same.
        let line = escape_line("\u{1b}[32mINFO\u{1b}[0m a\nb\n".as_bytes(), true);
        assert_eq!(line, "\u{1b}[32mINFO\u{1b}[0m a\\nb\n");
    }

    #[test]
    fn priorities_follow_sd_daemon() {
        assert_eq!(journal_priority(Level::ERROR), 3);
        assert_eq!(journal_priority(Level::WARN), 4);
        assert_eq!(journal_priority(Level::INFO), 6);
        assert_eq!(journal_priority(Level::DEBUG), 7);
    }
}
