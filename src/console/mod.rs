//! The operator console (`roomcast console`): every box of a school on one web page,
//! live, with the commands a person needs. A dashboard of the MQTT contract
//! (`docs/mqtt.md`) and nothing more: it reads every box's `status`, `state`, `events`
//! and `reply`, sends the documented commands, and serves one page that follows the
//! fleet through server-sent events (`docs/console.md`).
//!
//! - [`fleet`]: the actor that owns the picture of every box;
//! - [`mqtt`]: the broker link that feeds it and sends the commands;
//! - [`http`]: the page, the live stream and the command route (axum);
//! - [`auth`]: who may use it (`--auth`; required on any address but loopback).

pub mod auth;
pub mod fleet;
pub mod http;
pub mod mqtt;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::control::{BrokerSettings, ControlError};

/// Messages from the broker that may wait for the fleet actor.
const INCOMING_QUEUE: usize = 1024;

/// Everything `roomcast console` is told.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// One or more brokers (the same client options, another address each): the console
    /// moves to the next when it loses one, as the boxes do with `mqtt.urls`.
    pub brokers: Vec<BrokerSettings>,
    /// The boxes' `mqtt.topic_prefix`.
    pub prefix: String,
    pub listen: SocketAddr,
    /// Required unless `listen` is a loopback address.
    pub users: Option<auth::Users>,
    /// Janus's WebSocket URL, for the room view's live previews.
    pub janus: Option<String>,
    /// Where Debian's janus.js and adapter.js are (`/usr/share/javascript`).
    pub javascript: PathBuf,
    /// How long a command may wait for its reply (a login waits for the room).
    pub command_timeout: Duration,
}

/// Why the console cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(
        "--listen {0} is not a loopback address: serving the console on a network needs --auth FILE (lines `user:sha256-hex-of-the-password`); or listen on 127.0.0.1"
    )]
    NeedsAuth(SocketAddr),
    #[error(
        "cannot listen on {addr}: {source}; is another program using it? choose another --listen"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Broker(#[from] ControlError),
}

/// The console, serving.
pub struct RunningConsole {
    /// Where the page is (the port chosen when `listen` asked for port 0).
    pub local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl RunningConsole {
    /// Waits until it has stopped (after the shutdown token was cancelled).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// Checks the settings, binds the address and starts serving; the page is up when this
/// returns. Everything stops when `shutdown` is cancelled.
pub async fn start(
    settings: ConsoleSettings,
    shutdown: CancellationToken,
) -> Result<RunningConsole, ConsoleError> {
    if settings.users.is_none() && !settings.listen.ip().is_loopback() {
        return Err(ConsoleError::NeedsAuth(settings.listen));
    }
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| ConsoleError::Bind {
            addr: settings.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ConsoleError::Bind {
        addr: settings.listen,
        source,
    })?;
    let (incoming_tx, incoming) = mpsc::channel(INCOMING_QUEUE);
    let urls: Vec<_> = settings.brokers.iter().map(|b| b.url.clone()).collect();
    let brokers = crate::config::describe_broker_list(&urls);
    let (sender, mqtt_task) = mqtt::start(
        &settings.brokers,
        &settings.prefix,
        incoming_tx,
        shutdown.clone(),
    )?;
    let (fleet, fleet_task) = fleet::start(
        fleet::Fleet::new(&settings.prefix, &brokers),
        sender,
        incoming,
        settings.command_timeout,
        shutdown.clone(),
    );
    let state = Arc::new(http::AppState {
        fleet,
        users: settings.users.clone(),
        janus: settings.janus.clone(),
        javascript: settings.javascript.clone(),
        shutdown: shutdown.clone(),
    });
    let app = http::router(state);
    info!(
        "console: http://{local_addr}/ (boxes under {}/+/ on {brokers})",
        settings.prefix
    );
    let task = tokio::spawn(async move {
        let stop = shutdown.clone();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            stop.cancelled().await;
        });
        if let Err(e) = server.await {
            tracing::error!("console: the web server stopped: {e}");
        }
        // The live streams end with the shutdown token; the broker link and the fleet
        // actor too. Bounded, whatever state they are in.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = mqtt_task.await;
            let _ = fleet_task.await;
        })
        .await;
    });
    Ok(RunningConsole { local_addr, task })
}
