//! A bare Janus client for the test peers: raw JSON over a WebSocket and a bare
//! `webrtcbin`. It shares no code with roomcast, so the peers built on it can vouch
//! for roomcast.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use gst::prelude::*;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub fn tx() -> String {
    format!("peer-{}", rand::random::<u64>())
}

/// One WebSocket, one session.
pub struct RawJanus {
    pub session: u64,
    pub to_ws: mpsc::UnboundedSender<Value>,
    from_ws: mpsc::UnboundedReceiver<Value>,
}

impl RawJanus {
    pub async fn connect(ws_url: &str) -> Self {
        gst::init().expect("gst init");
        let mut request = ws_url.into_client_request().expect("ws request");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "janus-protocol".parse().expect("header"),
        );
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("connect to Janus");
        let (mut sink, mut stream) = ws.split();
        let (from_ws_tx, from_ws) = mpsc::unbounded_channel::<Value>();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                if let Message::Text(text) = frame
                    && let Ok(value) = serde_json::from_str::<Value>(&text)
                    && from_ws_tx.send(value).is_err()
                {
                    break;
                }
            }
        });
        let (to_ws, mut to_ws_rx) = mpsc::unbounded_channel::<Value>();
        tokio::spawn(async move {
            while let Some(value) = to_ws_rx.recv().await {
                if sink.send(Message::text(value.to_string())).await.is_err() {
                    break;
                }
            }
        });
        let mut janus = Self {
            session: 0,
            to_ws,
            from_ws,
        };
        let created = janus.call(json!({"janus": "create"})).await;
        janus.session = created["data"]["id"].as_u64().expect("session id");
        let (keepalive, session) = (janus.to_ws.clone(), janus.session);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(20)).await;
                if keepalive
                    .send(json!({"janus": "keepalive", "session_id": session, "transaction": tx()}))
                    .is_err()
                {
                    break;
                }
            }
        });
        janus
    }

    /// Sends a request and waits for its answer (skipping `ack`s).
    pub async fn call(&mut self, mut request: Value) -> Value {
        let t = tx();
        request["transaction"] = json!(t);
        if self.session != 0 {
            request["session_id"] = json!(self.session);
        }
        self.to_ws.send(request).expect("socket open");
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let value = self.from_ws.recv().await.expect("Janus closed the socket");
                if value["transaction"] == t && value["janus"] != "ack" {
                    return value;
                }
            }
        })
        .await
        .expect("Janus answered in time")
    }

    pub async fn attach(&mut self, plugin: &str) -> u64 {
        self.call(json!({"janus": "attach", "plugin": plugin}))
            .await["data"]["id"]
            .as_u64()
            .expect("handle id")
    }

    pub async fn message(&mut self, handle: u64, body: Value, jsep: Option<Value>) -> Value {
        let mut request = json!({"janus": "message", "handle_id": handle, "body": body});
        if let Some(jsep) = jsep {
            request["jsep"] = jsep;
        }
        self.call(request).await
    }

    /// Waits for an unsolicited message matching `want`.
    pub async fn wait_event(&mut self, within: Duration, want: impl Fn(&Value) -> bool) -> Value {
        tokio::time::timeout(within, async {
            loop {
                let value = self.from_ws.recv().await.expect("Janus closed the socket");
                if want(&value) {
                    return value;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no matching Janus event within {within:?}"))
    }

    /// Creates the VideoRoom unless it exists (H.264 + Opus, as roomcast creates them).
    pub async fn ensure_videoroom(&mut self, handle: u64, room: &str) {
        let body = json!({"request": "create", "room": room, "publishers": 16, "videocodec": "h264", "audiocodec": "opus"});
        let reply = self.message(handle, body, None).await;
        let code = reply["plugindata"]["data"]["error_code"].as_i64();
        assert!(
            code.is_none() || code == Some(427),
            "creating {room}: {reply}"
        );
    }

    /// Creates a VideoRoom whose publishers are asked (REMB) for at most `bitrate_bps`.
    pub async fn create_videoroom_capped(&mut self, handle: u64, room: &str, bitrate_bps: u64) {
        let body = json!({"request": "create", "room": room, "publishers": 16, "videocodec": "h264", "audiocodec": "opus", "bitrate": bitrate_bps});
        let reply = self.message(handle, body, None).await;
        assert_eq!(
            reply["plugindata"]["data"]["videoroom"], "created",
            "creating {room}: {reply}"
        );
    }

    /// Drains the socket in the background from now on.
    pub fn drain(mut self) -> mpsc::UnboundedSender<Value> {
        tokio::spawn(async move { while self.from_ws.recv().await.is_some() {} });
        self.to_ws
    }
}

/// A pipeline with a `webrtcbin` whose ICE candidates trickle to `handle`.
pub fn webrtcbin_for(pipeline: &gst::Pipeline, janus: &RawJanus, handle: u64) -> gst::Element {
    let webrtcbin = gst::ElementFactory::make("webrtcbin")
        .property_from_str("bundle-policy", "max-bundle")
        .build()
        .expect("webrtcbin");
    pipeline.add(&webrtcbin).expect("add webrtcbin");
    let (trickle, session) = (janus.to_ws.clone(), janus.session);
    webrtcbin.connect("on-ice-candidate", false, move |values| {
        let index = values[1].get::<u32>().expect("index");
        let candidate = values[2].get::<String>().expect("candidate");
        let _ = trickle.send(
            json!({"janus": "trickle", "session_id": session, "handle_id": handle,
            "transaction": tx(), "candidate": {"candidate": candidate, "sdpMLineIndex": index}}),
        );
        None
    });
    webrtcbin
}

/// Runs a webrtcbin action signal that replies through a promise; the signal is emitted
/// now, the returned future waits for the reply.
pub fn promise_reply(
    webrtcbin: &gst::Element,
    signal: &str,
    args: &[&dyn ToValue],
) -> impl std::future::Future<Output = Option<gst::Structure>> + Send + 'static {
    let (reply_tx, reply_rx) = std::sync::mpsc::channel();
    let promise = gst::Promise::with_change_func(move |reply| {
        let _ = reply_tx.send(reply.ok().flatten().map(|s| s.to_owned()));
    });
    let mut values: Vec<gst::glib::Value> = args.iter().map(|a| a.to_value()).collect();
    values.push(promise.to_value());
    webrtcbin.emit_by_name_with_values(signal, &values);
    drop(values);
    async move {
        tokio::task::spawn_blocking(move || reply_rx.recv_timeout(Duration::from_secs(5)))
            .await
            .expect("join")
            .expect("webrtcbin replied")
    }
}

/// Applies a remote offer and returns our answer's SDP. The answer takes the DTLS
/// server role (`a=setup:passive`) as browsers effectively do by starting DTLS only
/// once ICE is up; webrtcbin as a client can lose its first ClientHello and wait 1 s.
pub async fn answer(webrtcbin: &gst::Element, offer: &str) -> String {
    let sdp = gst_sdp::SDPMessage::parse_buffer(offer.as_bytes()).expect("offer parses");
    let offer = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Offer, sdp);
    let applied = promise_reply(webrtcbin, "set-remote-description", &[&offer]);
    applied.await;
    let created = promise_reply(webrtcbin, "create-answer", &[&None::<gst::Structure>]);
    let reply = created.await.expect("an answer");
    let answer = reply
        .get::<gst_webrtc::WebRTCSessionDescription>("answer")
        .expect("answer");
    let text = answer
        .sdp()
        .as_text()
        .expect("sdp text")
        .replace("a=setup:active", "a=setup:passive");
    let sdp = gst_sdp::SDPMessage::parse_buffer(text.as_bytes()).expect("answer parses");
    let answer = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, sdp);
    let applied = promise_reply(webrtcbin, "set-local-description", &[&answer]);
    applied.await;
    text
}
