//! The agent in-process, on a config written for the test.

use std::time::Duration;

use roomcast::engine::{EngineHandle, Event};
use roomcast::{Agent, Config};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::TempDir;

/// Config text for an agent against `janus_url` (MQTT is not started by `Agent`).
pub fn config_text(janus_url: &str, state_dir: &std::path::Path, extra: &str) -> String {
    config_text_with(janus_url, state_dir, "", extra)
}

/// Like [`config_text`], with `rooms` (TOML) added to the `[rooms]` table.
pub fn config_text_with(
    janus_url: &str,
    state_dir: &std::path::Path,
    rooms: &str,
    extra: &str,
) -> String {
    format!(
        r#"
device_id = "box-17"
state_dir = "{state}"
[identity]
user_id = "box-17"
user_name = "Room 101 camera"
[rooms]
mode = "multi"
multi_room_enabled = true
{rooms}
[sources.main]
video = "test"
audio = "test"
{extra}
[mqtt]
url = "mqtt://127.0.0.1:1"
[janus]
url = "{janus_url}"
request_timeout_ms = 5000
[player]
audio_device = "null"
"#,
        state = state_dir.display()
    )
}

pub struct TestAgent {
    pub engine: EngineHandle,
    pub events: broadcast::Receiver<Event>,
    pub agent: Option<Agent>,
    pub shutdown: CancellationToken,
    _dir: TempDir,
}

impl TestAgent {
    /// Starts an agent; `extra` is TOML inserted after `[sources.main]` (e.g. more of
    /// that table, or more tables).
    pub fn start(janus_url: &str, extra: &str) -> Self {
        Self::start_with(janus_url, "", extra)
    }

    /// Like [`TestAgent::start`], with `rooms` (TOML) added to the `[rooms]` table, e.g.
    /// `fanout = "server"`.
    pub fn start_with(janus_url: &str, rooms: &str, extra: &str) -> Self {
        let dir = TempDir::new("agent");
        let text = config_text_with(janus_url, dir.path(), rooms, extra);
        let config = Config::parse(&text, std::path::Path::new("test-agent.toml"))
            .expect("test config is valid");
        Self::with_config(&config, dir)
    }

    pub fn with_config(config: &Config, dir: TempDir) -> Self {
        let shutdown = CancellationToken::new();
        let agent = Agent::start(config, shutdown.clone()).expect("agent starts");
        let engine = agent.engine.clone();
        let events = engine.subscribe();
        Self {
            engine,
            events,
            agent: Some(agent),
            shutdown,
            _dir: dir,
        }
    }

    /// Bytes per second `stream` sent over `window`, from the engine's snapshot (in
    /// server fan-out, every relayed stream reports the one upload's counters).
    pub async fn send_rate(&self, stream: &str, window: Duration) -> f64 {
        let sent = async || {
            let snapshot = self.engine.state().await.expect("the engine answers");
            snapshot
                .publishing
                .iter()
                .find(|p| p.stream_id.as_str() == stream)
                .and_then(|p| p.stats.bytes_sent)
                .unwrap_or(0)
        };
        let before = sent().await;
        tokio::time::sleep(window).await;
        (sent().await - before) as f64 / window.as_secs_f64()
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(agent) = self.agent.take() {
            agent.stopped(std::time::Duration::from_secs(4)).await;
        }
    }

    /// Waits for an event matching `want`, skipping others.
    pub async fn wait_event(
        &mut self,
        what: &str,
        within: Duration,
        want: impl Fn(&Event) -> bool,
    ) -> Event {
        wait_event(&mut self.events, what, within, want).await
    }
}

/// Waits on an engine's event stream for an event matching `want`, skipping others;
/// panics naming `what` after `within`.
pub async fn wait_event(
    events: &mut broadcast::Receiver<Event>,
    what: &str,
    within: Duration,
    want: impl Fn(&Event) -> bool,
) -> Event {
    tokio::time::timeout(within, async {
        loop {
            match events.recv().await {
                Ok(event) if want(&event) => return event,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no event within {within:?}: {what}"))
}
