//! roomcast: a headless classroom camera agent. One camera and microphone, encoded once,
//! published into several real-time rooms at the same time, driven over MQTT.
//!
//! [`run`] is the whole agent; `main.rs` only parses the command line around it.

pub mod base;
pub mod config;
pub mod control;
pub mod engine;
pub mod media;
pub mod rooms;
pub mod webrtc;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::Config;
use engine::{EngineBuilder, EngineHandle};
use rooms::janus::JanusRooms;

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
}

impl Agent {
    /// Starts media, the Janus connection and the engine. Nothing is joined yet.
    pub fn start(config: &Config, shutdown: CancellationToken) -> Result<Self, RunError> {
        let media = Arc::new(media::GstMedia::new(config)?);
        let sfu_shutdown = CancellationToken::new();
        let (rooms, rooms_events) = JanusRooms::start(&config.janus, sfu_shutdown.clone());
        let (engine, engine_task) = EngineBuilder::new(config.engine_settings()).start(
            rooms,
            rooms_events,
            media.clone(),
            shutdown,
        );
        Ok(Self {
            engine,
            media,
            engine_task,
            sfu_shutdown,
        })
    }

    /// Waits for the engine to finish (it leaves every room when its shutdown token is
    /// cancelled), then closes the SFU session.
    pub async fn stopped(self) {
        if tokio::time::timeout(Duration::from_secs(3), self.engine_task)
            .await
            .is_err()
        {
            warn!("the room engine did not stop within 3 s");
        }
        self.media.shutdown();
        self.sfu_shutdown.cancel();
    }
}

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    info!(
        "roomcast {} starting: {}",
        env!("CARGO_PKG_VERSION"),
        config.summary()
    );
    for warning in config.warnings() {
        warn!("{warning}");
    }
    // TLS and the rest of the MQTT settings are checked before anything starts.
    let control = control::Control::new(&config)?;
    let agent = Agent::start(&config, shutdown.clone())?;
    let control = control.start(agent.engine.clone());
    shutdown.cancelled().await;
    // The engine leaves the rooms first, so their events still reach the dashboards.
    agent.stopped().await;
    control.stop().await;
    info!("roomcast stopped");
    Ok(())
}
