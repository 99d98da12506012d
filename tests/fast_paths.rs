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

/// The state snapshot of an agent (`extra` config, `options`) publishing into two rooms,
/// and its log.
async fn publishing_state(janus: &Janus, extra: &str, options: Options) -> (Value, String) {
    let broker = Mosquitto::start();
    let text = config_text(&broker.url(), &janus.ws_url(), Path::new("@STATE@"), extra);
    let agent = AgentProcess::start(&text, options);
    wait_online(broker.port).await;
    let dash = dashboard(&broker.url()).await;
    let rooms = [
        format!("fp-{}-a", rand::random::<u32>()),
        format!("fp-{}-b", rand::random::<u32>()),
    ];
    publish_in_rooms(&dash, &rooms).await;
    let state = ok(&dash, "get_state", json!({})).await;
    dash.close().await;
    let log = agent.log();
    drop(agent);
    (state, log)
}

async fn fast_paths_with(janus: &Janus, extra: &str) -> Value {
    let (state, _) = publishing_state(janus, extra, Options::default()).await;
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

    // Defaults (congestion control on): every fast path engaged, in every stream.
    let defaults = fast_paths_with(&janus, "").await;
    println!("defaults: {defaults:#}");
    assert_eq!(defaults["frame_lists"], "engaged", "{defaults}");
    assert_eq!(defaults["shared_segment"], "engaged", "{defaults}");
    for key in ["sending_path_shortcut", "fec_bypass"] {
        assert_eq!(
            defaults[key], "engaged (2 of 2 streams)",
            "{key}: {defaults}"
        );
    }
    let srtp = defaults["srtp_primitives"].as_str().unwrap();
    if roomcast::webrtc::srtp_crypto::aes_in_hardware() {
        assert_eq!(srtp, "engaged", "libsrtp 2.5/2.7 with AES instructions");
    } else {
        assert!(srtp.contains("no AES instructions"), "{srtp}");
    }

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

/// A `dlsym` that answers `srtp_get_version` with libsrtp 2.6.1, a version the SRTP
/// primitives were not checked on, and passes every other name to the real one.
const UNTESTED_LIBSRTP_SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>
static unsigned int version_2_6_1(void) { return (2u << 24) | (6u << 16) | 1u; }
void *dlsym(void *handle, const char *name) {
    static void *(*real)(void *, const char *);
    if (!real) real = (void *(*)(void *, const char *))dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
    if (name && strcmp(name, "srtp_get_version") == 0) return (void *)version_2_6_1;
    return real(handle, name);
}
"#;

/// On a libsrtp version the replacement was not checked on, libsrtp keeps its own
/// primitives: the snapshot and the start-up line say which version was found, and
/// media still flows into the rooms (SRTP on libsrtp's own AES and HMAC).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untested_libsrtp_keeps_its_own_primitives() {
    let dir = support::TempDir::new("libsrtp-shim");
    let source = dir.path().join("shim.c");
    let shim = dir.path().join("shim.so");
    std::fs::write(&source, UNTESTED_LIBSRTP_SHIM).unwrap();
    let built = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&shim)
        .arg(&source)
        .arg("-ldl")
        .status()
        .expect("a C compiler (cc) for the test's libsrtp version shim");
    assert!(built.success());

    let janus = Janus::start();
    let options = Options {
        env: vec![("LD_PRELOAD".into(), shim.display().to_string())],
        ..Options::default()
    };
    let (state, log) = publishing_state(&janus, "", options).await;
    let srtp = state["fast_paths"]["srtp_primitives"]
        .as_str()
        .unwrap_or("");
    assert!(
        srtp.starts_with("off: libsrtp 2.6.1 is not a version"),
        "{state:#}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("fast paths:"))
        .unwrap_or_else(|| panic!("no fast paths line:\n{log}"));
    println!("{line}");
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains("libsrtp 2.6.1 is not a version"), "{line}");
    let publishing = state["publishing"].as_array().unwrap();
    assert_eq!(publishing.len(), 2, "{state:#}");
    for stream in publishing {
        assert_eq!(stream["state"], "Publishing", "{stream}");
    }
}
