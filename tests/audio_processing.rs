//! Two-way classroom audio without echo, end to end: the box plays a far-end teacher (a
//! speech-like 285 Hz sawtooth in bursts, published into the room by an independent peer) on its speaker while it
//! publishes its "microphone" — the simulated room (`audio = "test-room"`): a 190 Hz
//! talker plus what the speaker plays, 6 dB down and 40 ms after the speaker sounds it
//! (its pipeline's latency after the running time it is stamped with) — through the real
//! capture, processing, encoder and WebRTC path. An independent subscriber decodes what
//! the box publishes and measures both tones second by second.
//!
//! Needs the private network namespace (`./scripts/test.sh`).

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::audio_meter::mean_db;
use support::dashboard::{call, dashboard, ok, wait_online};
use support::janus::Janus;
use support::mosquitto::Mosquitto;
use support::peers::{Subscriber, TestPublisher};
use support::process::{AgentProcess, Options, config_text};

/// The meter itself: a tone is measured at its level, and not at the other frequency.
#[test]
fn the_meter_tells_the_two_voices_apart() {
    use support::audio_meter::{FAR_END_HZ, RATE, ToneMeter, to_db};
    let mut meter = ToneMeter::default();
    let samples: Vec<f32> = (0..48_000)
        .map(|n| (0.5 * (2.0 * std::f64::consts::PI * FAR_END_HZ * n as f64 / RATE).sin()) as f32)
        .collect();
    meter.push(&samples);
    let row = &meter.seconds[0];
    assert!((row[0] - to_db(0.25)).abs() < 0.5, "{row:?}");
    assert!(row[1] < -40.0, "{row:?}");
}

/// Far end (column 0) and near end (column 1) levels, dB, for the next `seconds`.
async fn measure(subscriber: &Subscriber, seconds: usize) -> Vec<Vec<f64>> {
    let from = subscriber.seen.tones.lock().unwrap().seconds.len();
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds as u64 + 5);
    loop {
        let rows = subscriber.seen.tones.lock().unwrap().seconds.clone();
        if rows.len() >= from + seconds {
            return rows[from..from + seconds].to_vec();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the subscriber decoded {} s of audio in {seconds} s",
            rows.len() - from
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_rows(label: &str, rows: &[Vec<f64>], far_reference: f64) {
    for (second, row) in rows.iter().enumerate() {
        println!(
            "{label} second {}: far end {:6.1} dB (echo return loss enhancement {:5.1} dB), near end {:6.1} dB",
            second + 1,
            row[0],
            far_reference - row[0],
            row[1]
        );
    }
}

/// Applies `[audio_processing]` = `section` by SIGHUP and waits until it is in place.
async fn reload_processing(
    agent: &AgentProcess,
    dash: &roomcast::control::client::CommandClient,
    section: &str,
) {
    let text = std::fs::read_to_string(&agent.config_path).unwrap();
    let start = text.find("[audio_processing]").expect("the section");
    let end = text[start..].find("\n\n").map_or(text.len(), |n| start + n);
    let changed = format!("{}{section}{}", &text[..start], &text[end..]);
    std::fs::write(&agent.config_path, changed).unwrap();
    let changes_before = agent.log().matches("audio processing changed").count();
    agent.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while agent.log().matches("audio processing changed").count() == changes_before {
        assert!(
            std::time::Instant::now() < deadline,
            "the reload did not change the processing:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let state = ok(dash, "get_state", json!({})).await;
    let active = &state["audio_processing"];
    assert_eq!(active["channels"], json!(["main"]), "{state}");
    for line in section.lines().skip(1) {
        let (key, value) = line.split_once(" = ").unwrap();
        let value: Value = serde_json::from_str(value).unwrap();
        assert_eq!(active[key], value, "{key} in {state}");
    }
}

const SECTION_NO_ECHO_CANCEL: &str = "[audio_processing]\necho_cancel = false";
const SECTION_DEFAULTS: &str = "[audio_processing]\necho_cancel = true\nnoise_suppression = \"moderate\"\ngain_control = true\nhigh_pass_filter = true";
const SECTION_ALL_OFF: &str = "[audio_processing]\necho_cancel = false\nnoise_suppression = \"off\"\ngain_control = false\nhigh_pass_filter = false";

/// The four measurements in one run, switching the processing by SIGHUP (which must not
/// leave the room): the far end is heard back with `echo_cancel = false`; with it on, the
/// far end's level drops (printed per second, from the switch); the near end's level
/// against its unprocessed level while both talk and while it talks alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_is_cancelled_and_the_near_end_is_kept() {
    let janus = Janus::start();
    let broker = Mosquitto::start();
    let text = config_text(
        &broker.url(),
        &janus.ws_url(),
        Path::new("@STATE@"),
        &format!("{SECTION_NO_ECHO_CANCEL}\n\n"),
    )
    .replace("audio = \"test\"", "audio = \"test-room\"");
    let agent = AgentProcess::start(&text, Options::default());
    wait_online(broker.port).await;
    let dash = dashboard(&broker.url()).await;
    let _teacher =
        TestPublisher::start_talking(&janus.ws_url(), "bigclass", "teacher", "Teacher").await;
    ok(&dash, "login_room", json!({"room_id": "bigclass"})).await;
    ok(
        &dash,
        "start_publishing",
        json!({"stream_id": "cam-bigclass", "room_id": "bigclass"}),
    )
    .await;
    let subscriber = Subscriber::start(&janus.ws_url(), "bigclass", "cam-bigclass").await;
    ok(
        &dash,
        "start_playing",
        json!({"stream_id": "teacher", "room_id": "bigclass", "output": "speaker"}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let state = ok(&dash, "get_state", json!({})).await;
    assert_eq!(
        state["audio_processing"]["echo_reference"], true,
        "the speaker plays: {state}"
    );

    // 4. Echo cancellation off: the far end comes back.
    let off = measure(&subscriber, 5).await;
    let far_off = mean_db(&off, 0);
    print_rows("echo_cancel = false:", &off, far_off);

    // 1, 2. On (every stage at its default): printed per second, from the switch.
    let frames = subscriber.seen.frames();
    reload_processing(&agent, &dash, SECTION_DEFAULTS).await;
    let on = measure(&subscriber, 10).await;
    print_rows("defaults (echo_cancel = true):", &on, far_off);
    let far_on = mean_db(&on[2..], 0);
    let near_double_talk = mean_db(&on[2..], 1);

    // The unprocessed reference, both talking.
    reload_processing(&agent, &dash, SECTION_ALL_OFF).await;
    let _settle = measure(&subscriber, 1).await;
    let unprocessed = measure(&subscriber, 5).await;
    print_rows("all off:", &unprocessed, far_off);
    let near_reference = mean_db(&unprocessed, 1);

    // The near end alone, processed.
    ok(&dash, "stop_playing", json!({"stream_id": "teacher"})).await;
    reload_processing(&agent, &dash, SECTION_DEFAULTS).await;
    let _settle = measure(&subscriber, 2).await;
    let single = measure(&subscriber, 5).await;
    print_rows("defaults, far end silent:", &single, far_off);
    let near_single_talk = mean_db(&single, 1);

    let erle = far_off - far_on;
    println!(
        "echo return loss enhancement after 2 s: {erle:.1} dB (far end {far_off:.1} → {far_on:.1} dB); near end: unprocessed {near_reference:.1} dB, processed while both talk {near_double_talk:.1} dB, alone {near_single_talk:.1} dB"
    );
    // The room was never left: video kept coming through every reload.
    assert!(
        subscriber.seen.frames() > frames + 200,
        "video stopped during the reloads"
    );
    let log = agent.log();
    assert!(!log.contains("left the rooms"), "{log}");
    // Silence measures below -45 dB here; the echo, 6 dB under what the speaker plays,
    // about -20 dB.
    assert!(
        far_off > -32.0,
        "with echo_cancel = false the far end must be heard back: far {far_off:.1} dB, near {near_reference:.1} dB"
    );
    // The goals are >= 20 dB and within 3 dB; both are met at the median of runs here
    // (docs/performance.md), with a spread of several dB from run to run on a loaded
    // machine, so CI holds the line where a run cannot pass without a working canceller
    // (about 0 dB) or with the talker suppressed.
    assert!(erle >= 10.0, "echo return loss enhancement {erle:.1} dB");
    for (what, level) in [
        ("while both talk", near_double_talk),
        ("alone", near_single_talk),
    ] {
        assert!(
            level >= near_reference - 6.0,
            "the near end {what}: {level:.1} dB processed against {near_reference:.1} dB unprocessed"
        );
    }
    let state = call(&dash, "get_state", json!({})).await;
    assert_eq!(state["result"]["audio_processing"]["echo_cancel"], true);
    dash.close().await;
    drop(agent);
}
