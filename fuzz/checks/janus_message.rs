//! The Janus message decoder: what roomcast does with a text frame from the Janus
//! WebSocket (`Incoming`, then the plugin data as VideoRoom or TextRoom answers and
//! events, publishers' `display`) and with a message on the TextRoom data channel
//! (`TextEvent`, the custom-command envelope, Janus's dates). Every step must end in a
//! value or an ignored message, never a panic.
//!
//! SDP from Janus is not parsed by roomcast: it goes as text to GStreamer's C parser
//! (`gst_sdp_message_parse_buffer`) inside the WebRTC peer, which is not fuzzed here.
//!
//! Shared by the fuzz target and the root test suite (`tests/fuzz_seeds.rs`), which
//! replays the seeds and every past crash on each `cargo test`.

use roomcast::rooms::janus::protocol::{
    CustomCommandEnvelope, Incoming, PluginData, TextEvent, TextRoomApi, VideoRoom,
    parse_janus_date, text_user, user_of_feed,
};

pub fn check(data: &[u8]) {
    // Both arrive as WebSocket / data-channel text: only UTF-8 reaches the decoders.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    janus_frame(text);
    textroom_message(text);
}

fn janus_frame(text: &str) {
    let Ok(incoming) = serde_json::from_str::<Incoming>(text) else {
        return;
    };
    match incoming {
        Incoming::Success {
            plugindata: Some(data),
            ..
        } => plugin(&data),
        Incoming::Event {
            plugindata, jsep, ..
        } => {
            plugin(&plugindata);
            if let Some(jsep) = jsep {
                let _ = jsep.sdp.replace("a=setup:active", "a=setup:passive");
            }
        }
        _ => {}
    }
}

fn plugin(data: &PluginData) {
    let _ = data.error();
    if let Ok(videoroom) = serde_json::from_value::<VideoRoom>(data.data.clone()) {
        match videoroom {
            VideoRoom::Joined { publishers, .. } => {
                for p in publishers {
                    let _ = user_of_feed(&p.id, p.display.as_deref());
                }
            }
            VideoRoom::Event {
                publishers,
                unpublished,
                leaving,
                ..
            } => {
                for p in publishers.unwrap_or_default() {
                    let _ = user_of_feed(&p.id, p.display.as_deref());
                }
                for gone in [unpublished, leaving].into_iter().flatten() {
                    let _ = gone.as_str();
                }
            }
            _ => {}
        }
    }
    if let Ok(TextRoomApi::Success {
        participants: Some(participants),
        ..
    }) = serde_json::from_value::<TextRoomApi>(data.data.clone())
    {
        for p in &participants {
            let _ = text_user(p);
        }
    }
}

fn textroom_message(text: &str) {
    let Ok(event) = serde_json::from_str::<TextEvent>(text) else {
        return;
    };
    match event {
        TextEvent::Success {
            participants: Some(participants),
            ..
        } => {
            for p in &participants {
                let _ = text_user(p);
            }
        }
        TextEvent::Message { date, text, .. } | TextEvent::Whisper { date, text, .. } => {
            let _ = serde_json::from_str::<CustomCommandEnvelope>(&text);
            if let Some(ms) = date.as_deref().and_then(parse_janus_date) {
                // Janus dates have whole seconds.
                assert!(ms % 1000 == 0);
            }
        }
        TextEvent::Announcement { date, .. } => {
            let _ = date.as_deref().and_then(parse_janus_date);
        }
        _ => {}
    }
}
