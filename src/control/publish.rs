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

/// The largest payload the box publishes (a reply, an event, the state), as large as the
/// largest command it takes. Brokers limit message sizes (mosquitto `max_packet_size`,
/// cloud brokers 128 KiB or less), and a QoS 1 message the broker refuses, or that
/// rumqttc cannot encode, would be sent again first on every reconnect: nothing the box
/// says may come near that. A message whose lists make it larger has them cut
/// ([`bounded`]).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

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

/// `value` as a payload of at most [`MAX_PAYLOAD_BYTES`]: while it is larger, the longest
/// list in it (`rooms[i].users`, `playing`, an event's `users`…) is cut to half, and a
/// field `<list>_more` next to it says how many entries were left out. `None` when no
/// list is left to cut (nothing roomcast publishes gets there: its strings are bounded).
pub(crate) fn bounded(mut value: Value) -> Option<Vec<u8>> {
    for _ in 0..64 {
        let bytes = serde_json::to_vec(&value).ok()?;
        if bytes.len() <= MAX_PAYLOAD_BYTES {
            return Some(bytes);
        }
        let mut best = None;
        longest_list(&value, &mut Vec::new(), &mut best);
        let (_, path) = best?;
        cut(&mut value, &path);
    }
    None
}

enum Step {
    Key(String),
    Index(usize),
}

/// The path to the longest non-empty list that is a field of an object.
fn longest_list(value: &Value, path: &mut Vec<Step>, best: &mut Option<(usize, Vec<Step>)>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                path.push(Step::Key(key.clone()));
                if let Value::Array(items) = item
                    && !items.is_empty()
                    && best.as_ref().is_none_or(|(n, _)| items.len() > *n)
                {
                    let copy = path
                        .iter()
                        .map(|s| match s {
                            Step::Key(k) => Step::Key(k.clone()),
                            Step::Index(i) => Step::Index(*i),
                        })
                        .collect();
                    *best = Some((items.len(), copy));
                }
                longest_list(item, path, best);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Step::Index(i));
                longest_list(item, path, best);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Halves the list at `path` (a field of an object) and counts what went in `<key>_more`.
fn cut(value: &mut Value, path: &[Step]) {
    let Some((Step::Key(key), parent_path)) = path.split_last() else {
        return;
    };
    let mut parent = value;
    for step in parent_path {
        let next = match (step, parent) {
            (Step::Key(k), Value::Object(map)) => map.get_mut(k),
            (Step::Index(i), Value::Array(items)) => items.get_mut(*i),
            _ => None,
        };
        let Some(next) = next else { return };
        parent = next;
    }
    let Value::Object(map) = parent else { return };
    let Some(Value::Array(items)) = map.get_mut(key) else {
        return;
    };
    let keep = items.len() / 2;
    let removed = (items.len() - keep) as u64;
    items.truncate(keep);
    let more = format!("{key}_more");
    let before = map.get(&more).and_then(Value::as_u64).unwrap_or(0);
    map.insert(more, Value::from(before + removed));
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
    let Some(payload) = serde_json::to_value(event).ok().and_then(bounded) else {
        warn!(
            "MQTT control: a {} event cannot be published within {MAX_PAYLOAD_BYTES} bytes; it is left out",
            event.name()
        );
        return;
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
        let Some(payload) = bounded(state_value(&device_id, &snapshot)) else {
            warn!("MQTT control: the state cannot be published within {MAX_PAYLOAD_BYTES} bytes");
            continue;
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn small_payloads_are_left_as_they_are() {
        let value = json!({"rooms": [{"room_id": "a", "users": [1, 2, 3]}]});
        let bytes = bounded(value.clone()).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), value);
    }

    /// A state past the limit: the longest lists are cut and say how many are missing;
    /// what is left is the first entries, unchanged.
    #[test]
    fn large_lists_are_cut_and_counted() {
        let user =
            |n: usize| json!({"user_id": format!("student-{n}"), "user_name": "x".repeat(200)});
        let stream = |n: usize| json!({"stream_id": format!("s-{n}-{}", "y".repeat(200)), "room_id": "bigclass"});
        let value = json!({
            "device_id": "box-17",
            "rooms": [{"room_id": "bigclass", "users": (0..2000).map(user).collect::<Vec<_>>()}],
            "playing": (0..256).map(stream).collect::<Vec<_>>(),
            "publishing": [stream(0)],
        });
        assert!(serde_json::to_vec(&value).unwrap().len() > 8 * MAX_PAYLOAD_BYTES);
        let bytes = bounded(value.clone()).unwrap();
        assert!(bytes.len() <= MAX_PAYLOAD_BYTES, "{}", bytes.len());
        let cut: Value = serde_json::from_slice(&bytes).unwrap();
        let users = cut["rooms"][0]["users"].as_array().unwrap();
        let more = cut["rooms"][0]["users_more"].as_u64().unwrap();
        assert_eq!(users.len() as u64 + more, 2000);
        assert_eq!(users[0], user(0));
        let playing = cut["playing"].as_array().unwrap().len() as u64;
        assert_eq!(playing + cut["playing_more"].as_u64().unwrap_or(0), 256);
        assert_eq!(cut["publishing"], value["publishing"]);
        assert!(cut.get("publishing_more").is_none());
        assert_eq!(cut["device_id"], "box-17");
        // Nothing to cut: refused, not sent.
        assert!(bounded(json!({"text": "z".repeat(MAX_PAYLOAD_BYTES)})).is_none());
    }
}
