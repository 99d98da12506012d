//! The real `alsasrc`, capturing from ALSA's `file` plugin: a FIFO this test feeds with
//! a 440 Hz tone in real time (S16LE, 48 kHz, mono), so capture is paced like a
//! microphone. No sound card is needed; ALSA reads the device definition from
//! `$XDG_CONFIG_HOME/alsa/asoundrc`, which this test writes. It is a test binary of its
//! own because it sets that variable before GStreamer (and ALSA) start.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use roomcast::engine::{Channel, PublisherConfig, User};
use serde_json::json;
use support::agent::TestAgent;
use support::janus::Janus;
use support::peers::Subscriber;

const ASOUNDRC: &str = r#"
pcm.roomcast_fifo {
	@args [ INFILE ]
	@args.INFILE { type string }
	type file
	slave.pcm null
	file "/dev/null"
	infile $INFILE
	format raw
}
"#;

/// Writes a 440 Hz tone into `fifo` in real time until `stop`.
fn feed_tone(fifo: std::path::PathBuf, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    std::thread::spawn(move || {
        let Ok(mut out) = std::fs::OpenOptions::new().write(true).open(&fifo) else {
            return;
        };
        let start = Instant::now();
        let mut sample: u64 = 0;
        let mut period = 0u32;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            // 10 ms = 480 samples.
            let mut chunk = Vec::with_capacity(960);
            for _ in 0..480 {
                let t = sample as f64 / 48_000.0;
                let v = ((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16;
                chunk.extend_from_slice(&v.to_le_bytes());
                sample += 1;
            }
            if out.write_all(&chunk).is_err() {
                return;
            }
            period += 1;
            let due = start + Duration::from_millis(10) * period;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_alsasrc_captures_a_paced_alsa_device() {
    let dir = support::TempDir::new("alsa");
    std::fs::create_dir_all(dir.path().join("alsa")).unwrap();
    std::fs::write(dir.path().join("alsa/asoundrc"), ASOUNDRC).unwrap();
    // SAFETY: set before GStreamer or ALSA run in this process; nothing else reads the
    // environment concurrently at this point of this single-test binary.
    unsafe { std::env::set_var("XDG_CONFIG_HOME", dir.path()) };
    let fifo = dir.path().join("mic.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    feed_tone(fifo.clone(), stop.clone());

    let janus = Janus::start();
    let device = format!("roomcast_fifo:INFILE={}", fifo.display());
    let agent = TestAgent::start(
        &janus.ws_url(),
        &format!(
            "[sources.aux]\nvideo = \"test\"\nwidth = 640\nheight = 360\naudio = \"{device}\"\n"
        ),
    );
    let user = User::parse("box-17", "Room 101 camera").unwrap();
    agent
        .engine
        .login_room("bigclass", user, None)
        .await
        .unwrap();
    let config = PublisherConfig {
        room_id: Some("bigclass".into()),
    };
    agent
        .engine
        .start_publishing("mic", config, Channel::Aux)
        .await
        .unwrap();
    let sub = Subscriber::start(&janus.ws_url(), "bigclass", "mic").await;
    sub.wait_frames(30, Duration::from_secs(10)).await;

    // Opus at 20 ms frames: about 50 audio packets a second reach Janus, paced.
    let audio_packets = async || -> u64 {
        let sessions = janus.admin("", json!({"janus": "list_sessions"})).await;
        for session in sessions["sessions"].as_array().cloned().unwrap_or_default() {
            let handles = janus
                .admin(&format!("/{session}"), json!({"janus": "list_handles"}))
                .await;
            for handle in handles["handles"].as_array().cloned().unwrap_or_default() {
                let info = janus
                    .admin(
                        &format!("/{session}/{handle}"),
                        json!({"janus": "handle_info"}),
                    )
                    .await;
                if info["info"]["plugin_specific"]["id"] == "mic"
                    && let Some(media) = info["info"]["webrtc"]["media"].as_object()
                    && let Some(audio) = media.values().find(|m| m["type"] == "audio")
                {
                    return audio["stats"]["in"]["packets"].as_u64().unwrap_or(0);
                }
            }
        }
        0
    };
    let before = audio_packets().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let per_second = (audio_packets().await - before) as f64 / 2.0;
    println!("audio packets per second from alsasrc: {per_second:.1}");
    assert!(
        (40.0..=60.0).contains(&per_second),
        "paced capture gives ~50/s, got {per_second}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    agent.stop().await;
}
