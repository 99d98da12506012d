//! What the agent publishes on its own: every engine event, and the retained state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Topics;
use crate::engine::{EngineHandle, EngineSnapshot, Event};

/// The state topic is published at most once per this interval (~10 per second).
pub const STATE_MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Counters (bytes sent, frames decoded…) change without events: the snapshot is
/// compared this often and republished when it differs.
pub const STATE_REFRESH: Duration = Duration::from_secs(5);

/// The retained `state` payload and the `get_state` result: the engine snapshot plus
/// which box and version it comes from.
#[derive(Serialize)]
struct StatePayload<'a> {
    device_id: &'a str,
    version: &'static str,
    #[serde(flatten)]
    snapshot: &'a EngineSnapshot,
}

pub(crate) fn state_value(device_id: &str, snapshot: &EngineSnapshot) -> Value {
    serde_json::to_value(StatePayload {
        device_id,
        version: env!("CARGO_PKG_VERSION"),
        snapshot,
    })
    .unwrap_or(Value::Null)
}

/// Asks the state publisher to look again (`changed`), or to publish even if nothing
/// changed (`republish`, after a reconnect: the broker may have lost the retained copy).
#[derive(Default)]
pub(crate) struct StateSignal {
    notify: Notify,
    force: AtomicBool,
}

impl StateSignal {
    pub fn changed(&self) {
        self.notify.notify_one();
    }

    pub fn republish(&self) {
        self.force.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }
}

/// Publishes each engine event on `{base}/events` and `{base}/rooms/{room}/events`.
/// Waiting on the broker only ever holds up this task: the engine's broadcast buffer
/// keeps the latest 1024 events, and falling further behind drops the oldest.
pub(crate) async fn forward_events(
    mut events: broadcast::Receiver<Event>,
    client: AsyncClient,
    topics: Topics,
    state: std::sync::Arc<StateSignal>,
    stop: CancellationToken,
) {
    loop {
        let received = tokio::select! {
            biased;
            received = events.recv() => received,
            _ = stop.cancelled() => break,
        };
        match received {
            Ok(event) => {
                state.changed();
                publish_event(&client, &topics, &event).await;
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                warn!(
                    "MQTT control: {missed} events were dropped because the broker could not take them fast enough; the state topic is republished"
                );
                state.republish();
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
    // Stopping: what the engine said last (leaving the rooms) still goes out.
    while let Ok(event) = events.try_recv() {
        publish_event(&client, &topics, &event).await;
    }
}

async fn publish_event(client: &AsyncClient, topics: &Topics, event: &Event) {
    let payload = match serde_json::to_vec(event) {
        Ok(payload) => payload,
        Err(e) => {
            warn!(
                "MQTT control: cannot serialise a {} event: {e}",
                event.name()
            );
            return;
        }
    };
    let room_topic = topics.room_events(event.room_id().as_str());
    for topic in [&topics.events, &room_topic] {
        if let Err(e) = client
            .publish(topic, QoS::AtLeastOnce, false, payload.clone())
            .await
        {
            debug!("MQTT control: event not published ({e})");
            return;
        }
    }
}

/// Keeps the retained `state` topic current: after events (at most every
/// [`STATE_MIN_INTERVAL`]), every [`STATE_REFRESH`] when counters moved, and after each
/// reconnect.
pub(crate) async fn publish_state(
    engine: EngineHandle,
    client: AsyncClient,
    topics: Topics,
    device_id: String,
    signal: std::sync::Arc<StateSignal>,
    stop: CancellationToken,
) {
    let mut last: Option<Vec<u8>> = None;
    let mut refresh = tokio::time::interval(STATE_REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = signal.notify.notified() => {}
            _ = refresh.tick() => {}
        }
        let forced = signal.force.swap(false, Ordering::SeqCst);
        let Ok(snapshot) = engine.state().await else {
            // The engine has stopped: nothing new to say.
            return;
        };
        let payload = match serde_json::to_vec(&StatePayload {
            device_id: &device_id,
            version: env!("CARGO_PKG_VERSION"),
            snapshot: &snapshot,
        }) {
            Ok(payload) => payload,
            Err(e) => {
                warn!("MQTT control: cannot serialise the state: {e}");
                continue;
            }
        };
        if forced || last.as_ref() != Some(&payload) {
            if let Err(e) = client
                .publish(&topics.state, QoS::AtLeastOnce, true, payload.clone())
                .await
            {
                debug!("MQTT control: state not published ({e})");
            }
            last = Some(payload);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(STATE_MIN_INTERVAL) => {}
        }
    }
}
