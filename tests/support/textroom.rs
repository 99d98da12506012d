//! An independent TextRoom participant (see `janus_ws`).

use std::time::Duration;

use gst::prelude::*;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::janus_ws::{RawJanus, answer, webrtcbin_for};

pub struct TextRoomClient {
    pub username: String,
    room: String,
    pipeline: gst::Pipeline,
    channel: gst_webrtc::WebRTCDataChannel,
    incoming: mpsc::UnboundedReceiver<Value>,
    transaction: u64,
}

impl TextRoomClient {
    /// Connects to Janus, sets up a TextRoom PeerConnection and joins `room`.
    pub async fn join(ws_url: &str, room: &str, username: &str) -> Self {
        let mut janus = RawJanus::connect(ws_url).await;
        let handle = janus.attach("janus.plugin.textroom").await;
        let setup = janus
            .message(handle, json!({"request": "setup"}), None)
            .await;
        let offer = setup["jsep"]["sdp"]
            .as_str()
            .expect("setup offer")
            .to_owned();

        let pipeline = gst::Pipeline::new();
        let webrtcbin = webrtcbin_for(&pipeline, &janus, handle);
        pipeline.set_state(gst::State::Playing).expect("play");
        let answer_sdp = answer(&webrtcbin, &offer).await;
        janus
            .message(
                handle,
                json!({"request": "ack"}),
                Some(json!({"type": "answer", "sdp": answer_sdp})),
            )
            .await;

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
        let _socket = janus.drain();

        let mut client = Self {
            username: username.to_owned(),
            room: room.to_owned(),
            pipeline,
            channel,
            incoming,
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
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl Drop for TextRoomClient {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
