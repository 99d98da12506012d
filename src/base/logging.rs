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
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .event_format(JournalFormat(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_level(false)
                    .with_ansi(false),
            ))
            .boxed(),
        // Colours only for a person at a terminal: a log file or a pipe gets plain text.
        LogFormat::Text | LogFormat::Auto => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
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
    fn priorities_follow_sd_daemon() {
        assert_eq!(journal_priority(Level::ERROR), 3);
        assert_eq!(journal_priority(Level::WARN), 4);
        assert_eq!(journal_priority(Level::INFO), 6);
        assert_eq!(journal_priority(Level::DEBUG), 7);
    }
}
