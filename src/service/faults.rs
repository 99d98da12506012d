//! Fault injection, for the tests only: when `ROOMCAST_FAULT_SOCKET` is set in the
//! environment, the agent binds a unix datagram socket at that path and takes one command
//! per datagram, answering `ok` or `error: …` to the sender (when it has an address):
//!
//! ```text
//! stall-engine <seconds>               the room engine task stops serving (watchdog test)
//! source-error <channel>               the capture element posts an error
//! source-unavailable <channel> <secs>  an error, and the source cannot start for a while
//! source-stall <channel>               frames stop, no error (a wedged driver)
//! ```
//!
//! Nothing else reaches these hooks: the MQTT contract has no such command, and the
//! systemd unit never sets the variable. The agent logs a warning at startup when it is on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixDatagram;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::engine::{Channel, EngineHandle};
use crate::media::{GstMedia, SourceFault};

pub const FAULT_SOCKET_ENV: &str = "ROOMCAST_FAULT_SOCKET";

/// What faults are injected into: the current engine and media (they change on reload).
#[derive(Clone)]
pub struct Targets {
    pub engine: EngineHandle,
    pub media: Arc<GstMedia>,
}

/// The socket path, when fault injection is on.
pub fn socket_from_env() -> Option<PathBuf> {
    std::env::var_os(FAULT_SOCKET_ENV).map(PathBuf::from)
}

/// Serves the fault socket until `stop`.
pub fn spawn(path: PathBuf, targets: watch::Receiver<Option<Targets>>, stop: CancellationToken) {
    let _ = std::fs::remove_file(&path);
    let socket = match UnixDatagram::bind(&path) {
        Ok(socket) => socket,
        Err(e) => {
            warn!(
                "{FAULT_SOCKET_ENV}={}: cannot bind ({e}); no fault injection",
                path.display()
            );
            return;
        }
    };
    warn!(
        "FAULT INJECTION IS ON ({FAULT_SOCKET_ENV}={}): for tests only, never in production",
        path.display()
    );
    tokio::spawn(async move {
        let mut buffer = [0u8; 512];
        loop {
            let (n, from) = tokio::select! {
                _ = stop.cancelled() => break,
                received = socket.recv_from(&mut buffer) => match received {
                    Ok(received) => received,
                    Err(e) => {
                        warn!("fault socket: {e}");
                        break;
                    }
                },
            };
            let command = String::from_utf8_lossy(&buffer[..n]).trim().to_owned();
            let current = targets.borrow().clone();
            let answer = match current {
                Some(targets) => match apply(&command, &targets).await {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => format!("error: {e}"),
                },
                None => "error: the agent is not running".to_owned(),
            };
            info!(command = %command, answer = %answer, "fault socket");
            if let Some(peer) = from.as_pathname() {
                let _ = socket.send_to(answer.as_bytes(), peer).await;
            }
        }
        let _ = std::fs::remove_file(&path);
    });
}

async fn apply(command: &str, targets: &Targets) -> Result<(), String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let channel = |word: Option<&&str>| match word.copied() {
        Some("main") => Ok(Channel::Main),
        Some("aux") => Ok(Channel::Aux),
        other => Err(format!("channel must be main or aux, not {other:?}")),
    };
    let seconds = |word: Option<&&str>| {
        word.and_then(|w| w.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 3600.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("seconds must be a number from 0 to 3600, not {word:?}"))
    };
    let media = |channel, fault| {
        targets
            .media
            .inject_source_fault(channel, fault)
            .map_err(|e| e.to_string())
    };
    match words.first().copied() {
        Some("stall-engine") => {
            let duration = seconds(words.get(1))?;
            targets
                .engine
                .inject_stall(duration)
                .await
                .map_err(|e| e.to_string())
        }
        Some("source-error") => media(channel(words.get(1))?, SourceFault::Error),
        Some("source-unavailable") => media(
            channel(words.get(1))?,
            SourceFault::Unavailable(seconds(words.get(2))?),
        ),
        Some("source-stall") => media(channel(words.get(1))?, SourceFault::Stall),
        _ => Err(format!(
            "unknown fault {command:?}: stall-engine <s>, source-error <channel>, source-unavailable <channel> <s>, source-stall <channel>"
        )),
    }
}
