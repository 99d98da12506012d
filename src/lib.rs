//! roomcast: a headless classroom camera agent. One camera and microphone, encoded once,
//! published into several real-time rooms at the same time, driven over MQTT.
//!
//! [`run`] is the whole agent; `main.rs` only parses the command line around it.

pub mod base;
pub mod config;
pub mod engine;
pub mod rooms;
pub mod webrtc;

use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
}

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    tracing::info!(
        "roomcast {} starting: {}",
        env!("CARGO_PKG_VERSION"),
        config.summary()
    );
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    shutdown.cancelled().await;
    Ok(())
}
