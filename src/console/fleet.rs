//! The fleet's current picture: one view per box, built only from what the boxes publish
//! (`status`, `state`, `events`, `reply`), owned by one actor task. The web side asks it
//! for the picture, subscribes to its changes and hands it commands to send; the MQTT
//! side feeds it what arrives.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Changes the page has not read yet; a page that falls further behind reloads the
/// whole picture.
const UPDATES: usize = 256;
/// Commands the web side may queue for the actor.
const REQUESTS: usize = 64;
/// Replies kept per box (the newest is shown, the others are the tile's history).
const REPLIES_KEPT: usize = 5;
/// Commands waiting for their reply at once (a page cannot pile up more).
const MAX_PENDING: usize = 256;
/// The ops a person can send from the page: the documented ones (docs/mqtt.md) that act
/// on rooms and streams, plus `get_state`.
pub const OPS: &[&str] = &[
    "login_room",
    "logout_room",
    "start_publishing",
    "stop_publishing",
    "start_playing",
    "stop_playing",
    "send_broadcast_message",
    "send_custom_command",
    "get_state",
];

/// Whether a box is reachable, from its retained `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Online,
    Offline,
    /// A state arrived but no status yet.
    Unknown,
}

/// The last error of a room or stream, from its events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorNote {
    pub room_id: Option<String>,
    pub code: i64,
    pub message: String,
    /// The state or reason the event reported with it.
    pub what: String,
    pub at_ms: u64,
}

/// The reply to a command sent from the console.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplyNote {
    pub id: String,
    pub op: String,
    pub args: Value,
    pub ok: bool,
    pub code: Option<i64>,
    pub message: Option<String>,
    pub at_ms: u64,
}

/// Everything the console knows about one box.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BoxView {
    pub device_id: String,
    pub status: Status,
    pub status_at_ms: Option<u64>,
    /// The box's latest state snapshot, as it published it (docs/mqtt.md#state).
    pub state: Option<Value>,
    pub state_at_ms: Option<u64>,
    /// Quality figures from events newer than the state, by stream id.
    pub quality: BTreeMap<String, Value>,
    /// The last error of each stream (by stream id) and room (by `room:` + room id).
    pub errors: BTreeMap<String, ErrorNote>,
    /// The newest replies to commands sent from this console, newest first.
    pub replies: Vec<ReplyNote>,
}

impl BoxView {
    fn new(device_id: &str) -> Self {
        Self {
            device_id: device_id.to_owned(),
            status: Status::Unknown,
            status_at_ms: None,
            state: None,
            state_at_ms: None,
            quality: BTreeMap::new(),
            errors: BTreeMap::new(),
            replies: Vec::new(),
        }
    }
}

/// The console's own link to the broker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BrokerView {
    pub url: String,
    pub connected: bool,
    pub error: Option<String>,
}

/// One change, as the page receives it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Update {
    Box(BoxView),
    Broker(BrokerView),
}

/// The whole picture.
#[derive(Debug, Clone, Serialize)]
pub struct FleetView {
    pub broker: BrokerView,
    pub boxes: Vec<BoxView>,
}

/// What the MQTT side tells the fleet.
#[derive(Debug)]
pub enum Incoming {
    Message {
        topic: String,
        payload: Vec<u8>,
    },
    /// Connected to `broker` and subscribed.
    Connected {
        broker: String,
    },
    Disconnected(String),
}

/// Why a command from the page was not answered by its box.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(
        "{0:?} is not an op the console sends; use one of: {ops}",
        ops = OPS.join(", ")
    )]
    UnknownOp(String),
    #[error("device id {0:?} is not a box id (one MQTT topic level, without '/', '+' or '#')")]
    BadDevice(String),
    #[error("args must be a JSON object")]
    BadArgs,
    #[error("the console is not connected to the broker: {0}; the command was not sent")]
    NotConnected(String),
    #[error("too many commands are waiting for their replies ({MAX_PENDING}); try again shortly")]
    Busy,
    #[error("no reply from {device} within {} s; is it online?", timeout.as_secs())]
    Timeout { device: String, timeout: Duration },
    #[error("the console is shutting down")]
    Stopped,
}

/// Publishes a command payload on a topic (the MQTT side; a trait so the fleet's rules
/// can be tested without a broker).
pub trait Sender: Send + 'static {
    fn send(&self, topic: &str, payload: Vec<u8>) -> Result<(), String>;
}

enum Request {
    Picture(oneshot::Sender<FleetView>),
    Subscribe(oneshot::Sender<(FleetView, broadcast::Receiver<Update>)>),
    Command {
        device_id: String,
        op: String,
        args: Value,
        reply: oneshot::Sender<Result<ReplyNote, CommandError>>,
    },
}

/// The web side's handle on the fleet actor.
#[derive(Clone)]
pub struct FleetHandle {
    requests: mpsc::Sender<Request>,
}

impl FleetHandle {
    pub async fn picture(&self) -> Option<FleetView> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(Request::Picture(tx)).await.ok()?;
        rx.await.ok()
    }

    /// The picture and every change after it, with nothing lost in between.
    pub async fn subscribe(&self) -> Option<(FleetView, broadcast::Receiver<Update>)> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(Request::Subscribe(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Sends `op` to a box and waits for its reply (or the console's timeout).
    pub async fn command(
        &self,
        device_id: String,
        op: String,
        args: Value,
    ) -> Result<ReplyNote, CommandError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Command {
                device_id,
                op,
                args,
                reply: tx,
            })
            .await
            .map_err(|_| CommandError::Stopped)?;
        rx.await.map_err(|_| CommandError::Stopped)?
    }
}

struct Pending {
    device_id: String,
    op: String,
    args: Value,
    deadline: Instant,
    reply: oneshot::Sender<Result<ReplyNote, CommandError>>,
}

/// The picture and the rules that change it (no I/O: the actor around it does that).
pub struct Fleet {
    prefix: String,
    boxes: BTreeMap<String, BoxView>,
    broker: BrokerView,
}

/// Which box and which of its topics a message came from.
fn split_topic<'a>(prefix: &str, topic: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let (device, kind) = rest.split_once('/')?;
    (!device.is_empty() && !kind.contains('/')).then_some((device, kind))
}

/// A device id the console may put into a topic.
pub fn valid_device(id: &str) -> bool {
    !id.is_empty() && id.len() <= 256 && !id.contains(['/', '+', '#', '\0'])
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Fleet {
    pub fn new(prefix: &str, broker_url: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            boxes: BTreeMap::new(),
            broker: BrokerView {
                url: broker_url.to_owned(),
                connected: false,
                error: None,
            },
        }
    }

    pub fn picture(&self) -> FleetView {
        FleetView {
            broker: self.broker.clone(),
            boxes: self.boxes.values().cloned().collect(),
        }
    }

    pub fn set_broker(&mut self, connected: bool, error: Option<String>) -> Update {
        self.broker.connected = connected;
        self.broker.error = error;
        Update::Broker(self.broker.clone())
    }

    fn view(&mut self, device: &str) -> &mut BoxView {
        self.boxes
            .entry(device.to_owned())
            .or_insert_with(|| BoxView::new(device))
    }

    /// Applies one message from a box; the box's new view when it changed. `reply`
    /// topics are handled by [`Fleet::reply`].
    pub fn apply(&mut self, topic: &str, payload: &[u8]) -> Option<Update> {
        let (device, kind) = split_topic(&self.prefix, topic)?;
        let at = now_ms();
        match kind {
            "status" => {
                let status = match std::str::from_utf8(payload).ok()?.trim() {
                    "online" => Status::Online,
                    "offline" => Status::Offline,
                    _ => return None,
                };
                let view = self.view(device);
                view.status = status;
                view.status_at_ms = Some(at);
            }
            "state" => {
                let state: Value = serde_json::from_slice(payload).ok()?;
                if !state.is_object() {
                    return None;
                }
                let view = self.view(device);
                // The state carries each stream's latest quality: older event figures go.
                view.quality.clear();
                // Errors of streams and rooms the box no longer has are over.
                let known = known_ids(&state);
                view.errors.retain(|key, _| known.contains(key));
                view.state = Some(state);
                view.state_at_ms = Some(at);
            }
            "events" => {
                let event: Value = serde_json::from_slice(payload).ok()?;
                // An event that changes nothing does not make a box appear either.
                match self.boxes.get_mut(device) {
                    Some(view) => {
                        if !apply_event(view, &event, at) {
                            return None;
                        }
                    }
                    None => {
                        let mut view = BoxView::new(device);
                        if !apply_event(&mut view, &event, at) {
                            return None;
                        }
                        self.boxes.insert(device.to_owned(), view);
                    }
                }
            }
            _ => return None,
        }
        self.boxes.get(device).cloned().map(Update::Box)
    }

    /// Notes a reply to one of the console's commands on its box.
    pub fn reply(&mut self, device: &str, note: ReplyNote) -> Update {
        let view = self.view(device);
        view.replies.insert(0, note);
        view.replies.truncate(REPLIES_KEPT);
        Update::Box(view.clone())
    }
}

/// The error keys that still mean something in `state`: its streams and rooms.
fn known_ids(state: &Value) -> Vec<String> {
    let mut ids = Vec::new();
    for list in ["publishing", "playing"] {
        for entry in state[list].as_array().into_iter().flatten() {
            if let Some(id) = entry["stream_id"].as_str() {
                ids.push(id.to_owned());
            }
        }
    }
    for room in state["rooms"].as_array().into_iter().flatten() {
        if let Some(id) = room["room_id"].as_str() {
            ids.push(format!("room:{id}"));
        }
    }
    ids
}

/// Applies one event to a view; whether anything changed.
fn apply_event(view: &mut BoxView, event: &Value, at: u64) -> bool {
    let room_id = event["room_id"].as_str().map(str::to_owned);
    let code = event["error_code"].as_i64().unwrap_or(0);
    let message = event["error_message"].as_str().unwrap_or("").to_owned();
    match event["event"].as_str().unwrap_or("") {
        "publisher_quality_update" | "player_quality_update" => {
            let (Some(stream), Some(quality)) = (event["stream_id"].as_str(), event.get("quality"))
            else {
                return false;
            };
            view.quality.insert(stream.to_owned(), quality.clone());
            true
        }
        "publisher_state_update" | "player_state_update" => {
            let Some(stream) = event["stream_id"].as_str() else {
                return false;
            };
            let what = event["state"].as_str().unwrap_or("").to_owned();
            if code != 0 {
                view.errors.insert(
                    stream.to_owned(),
                    ErrorNote {
                        room_id,
                        code,
                        message,
                        what,
                        at_ms: at,
                    },
                );
                true
            } else if what == "Publishing" || what == "Playing" {
                view.errors.remove(stream).is_some()
            } else {
                false
            }
        }
        "room_state_changed" => {
            let Some(room) = room_id.clone() else {
                return false;
            };
            let key = format!("room:{room}");
            let what = event["reason"].as_str().unwrap_or("").to_owned();
            if code != 0 {
                view.errors.insert(
                    key,
                    ErrorNote {
                        room_id,
                        code,
                        message,
                        what,
                        at_ms: at,
                    },
                );
                true
            } else if what == "Logined" || what == "Reconnected" || what == "Logout" {
                view.errors.remove(&key).is_some()
            } else {
                false
            }
        }
        _ => false,
    }
}

/// Starts the fleet actor. `sender` publishes the commands; `incoming` is what the MQTT
/// side receives. Ends when `shutdown` is cancelled.
pub fn start<S: Sender>(
    fleet: Fleet,
    sender: S,
    mut incoming: mpsc::Receiver<Incoming>,
    timeout: Duration,
    shutdown: CancellationToken,
) -> (FleetHandle, tokio::task::JoinHandle<()>) {
    let (requests_tx, mut requests) = mpsc::channel(REQUESTS);
    let task = tokio::spawn(async move {
        let mut fleet = fleet;
        let (updates, _) = broadcast::channel::<Update>(UPDATES);
        let mut pending: HashMap<String, Pending> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut counter: u64 = 0;
        let run = format!("{:08x}", rand::random::<u32>());
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                message = incoming.recv() => {
                    let Some(message) = message else { break };
                    let update = match message {
                        Incoming::Connected { broker } => {
                            fleet.broker.url = broker;
                            Some(fleet.set_broker(true, None))
                        }
                        Incoming::Disconnected(reason) => Some(fleet.set_broker(false, Some(reason))),
                        Incoming::Message { topic, payload } => {
                            match split_topic(&fleet.prefix, &topic) {
                                Some((device, "reply")) => {
                                    let device = device.to_owned();
                                    take_reply(&mut fleet, &mut pending, &device, &payload)
                                }
                                _ => fleet.apply(&topic, &payload),
                            }
                        }
                    };
                    if let Some(update) = update {
                        let _ = updates.send(update);
                    }
                }
                request = requests.recv() => {
                    let Some(request) = request else { break };
                    match request {
                        Request::Picture(tx) => { let _ = tx.send(fleet.picture()); }
                        Request::Subscribe(tx) => {
                            let _ = tx.send((fleet.picture(), updates.subscribe()));
                        }
                        Request::Command { device_id, op, args, reply } => {
                            counter += 1;
                            let id = format!("console-{run}-{counter}");
                            match check_command(&fleet, &pending, &device_id, &op, &args) {
                                Err(e) => { let _ = reply.send(Err(e)); }
                                Ok(()) => {
                                    let topic = format!("{}/{device_id}/cmd", fleet.prefix);
                                    let payload = json!({"id": id, "op": op, "args": args});
                                    match sender.send(&topic, payload.to_string().into_bytes()) {
                                        Err(e) => { let _ = reply.send(Err(CommandError::NotConnected(e))); }
                                        Ok(()) => {
                                            pending.insert(id, Pending {
                                                device_id, op, args,
                                                deadline: Instant::now() + timeout,
                                                reply,
                                            });
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    let expired: Vec<String> = pending
                        .iter()
                        .filter(|(_, p)| p.deadline <= now)
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in expired {
                        if let Some(p) = pending.remove(&id) {
                            let _ = p.reply.send(Err(CommandError::Timeout { device: p.device_id, timeout }));
                        }
                    }
                }
            }
        }
        for (_, p) in pending.drain() {
            let _ = p.reply.send(Err(CommandError::Stopped));
        }
    });
    (
        FleetHandle {
            requests: requests_tx,
        },
        task,
    )
}

fn check_command(
    fleet: &Fleet,
    pending: &HashMap<String, Pending>,
    device_id: &str,
    op: &str,
    args: &Value,
) -> Result<(), CommandError> {
    if !OPS.contains(&op) {
        return Err(CommandError::UnknownOp(op.to_owned()));
    }
    if !valid_device(device_id) {
        return Err(CommandError::BadDevice(device_id.to_owned()));
    }
    if !args.is_object() {
        return Err(CommandError::BadArgs);
    }
    if !fleet.broker.connected {
        let reason = fleet
            .broker
            .error
            .clone()
            .unwrap_or_else(|| "not connected yet".into());
        return Err(CommandError::NotConnected(reason));
    }
    if pending.len() >= MAX_PENDING {
        return Err(CommandError::Busy);
    }
    Ok(())
}

/// Matches a reply to a waiting command; the box's new view when it was ours.
fn take_reply(
    fleet: &mut Fleet,
    pending: &mut HashMap<String, Pending>,
    device: &str,
    payload: &[u8],
) -> Option<Update> {
    let reply: Value = serde_json::from_slice(payload).ok()?;
    let id = reply["id"].as_str()?;
    // Only the box the command went to answers it.
    if pending.get(id)?.device_id != device {
        return None;
    }
    let waiting = pending.remove(id)?;
    let ok = reply["ok"] == Value::Bool(true);
    let note = ReplyNote {
        id: id.to_owned(),
        op: waiting.op,
        args: waiting.args,
        ok,
        code: reply["error"]["code"].as_i64(),
        message: reply["error"]["message"].as_str().map(str::to_owned),
        at_ms: now_ms(),
    };
    let update = fleet.reply(device, note.clone());
    let _ = waiting.reply.send(Ok(note));
    Some(update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn fleet() -> Fleet {
        Fleet::new("school/rc", "mqtt://b:1883")
    }

    fn view(update: Option<Update>) -> BoxView {
        match update {
            Some(Update::Box(view)) => view,
            other => panic!("expected a box update, got {other:?}"),
        }
    }

    #[test]
    fn topics_name_the_box_and_the_kind() {
        assert_eq!(
            split_topic("school/rc", "school/rc/box-1/state"),
            Some(("box-1", "state"))
        );
        assert_eq!(
            split_topic("school/rc", "school/rc/box-1/rooms/a/events"),
            None
        );
        assert_eq!(split_topic("school/rc", "other/box-1/state"), None);
        assert_eq!(split_topic("school/rc", "school/rcx/box-1/state"), None);
        assert!(valid_device("box-17"));
        assert!(!valid_device("a/b") && !valid_device("+") && !valid_device(""));
    }

    #[test]
    fn status_state_and_events_build_the_view() {
        let mut f = fleet();
        let v = view(f.apply("school/rc/box-1/status", b"online"));
        assert_eq!(v.status, Status::Online);
        let state = json!({"device_id": "box-1", "rooms": [{"room_id": "a", "state": "Logined"}],
            "publishing": [{"stream_id": "s1", "room_id": "a", "state": "PublishRequesting"}]});
        let v = view(f.apply("school/rc/box-1/state", state.to_string().as_bytes()));
        assert_eq!(v.state, Some(state));
        let failed = json!({"event": "publisher_state_update", "stream_id": "s1", "room_id": "a",
            "state": "PublishRequesting", "error_code": 1003901, "error_message": "camera gone"});
        let v = view(f.apply("school/rc/box-1/events", failed.to_string().as_bytes()));
        assert_eq!(v.errors["s1"].code, 1003901);
        assert_eq!(v.errors["s1"].message, "camera gone");
        let quality = json!({"event": "publisher_quality_update", "stream_id": "s1", "room_id": "a",
            "quality": {"kbps_sent": 700, "fps": 30.0}});
        let v = view(f.apply("school/rc/box-1/events", quality.to_string().as_bytes()));
        assert_eq!(v.quality["s1"]["kbps_sent"], 700);
        let back = json!({"event": "publisher_state_update", "stream_id": "s1", "room_id": "a",
            "state": "Publishing", "error_code": 0});
        let v = view(f.apply("school/rc/box-1/events", back.to_string().as_bytes()));
        assert!(v.errors.is_empty());
        // A state clears event figures (it carries them) and errors of streams it lacks.
        let failed_room = json!({"event": "room_state_changed", "room_id": "b",
            "reason": "LoginFailed", "error_code": 1002037, "error_message": "too many"});
        let v = view(f.apply("school/rc/box-1/events", failed_room.to_string().as_bytes()));
        assert_eq!(v.errors["room:b"].code, 1002037);
        let v = view(f.apply("school/rc/box-1/state", br#"{"rooms": []}"#));
        assert!(v.quality.is_empty() && v.errors.is_empty(), "{v:?}");
        let v = view(f.apply("school/rc/box-1/status", b"offline"));
        assert_eq!(v.status, Status::Offline);
        assert!(v.state.is_some(), "the last state stays while offline");
    }

    #[test]
    fn garbage_changes_nothing() {
        let mut f = fleet();
        assert!(f.apply("school/rc/box-1/status", b"maybe").is_none());
        assert!(f.apply("school/rc/box-1/state", b"not json").is_none());
        assert!(f.apply("school/rc/box-1/state", b"[1]").is_none());
        assert!(f.apply("school/rc/box-1/events", b"{}").is_none());
        assert!(f.apply("school/rc/box-1/cmd", b"{}").is_none());
        assert!(f.picture().boxes.is_empty());
    }

    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<(String, Value)>>>);

    impl Sender for Recorder {
        fn send(&self, topic: &str, payload: Vec<u8>) -> Result<(), String> {
            let value = serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
            self.0
                .lock()
                .map_err(|e| e.to_string())?
                .push((topic.to_owned(), value));
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_command_is_sent_and_its_reply_lands_on_the_tile() {
        let sent = Recorder::default();
        let (tx, rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let (handle, task) = start(
            fleet(),
            sent.clone(),
            rx,
            Duration::from_secs(5),
            shutdown.clone(),
        );
        // Not connected yet: refused, nothing sent.
        let refused = handle
            .command("box-1".into(), "get_state".into(), json!({}))
            .await;
        assert!(matches!(refused, Err(CommandError::NotConnected(_))));
        let (_, mut updates) = handle.subscribe().await.unwrap();
        tx.send(Incoming::Connected {
            broker: "mqtt://127.0.0.1:1883".into(),
        })
        .await
        .unwrap();
        assert!(matches!(updates.recv().await, Ok(Update::Broker(b)) if b.connected));
        assert!(matches!(
            handle
                .command("box-1".into(), "reboot".into(), json!({}))
                .await,
            Err(CommandError::UnknownOp(_))
        ));
        assert!(matches!(
            handle
                .command("a/b".into(), "get_state".into(), json!({}))
                .await,
            Err(CommandError::BadDevice(_))
        ));
        let waiting = tokio::spawn({
            let handle = handle.clone();
            async move {
                handle
                    .command("box-1".into(), "login_room".into(), json!({"room_id": "x"}))
                    .await
            }
        });
        let (topic, command) = loop {
            if let Some(first) = sent.0.lock().unwrap().first().cloned() {
                break first;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(topic, "school/rc/box-1/cmd");
        assert_eq!(command["op"], "login_room");
        let id = command["id"].as_str().unwrap().to_owned();
        // A reply from another box with the same id is not ours.
        let reply = json!({"id": id, "ok": false,
            "error": {"code": 1002037, "message": "already in 5 rooms"}});
        tx.send(Incoming::Message {
            topic: "school/rc/box-2/reply".into(),
            payload: reply.to_string().into_bytes(),
        })
        .await
        .unwrap();
        tx.send(Incoming::Message {
            topic: "school/rc/box-1/reply".into(),
            payload: reply.to_string().into_bytes(),
        })
        .await
        .unwrap();
        let note = waiting.await.unwrap().unwrap();
        assert!(!note.ok);
        assert_eq!(note.code, Some(1002037));
        match updates.recv().await {
            Ok(Update::Box(v)) => {
                assert_eq!(v.device_id, "box-1");
                assert_eq!(v.replies[0].code, Some(1002037));
            }
            other => panic!("{other:?}"),
        }
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_command_times_out() {
        let (tx, rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let (handle, _task) = start(
            fleet(),
            Recorder::default(),
            rx,
            Duration::from_secs(3),
            shutdown.clone(),
        );
        // The broker link and the page are separate channels: wait until the link is up.
        let (_, mut updates) = handle.subscribe().await.unwrap();
        tx.send(Incoming::Connected {
            broker: "mqtt://127.0.0.1:1883".into(),
        })
        .await
        .unwrap();
        assert!(matches!(updates.recv().await, Ok(Update::Broker(b)) if b.connected));
        let outcome = handle
            .command("box-9".into(), "get_state".into(), json!({}))
            .await;
        assert!(
            matches!(outcome, Err(CommandError::Timeout { .. })),
            "{outcome:?}"
        );
        shutdown.cancel();
    }
}
