//! roomcast: a headless classroom camera agent. One camera and microphone, encoded once,
//! published into several real-time rooms at the same time, driven over MQTT.
//!
//! [`run`] is the whole agent; `main.rs` only parses the command line and turns signals
//! into [`service::RunOptions`] around it. [`Agent`] is the part that joins rooms and
//! publishes; [`service`] runs it as a system service (systemd notify and watchdog,
//! the persisted desired state, reloads).

pub mod base;
pub mod config;
/// `roomcast console`: the operator's web page over the MQTT contract.
pub mod console;
pub mod control;
pub mod engine;
pub mod media;
pub mod peer;
pub mod rooms;
pub mod service;
pub mod webrtc;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

pub use config::Config;
use engine::{EngineBuilder, EngineHandle};
use rooms::janus::JanusServers;

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("media: {0}")]
    Media(#[from] media::MediaError),
    #[error("{0}")]
    Control(#[from] control::ControlError),
}

/// The running agent's parts: the engine and the tasks behind it.
pub struct Agent {
    pub engine: EngineHandle,
    pub media: Arc<media::GstMedia>,
    engine_task: JoinHandle<()>,
    /// The SFU connection outlives the engine so leaving rooms can still be said.
    sfu_shutdown: CancellationToken,
    rooms: Arc<JanusServers>,
}

impl Agent {
    /// Starts media, the Janus servers' backend and the engine. Nothing is joined (or
    /// connected to Janus) yet.
    pub fn start(config: &Config, shutdown: CancellationToken) -> Result<Self, RunError> {
        let media = Arc::new(media::GstMedia::new(config)?);
        Ok(Self::start_with_media(config, media, shutdown))
    }

    /// Like [`Agent::start`], with media already built (and so validated) from `config`.
    pub fn start_with_media(
        config: &Config,
        media: Arc<media::GstMedia>,
        shutdown: CancellationToken,
    ) -> Self {
        let sfu_shutdown = CancellationToken::new();
        let (rooms, rooms_events) = JanusServers::new(
            &config.janus,
            Arc::new(webrtc::DataChannels),
            sfu_shutdown.clone(),
        );
        let (engine, engine_task) = EngineBuilder::new(config.engine_settings()).start(
            rooms.clone(),
            rooms_events,
            media.clone(),
            shutdown,
        );
        Self {
            engine,
            media,
            engine_task,
            sfu_shutdown,
            rooms,
        }
    }

    /// A reload changed the Janus servers in `changed` (or `rooms.routes`): the backend
    /// takes the new servers' settings and the engine logs the rooms on the changed
    /// servers in again where they now belong; nothing else is touched. Returns the
    /// rooms logged in again.
    pub async fn reroute(
        &self,
        config: &Config,
        changed: Vec<engine::ServerName>,
    ) -> Result<Vec<engine::RoomId>, engine::EngineError> {
        self.rooms.reconfigure(&config.janus, &changed);
        self.engine.reroute(config.server_routes(), changed).await
    }

    /// Waits for the engine to finish (it leaves every room when its shutdown token is
    /// cancelled), then closes the SFU sessions, all within `budget`: the engine gets
    /// most of it, the server fan-out's clean-up the rest. However this ends — in time,
    /// late, or dropped by a caller's own deadline — media stops and the SFU sessions are
    /// closed: a stop that runs out of time never leaves a Janus session open.
    pub async fn stopped(self, budget: Duration) {
        let _closes = CloseOnDrop {
            media: self.media.clone(),
            sfu: self.sfu_shutdown.clone(),
        };
        let engine_budget = budget.mul_f64(ENGINE_SHARE);
        if tokio::time::timeout(engine_budget, self.engine_task)
            .await
            .is_err()
        {
            warn!(
                "the room engine did not stop within {engine_budget:?}; closing the Janus session anyway"
            );
        }
        // Server fan-out's last clean-up on Janus (its carrier room), bounded.
        self.rooms
            .settle(budget.saturating_sub(engine_budget))
            .await;
    }
}

/// The share of [`Agent::stopped`]'s budget the engine has to leave the rooms.
const ENGINE_SHARE: f64 = 0.7;

/// Stops media and closes the SFU session when an [`Agent::stopped`] ends, however it
/// ends.
struct CloseOnDrop {
    media: Arc<media::GstMedia>,
    sfu: CancellationToken,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.media.shutdown();
        self.sfu.cancel();
    }
}

/// Runs the agent until `shutdown` is cancelled: MQTT control, the rooms saved in
/// `state_dir` taken up again, systemd told how it is going (when `NOTIFY_SOCKET` is
/// set). No reloads: [`service::run`] with [`service::RunOptions`] has those.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    service::run(config, shutdown, service::RunOptions::default()).await
}
