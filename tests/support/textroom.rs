//! An independent TextRoom participant, written for the tests on raw WebSocket JSON and
//! a bare `webrtcbin` — it shares no code with roomcast, so it can vouch for it.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use gst::prelude::*;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub struct TextRoomClient {
    pub username: String,
    room: String,
    pipeline: gst::Pipeline,
    channel: gst_webrtc::WebRTCDataChannel,
    incoming: mpsc::UnboundedReceiver<Value>,
    to_ws: mpsc::UnboundedSender<Value>,
    transaction: u64,
}

fn tx() -> String {
    format!("peer-{}", rand::random::<u64>())
}

impl TextRoomClient {
    /// Connects to Janus, sets up a TextRoom PeerConnection and joins `room`.
    pub async fn join(ws_url: &str, room: &str, username: &str) -> Self {
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

        // Janus → us: replies by transaction, and handle events.
        let (from_ws_tx, mut from_ws) = mpsc::unbounded_channel::<Value>();
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

        async fn answer(from_ws: &mut mpsc::UnboundedReceiver<Value>, t: &str) -> Value {
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    let value = from_ws.recv().await.expect("Janus closed the socket");
                    if value["transaction"] == t && value["janus"] != "ack" {
                        return value;
                    }
                }
            })
            .await
            .expect("Janus answered in time")
        }

        let t = tx();
        to_ws
            .send(json!({"janus": "create", "transaction": t}))
            .unwrap();
        let session = answer(&mut from_ws, &t).await["data"]["id"]
            .as_u64()
            .expect("session id");
        let t = tx();
        to_ws
            .send(json!({"janus": "attach", "session_id": session, "plugin": "janus.plugin.textroom", "transaction": t}))
            .unwrap();
        let handle = answer(&mut from_ws, &t).await["data"]["id"]
            .as_u64()
            .expect("handle id");
        let keepalive = to_ws.clone();
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
        let t = tx();
        to_ws
            .send(
                json!({"janus": "message", "session_id": session, "handle_id": handle,
                "transaction": t, "body": {"request": "setup"}}),
            )
            .unwrap();
        let offer = answer(&mut from_ws, &t).await["jsep"]["sdp"]
            .as_str()
            .expect("setup offer")
            .to_owned();

        let pipeline = gst::Pipeline::new();
        let webrtcbin = gst::ElementFactory::make("webrtcbin")
            .property_from_str("bundle-policy", "max-bundle")
            .build()
            .expect("webrtcbin");
        pipeline.add(&webrtcbin).unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let trickle = to_ws.clone();
        webrtcbin.connect("on-ice-candidate", false, move |values| {
            let index = values[1].get::<u32>().unwrap();
            let candidate = values[2].get::<String>().unwrap();
            let _ = trickle.send(json!({"janus": "trickle", "session_id": session, "handle_id": handle,
                "transaction": tx(), "candidate": {"candidate": candidate, "sdpMLineIndex": index}}));
            None
        });

        let sdp = gst_sdp::SDPMessage::parse_buffer(offer.as_bytes()).unwrap();
        let offer =
            gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Offer, sdp);
        webrtcbin.emit_by_name::<()>("set-remote-description", &[&offer, &None::<gst::Promise>]);
        let (reply_tx, reply_rx) = std::sync::mpsc::channel();
        let promise = gst::Promise::with_change_func(move |reply| {
            let _ = reply_tx.send(reply.ok().flatten().map(|s| s.to_owned()));
        });
        webrtcbin.emit_by_name::<()>("create-answer", &[&None::<gst::Structure>, &promise]);
        let reply =
            tokio::task::spawn_blocking(move || reply_rx.recv_timeout(Duration::from_secs(5)))
                .await
                .unwrap()
                .expect("answer created")
                .expect("answer reply");
        let answer_desc = reply
            .get::<gst_webrtc::WebRTCSessionDescription>("answer")
            .expect("answer in reply");
        webrtcbin.emit_by_name::<()>(
            "set-local-description",
            &[&answer_desc, &None::<gst::Promise>],
        );
        let answer_sdp = answer_desc.sdp().as_text().unwrap();
        let t = tx();
        to_ws
            .send(json!({"janus": "message", "session_id": session, "handle_id": handle, "transaction": t,
                "body": {"request": "ack"}, "jsep": {"type": "answer", "sdp": answer_sdp}}))
            .unwrap();
        answer(&mut from_ws, &t).await;

        let channel = webrtcbin
            .emit_by_name::<Option<gst_webrtc::WebRTCDataChannel>>(
                "create-data-channel",
                &[&"JanusDataChannel", &None::<gst::Structure>],
            )
            .expect("data channel");
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        channel.connect_on_message_string(move |_, text| {
            if let Some(value) = text.and_then(|t| serde_json::from_str::<Value>(t).ok()) {
                let _ = incoming_tx.send(value);
            }
        });
        let (open_tx, mut open_rx) = mpsc::unbounded_channel();
        channel.connect_on_open(move |_| {
            let _ = open_tx.send(());
        });
        tokio::time::timeout(Duration::from_secs(10), open_rx.recv())
            .await
            .expect("the test peer's data channel opened");
        // Drain WebSocket events in the background (they are not needed here).
        tokio::spawn(async move { while from_ws.recv().await.is_some() {} });

        let mut client = Self {
            username: username.to_owned(),
            room: room.to_owned(),
            pipeline,
            channel,
            incoming,
            to_ws,
            transaction: 0,
        };
        let joined = client
            .request(json!({"textroom": "join", "room": room, "username": username, "display": username}))
            .await;
        assert_eq!(
            joined["textroom"], "success",
            "test peer joined {room}: {joined}"
        );
        client
    }

    async fn request(&mut self, mut body: Value) -> Value {
        self.transaction += 1;
        let t = format!("{}-{}", self.username, self.transaction);
        body["transaction"] = json!(t);
        self.channel
            .send_string_full(Some(&body.to_string()))
            .expect("send on data channel");
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let value = self.incoming.recv().await.expect("data channel closed");
                if value["transaction"] == t {
                    return value;
                }
            }
        })
        .await
        .expect("TextRoom answered")
    }

    /// Sends a public message to the room.
    pub async fn say(&mut self, text: &str) {
        let room = self.room.clone();
        let reply = self
            .request(json!({"textroom": "message", "room": room, "text": text, "ack": true}))
            .await;
        assert_eq!(reply["textroom"], "success", "{reply}");
    }

    /// Waits for a message event from `from` and returns its text.
    pub async fn next_message_from(&mut self, from: &str, within: Duration) -> Option<String> {
        tokio::time::timeout(within, async {
            loop {
                let value = self.incoming.recv().await?;
                if value["textroom"] == "message" && value["from"] == from {
                    return value["text"].as_str().map(str::to_owned);
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    pub fn close(&self) {
        let _ = self
            .to_ws
            .send(json!({"janus": "destroy", "transaction": tx()}));
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl Drop for TextRoomClient {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
