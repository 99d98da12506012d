//! The fast paths (`[media]`, docs/workarounds.md) as an operator sees them in the state
//! snapshot of the real binary: on the GStreamer and libsrtp versions they were checked
//! on, each engages — and this test fails, rather than skips, when one silently stops
//! taking (a stream that did not take it is counted and the reason shown). One switch
//! turns them all off.
//!
//! Needs the private network namespace (`./scripts/test.sh`).

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::dashboard::{dashboard, ok, publish_in_rooms, wait_online};
use support::janus::Janus;
use support::mosquitto::Mosquitto;
use support::process::{AgentProcess, Options, config_text};

async fn fast_paths_with(janus: &Janus, extra: &str) -> Value {
    let broker = Mosquitto::start();
    let text = config_text(&broker.url(), &janus.ws_url(), Path::new("@STATE@"), extra);
    let agent = AgentProcess::start(&text, Options::default());
    wait_online(broker.port).await;
    let dash = dashboard(&broker.url()).await;
    let rooms = [
        format!("fp-{}-a", rand::random::<u32>()),
        format!("fp-{}-b", rand::random::<u32>()),
    ];
    publish_in_rooms(&dash, &rooms).await;
    let state = ok(&dash, "get_state", json!({})).await;
    dash.close().await;
    drop(agent);
    state["fast_paths"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_paths_engage_where_checked_and_one_switch_turns_them_off() {
    let janus = Janus::start();
    roomcast::webrtc::init().unwrap();
    let (major, minor, _, _) = gst::version();
    assert!(
        roomcast::media::workarounds::TESTED_GSTREAMER.contains(&(major, minor)),
        "the tests run on a GStreamer the fast paths were checked on"
    );

    // Defaults: congestion control on, so the FEC bypass is not taken (rtpfunnel writes
    // transport-wide sequence numbers into single packets only); everything else is.
    let defaults = fast_paths_with(&janus, "").await;
    println!("defaults: {defaults:#}");
    assert_eq!(defaults["frame_lists"], "engaged", "{defaults}");
    assert_eq!(defaults["shared_segment"], "engaged", "{defaults}");
    assert_eq!(
        defaults["sending_path_shortcut"], "engaged (2 of 2 streams)",
        "{defaults}"
    );
    let fec = defaults["fec_bypass"].as_str().unwrap();
    assert!(
        fec.starts_with(
            "engaged (0 of 2 streams; not taken: the stream uses transport-wide congestion control"
        ),
        "{fec}"
    );
    let srtp = defaults["srtp_primitives"].as_str().unwrap();
    if roomcast::webrtc::srtp_crypto::aes_in_hardware() {
        assert_eq!(srtp, "engaged", "libsrtp 2.5/2.7 with AES instructions");
    } else {
        assert!(srtp.contains("no AES instructions"), "{srtp}");
    }

    // Without congestion control the FEC bypass takes in every stream.
    let no_twcc = fast_paths_with(&janus, "[encoder]\ncongestion_control = false\n").await;
    assert_eq!(
        no_twcc["fec_bypass"], "engaged (2 of 2 streams)",
        "{no_twcc}"
    );

    // One switch turns them all off; a key turns one back on.
    let off = fast_paths_with(
        &janus,
        "[media]\nfast_paths = false\nshared_segment = true\n",
    )
    .await;
    println!("fast_paths = false, shared_segment = true: {off:#}");
    for key in [
        "frame_lists",
        "fec_bypass",
        "sending_path_shortcut",
        "srtp_primitives",
    ] {
        assert_eq!(off[key], "off: turned off in [media]", "{key}: {off}");
    }
    assert_eq!(off["shared_segment"], "engaged", "{off}");
}
