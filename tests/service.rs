//! roomcast as a systemd service: the hardened unit (systemd-analyze), the notify
//! protocol as systemd would see it (a unix datagram socket bound here, NOTIFY_SOCKET
//! and WATCHDOG_USEC set, `roomcast run` as a real process), signals and their timing,
//! SIGHUP reloads, the persisted state across restarts, and that no secret is ever
//! logged or saved. Tests with Janus need the private network namespace
//! (`./scripts/test.sh`).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use roomcast::control::client::CommandClient;
use serde_json::{Value, json};
use support::dashboard::{dashboard, ok, topics, wait_online};
use support::janus::Janus;
use support::mosquitto::Mosquitto;
use support::mqtt::Observer;
use support::process::{AgentProcess, Options, config_text};

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Polls get_state until `done` holds; returns the state and how long it took.
async fn wait_state(
    dash: &CommandClient,
    what: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let started = Instant::now();
    loop {
        if let Ok(Ok(reply)) =
            tokio::time::timeout(Duration::from_secs(2), dash.request("get_state", json!({}))).await
            && reply["ok"] == true
            && done(&reply["result"])
        {
            return (reply["result"].clone(), started.elapsed());
        }
        assert!(
            started.elapsed() < within,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rooms_of(state: &Value) -> Vec<(String, String)> {
    state["rooms"]
        .as_array()
        .map(|rooms| {
            rooms
                .iter()
                .map(|r| {
                    (
                        r["room_id"].as_str().unwrap_or_default().to_owned(),
                        r["state"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn all_up(state: &Value, rooms: &[&str], publishing: usize) -> bool {
    let list = rooms_of(state);
    list.len() == rooms.len()
        && rooms
            .iter()
            .all(|r| list.iter().any(|(id, s)| id == r && s == "Logined"))
        && state["publishing"]
            .as_array()
            .is_some_and(|p| p.len() == publishing && p.iter().all(|s| s["state"] == "Publishing"))
}

/// Starts Janus, mosquitto and the agent process; logs in to `rooms` and publishes the
/// main source into each.
async fn agent_in_rooms(
    janus: &Janus,
    broker: &Mosquitto,
    options: Options,
    rooms: &[&str],
) -> (AgentProcess, CommandClient) {
    let text = config_text(&broker.url(), &janus.ws_url(), Path::new("@STATE@"), "");
    let agent = AgentProcess::start(&text, options);
    wait_online(broker.port).await;
    let dash = dashboard(&broker.url()).await;
    support::dashboard::publish_in_rooms(&dash, rooms).await;
    (agent, dash)
}

// ---- the unit --------------------------------------------------------------------

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("systemd-analyze (systemd 252) is installed: apt-get install systemd")
}

#[test]
fn the_unit_rates_2_0_or_lower_and_verifies_clean() {
    let unit = repo("systemd/roomcast.service");
    let out = systemd_analyze(&["security", "--offline=yes", unit.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    let overall = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for roomcast.service: ")
                .nth(1)
        })
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"));
    let exposure: f64 = overall
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read {overall:?}"));
    println!("systemd-analyze security: exposure {exposure} ({overall})");
    assert!(exposure <= 2.0, "exposure {exposure} > 2.0:\n{text}");

    // verify needs ExecStart's binary: the same unit, pointing at the one just built.
    let dir = support::TempDir::new("unit");
    let text = std::fs::read_to_string(&unit).unwrap();
    let rendered = text.replace("/usr/bin/roomcast", env!("CARGO_BIN_EXE_roomcast"));
    assert_ne!(rendered, text, "the unit runs /usr/bin/roomcast");
    let copy = dir.path().join("roomcast.service");
    std::fs::write(&copy, rendered).unwrap();
    let out = systemd_analyze(&["verify", copy.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify failed: {stderr}");
    assert!(
        stderr.trim().is_empty(),
        "verify is not clean (unknown keys are only warnings): {stderr}"
    );

    // What the issue asks of it, literally.
    for line in [
        "Type=notify",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "User=roomcast",
        "SupplementaryGroups=video audio",
        "DevicePolicy=closed",
        "DeviceAllow=char-video4linux rw",
        "DeviceAllow=char-alsa rw",
        "DeviceAllow=char-drm rw",
        "ProtectSystem=strict",
        "StateDirectory=roomcast",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        "SystemCallFilter=@system-service",
        // Issue 18: the process is bounded and leaves no core file with secrets.
        "MemoryHigh=384M",
        "MemoryMax=512M",
        "TasksMax=512",
        "LimitCORE=0",
    ] {
        assert!(text.lines().any(|l| l == line), "the unit lacks {line}");
    }
    // The .deb makes the user the unit runs as, in the groups it names.
    let postinst = std::fs::read_to_string(repo("debian/postinst")).unwrap();
    assert!(postinst.contains("adduser --quiet --system --group"));
    assert!(postinst.contains("for group in video audio"));
}

// ---- notify ------------------------------------------------------------------------

/// READY once up, STATUS people read, WATCHDOG at WATCHDOG_USEC/2, STOPPING on SIGTERM
/// and an exit within 3 s that left every room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_ready_status_watchdog_and_stopping() {
    let janus = Janus::start();
    let broker = Mosquitto::start();
    let text = config_text(&broker.url(), &janus.ws_url(), Path::new("@STATE@"), "");
    let agent = AgentProcess::start(
        &text,
        Options {
            notify: true,
            watchdog_usec: Some(2_000_000),
            ..Options::default()
        },
    );
    let (i, ready) =
        agent.wait_notification("READY=1", 0, Duration::from_secs(20), |n| n.has("READY=1"));
    let ready_after = ready.at - agent.started;
    assert_eq!(
        i,
        0,
        "READY=1 is the first message: {:?}",
        agent.notifications()
    );
    assert_eq!(ready.status(), Some("no rooms"));
    println!(
        "READY=1 {} ms after the process started",
        ready_after.as_millis()
    );

    let dash = dashboard(&broker.url()).await;
    support::dashboard::publish_in_rooms(&dash, &["bigclass", "group-3"]).await;
    let (_, status) = agent.wait_notification(
        "STATUS with two rooms publishing",
        0,
        Duration::from_secs(10),
        |n| n.status() == Some("2 rooms (bigclass, group-3), publishing main ×2"),
    );
    println!("STATUS={}", status.status().unwrap_or_default());

    // Pings every WATCHDOG_USEC/2 = 1 s, each after a liveness check, never 2 s apart.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let pings: Vec<Instant> = agent
        .notifications()
        .iter()
        .filter(|n| n.has("WATCHDOG=1"))
        .map(|n| n.at)
        .collect();
    assert!(pings.len() >= 6, "{} pings", pings.len());
    assert!(pings[0] >= ready.at, "no ping before READY");
    let gaps: Vec<u128> = pings
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    println!("watchdog pings: {} , gaps {gaps:?} ms", pings.len());
    assert!(
        gaps.iter().all(|g| (700..=1500).contains(g)),
        "pings every ~1 s: {gaps:?}"
    );

    let count = agent.notifications().len();
    let stop = Instant::now();
    agent.signal(libc::SIGTERM);
    let mut agent = agent;
    let status = agent
        .wait_exit(Duration::from_secs(3))
        .unwrap_or_else(|| panic!("exit within 3 s of SIGTERM; log:\n{}", agent.log()));
    let exited = stop.elapsed();
    println!("SIGTERM: exited after {} ms", exited.as_millis());
    assert!(status.success(), "{status:?}\n{}", agent.log());
    let (_, stopping) = agent.wait_notification("STOPPING=1", count, Duration::from_secs(1), |n| {
        n.has("STOPPING=1")
    });
    assert!(stopping.at >= stop);
    // Every room was left cleanly on Janus, and the rooms are remembered for next time.
    for room in ["bigclass", "group-3"] {
        assert!(
            janus.textroom_participants(room).await.is_empty(),
            "{room} left"
        );
    }
    let saved = agent.state_file();
    let saved_rooms: Vec<&str> = saved.rooms.iter().map(|r| r.room_id.as_str()).collect();
    assert_eq!(saved_rooms, ["bigclass", "group-3"]);
    assert_eq!(saved.publishing.len(), 2);
    dash.close().await;
}

/// The pings come only from a real liveness check: a stalled engine task, or a pipeline
/// that stops encoding without an error, stops them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_engine_or_a_wedged_pipeline_stops_the_watchdog() {
    let janus = Janus::start();
    let broker = Mosquitto::start();
    let (mut agent, dash) = agent_in_rooms(
        &janus,
        &broker,
        Options {
            notify: true,
            watchdog_usec: Some(2_000_000),
            faults: true,
            ..Options::default()
        },
        &["bigclass"],
    )
    .await;
    let pings_since = |agent: &AgentProcess, since: Instant| -> Vec<Instant> {
        agent
            .notifications()
            .iter()
            .filter(|n| n.has("WATCHDOG=1") && n.at >= since)
            .map(|n| n.at)
            .collect()
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(pings_since(&agent, Instant::now() - Duration::from_secs(3)).len() >= 2);

    // The engine task stops serving for 6 s (the fault socket's hook).
    let stalled = Instant::now();
    assert_eq!(agent.fault("stall-engine 6"), "ok");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let pings = pings_since(&agent, stalled);
    let during: Vec<u128> = pings
        .iter()
        .map(|t| (*t - stalled).as_millis())
        .filter(|ms| (1100..6000).contains(ms))
        .collect();
    assert!(
        during.is_empty(),
        "pings while the engine was stuck: {during:?}"
    );
    let resumed = pings
        .iter()
        .find(|t| **t - stalled >= Duration::from_secs(6))
        .unwrap_or_else(|| panic!("pings resume when the engine serves again\n{}", agent.log()));
    println!(
        "engine stalled for 6 s: pings stopped, resumed {} ms after the stall began",
        (*resumed - stalled).as_millis()
    );
    assert!(
        agent
            .log()
            .contains("NOT telling systemd that roomcast is alive: the room engine did not answer")
    );

    // The capture pipeline wedges: PLAYING, no error, no frames.
    let wedged = Instant::now();
    assert_eq!(agent.fault("source-stall main"), "ok");
    tokio::time::sleep(Duration::from_secs(9)).await;
    let last = pings_since(&agent, wedged).last().copied();
    let stopped_after = last.map_or(Duration::ZERO, |t| t - wedged);
    println!(
        "pipeline wedged: last ping {} ms after (STALL_AFTER 5 s + one interval)",
        stopped_after.as_millis()
    );
    assert!(
        stopped_after <= Duration::from_millis(6500),
        "pings went on for {stopped_after:?} with a wedged pipeline"
    );
    assert!(
        Instant::now() - last.unwrap_or(wedged) >= Duration::from_secs(2),
        "no ping for longer than WATCHDOG_USEC: systemd would restart it"
    );
    assert!(agent.log().contains("source `main` has encoded no frame"));

    // SIGTERM still ends it in time, wedged pipeline and all.
    let stop = Instant::now();
    agent.signal(libc::SIGTERM);
    assert!(
        agent.wait_exit(Duration::from_secs(3)).is_some(),
        "exit within 3 s\n{}",
        agent.log()
    );
    println!(
        "SIGTERM with a wedged pipeline: exited after {} ms",
        stop.elapsed().as_millis()
    );
    dash.close().await;
}

/// First SIGTERM: leave the rooms and exit within 3 s even when Janus does not answer;
/// a second one: exit at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_stop_in_time_even_when_janus_hangs() {
    let janus = Janus::start();
    let broker = Mosquitto::start();
    let (mut agent, dash) = agent_in_rooms(
        &janus,
        &broker,
        Options::default(),
        &["bigclass", "group-3"],
    )
    .await;
    dash.close().await;
    let janus_pid = janus.pid().expect("janus runs") as i32;
    // SAFETY: signals to the Janus child this test started.
    unsafe { libc::kill(janus_pid, libc::SIGSTOP) };

    let stop = Instant::now();
    agent.signal(libc::SIGTERM);
    let status = agent
        .wait_exit(Duration::from_secs(3))
        .unwrap_or_else(|| panic!("exit within 3 s of SIGTERM; log:\n{}", agent.log()));
    let first = stop.elapsed();
    println!(
        "SIGTERM with Janus frozen: exited {} after {} ms",
        status,
        first.as_millis()
    );
    assert!(status.success());
    // The engine cannot leave the rooms of a frozen Janus: its share of the stop budget
    // runs out, and the session is closed anyway.
    assert!(
        agent.log().contains("closing the Janus session anyway"),
        "{}",
        agent.log()
    );

    // Again, and a second signal 300 ms after the first: out at once.
    agent.spawn();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stop = Instant::now();
    agent.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = Instant::now();
    agent.signal(libc::SIGTERM);
    let status = agent
        .wait_exit(Duration::from_secs(1))
        .expect("exit at once on the second signal");
    let after_second = second.elapsed();
    println!(
        "second SIGTERM: exited {status} {} ms after it ({} ms after the first)",
        after_second.as_millis(),
        stop.elapsed().as_millis()
    );
    assert_eq!(status.code(), Some(130), "{}", agent.log());
    assert!(after_second < Duration::from_millis(200));
    unsafe { libc::kill(janus_pid, libc::SIGCONT) };
}

fn rewrite(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from} not in the config");
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

async fn wait_log(agent: &AgentProcess, needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !agent.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "the log never said {needle:?}:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGHUP: a broken file is refused and nothing is disturbed; an MQTT-only change
/// restarts control only; any other change restarts rooms and media with the same rooms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_refuses_a_broken_file_and_applies_a_valid_one() {
    let janus = Janus::start();
    let broker = Mosquitto::start();
    let rooms = ["bigclass", "group-3"];
    let (agent, dash) = agent_in_rooms(
        &janus,
        &broker,
        Options {
            notify: true,
            ..Options::default()
        },
        &rooms,
    )
    .await;
    wait_state(
        &dash,
        "both rooms publishing",
        Duration::from_secs(20),
        |s| all_up(s, &rooms, 2),
    )
    .await;
    let t = topics();
    let mut observer = Observer::connect(broker.port, "reload-watcher").await;
    observer.subscribe(&t.events).await;
    observer.subscribe(&t.status).await;
    observer.drain();
    let config = agent.config_path.clone();
    let good = std::fs::read_to_string(&config).unwrap();

    // A broken file: refused, the running configuration is kept, nothing moves.
    rewrite(&config, "max_rooms = 5", "max_rooms = 500");
    agent.signal(libc::SIGHUP);
    wait_log(&agent, "reload refused", Duration::from_secs(5)).await;
    assert!(
        agent
            .log()
            .contains("`rooms.max_rooms`: 500 is out of range: allowed 1 to 32"),
        "{}",
        agent.log()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen: Vec<String> = observer
        .drain()
        .iter()
        .filter(|m| !(m.topic == t.status && m.retain))
        .map(|m| format!("{} {}", m.topic, m.text()))
        .collect();
    assert!(seen.is_empty(), "nothing happened to the rooms: {seen:?}");
    let (state, _) = wait_state(&dash, "still up", Duration::from_secs(5), |s| {
        all_up(s, &rooms, 2)
    })
    .await;
    assert_eq!(state["room_mode"], "multi");

    // MQTT only: control reconnects, the rooms are not touched.
    std::fs::write(&config, good.replace("keepalive_s = 5", "keepalive_s = 7")).unwrap();
    let before = agent.notifications().len();
    agent.signal(libc::SIGHUP);
    wait_log(
        &agent,
        "reload: changed mqtt.keepalive_s; restarting MQTT control only",
        Duration::from_secs(5),
    )
    .await;
    observer
        .next_where(Duration::from_secs(10), |m| {
            m.topic == t.status && m.text() == "online"
        })
        .await
        .expect("online again");
    let (i, _) = agent.wait_notification("RELOADING=1", before, Duration::from_secs(5), |n| {
        n.has("RELOADING=1")
    });
    agent.wait_notification(
        "READY=1 after the reload",
        i,
        Duration::from_secs(10),
        |n| n.has("READY=1"),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events: Vec<Value> = observer
        .drain()
        .iter()
        .filter(|m| m.topic == t.events)
        .map(|m| m.json())
        .collect();
    assert!(events.is_empty(), "no room disturbed: {events:?}");
    wait_state(&dash, "still up", Duration::from_secs(5), |s| {
        all_up(s, &rooms, 2)
    })
    .await;

    // Media: the agent leaves and rejoins the same rooms with the new settings.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("framerate = 15", "framerate = 10")).unwrap();
    let reload = Instant::now();
    agent.signal(libc::SIGHUP);
    wait_log(
        &agent,
        "reload: changed sources.main.framerate; restarting rooms, media and control",
        Duration::from_secs(5),
    )
    .await;
    // The restored rooms first: right after the log line the state may still be the
    // old one, all up, before the agent has left its rooms.
    let mut restored: Vec<String> = Vec::new();
    while restored.len() < rooms.len() {
        let Some(event) = observer
            .next_where(Duration::from_secs(30), |m| {
                m.topic == t.events && m.json()["event"] == "room_restored"
            })
            .await
        else {
            break;
        };
        restored.push(
            event.json()["room_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    restored.sort();
    assert_eq!(restored, rooms, "room_restored for each room");
    let (_, back) = wait_state(&dash, "both rooms back", Duration::from_secs(30), |s| {
        all_up(s, &rooms, 2)
    })
    .await;
    let took = reload.elapsed();
    println!(
        "reload with a media change: rooms publishing again {} ms after SIGHUP",
        took.as_millis().max(back.as_millis())
    );
    for room in rooms {
        let users: Vec<Value> = janus.textroom_participants(room).await;
        assert_eq!(users.len(), 1, "{room}: exactly one box-17: {users:?}");
    }
    observer.close().await;
    dash.close().await;
}

/// A box that boots without network (no broker, no Janus) still becomes ready, and a
/// corrupt state file is set aside, never a crash; it stops without waiting for the
/// broker it never reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_without_network_and_a_corrupt_state_file_is_set_aside() {
    support::init_logs();
    let unreachable = format!("127.0.0.1:{}", support::free_port());
    let text = config_text(
        &format!("mqtt://{unreachable}"),
        &format!("ws://{unreachable}"),
        Path::new("@STATE@"),
        "",
    );
    let mut agent = AgentProcess::prepare(
        &text,
        Options {
            notify: true,
            ..Options::default()
        },
    );
    std::fs::create_dir_all(&agent.state_dir).unwrap();
    std::fs::write(
        agent.state_dir.join("state.json"),
        b"{\"version\": 1, \"rooms\": [{\"room_",
    )
    .unwrap();
    agent.spawn();
    let (_, ready) =
        agent.wait_notification("READY=1", 0, Duration::from_secs(20), |n| n.has("READY=1"));
    println!(
        "READY=1 without broker or Janus {} ms after the start",
        (ready.at - agent.started).as_millis()
    );
    let log = agent.log();
    assert!(log.contains("set aside as"), "{log}");
    let aside: Vec<String> = std::fs::read_dir(&agent.state_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    agent.signal(libc::SIGTERM);
    let status = agent
        .wait_exit(Duration::from_secs(3))
        .expect("exit within 3 s");
    assert!(status.success(), "{}", agent.log());
    // With no broker to say `offline` to, the stop does not wait for one.
    let log = agent.log();
    assert!(log.contains("no broker connected"), "{log}");
    assert!(!log.contains("stopping took longer"), "{log}");
}

/// Secrets — the broker password, Janus's api_secret, token and admin_key, a room pin —
/// appear in no log line (trace level, JSON) and in no saved state; a room joined with a
/// pin is not rejoined after a restart (its pin was never kept) and says so with
/// 1002033. The JSON log's spans name the room and the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_logged_or_saved_and_pin_rooms_say_why_they_are_not_rejoined() {
    let secrets = [
        "api-secret-S1x7",
        "janus-token-S2q9",
        "admin-key-S3w4",
        "mqtt-password-S4z2",
        "room-pin-S5k8",
    ];
    let janus = Janus::start_with(&format!("api_secret = \"{}\"", secrets[0]));
    let broker = Mosquitto::start();
    let extra = format!(
        "api_secret = \"{}\"\ntoken = \"{}\"\nadmin_key = \"{}\"",
        secrets[0], secrets[1], secrets[2]
    );
    let text = config_text(&broker.url(), &janus.ws_url(), Path::new("@STATE@"), &extra).replace(
        "keepalive_s = 5",
        &format!(
            "keepalive_s = 5\nusername = \"box-17\"\npassword = \"{}\"",
            secrets[3]
        ),
    );
    let mut agent = AgentProcess::start(
        &text,
        Options {
            rust_log: Some("trace".into()),
            args: vec!["--log-format".into(), "json".into()],
            ..Options::default()
        },
    );
    wait_online(broker.port).await;
    let dash = dashboard(&broker.url()).await;
    ok(&dash, "login_room", json!({"room_id": "bigclass"})).await;
    ok(
        &dash,
        "login_room",
        json!({"room_id": "staff", "token": secrets[4]}),
    )
    .await;
    ok(
        &dash,
        "start_publishing",
        json!({"stream_id": "cam-big", "room_id": "bigclass"}),
    )
    .await;
    ok(
        &dash,
        "send_broadcast_message",
        json!({"room_id": "staff", "message": "hello"}),
    )
    .await;
    let saved = wait_for_file(&agent, |s| s.rooms.len() == 2 && s.publishing.len() == 1).await;
    assert!(
        saved
            .rooms
            .iter()
            .any(|r| r.room_id.as_str() == "staff" && r.had_token)
    );

    // kill -9, then start again: bigclass comes back, staff cannot without its pin.
    let mut observer = Observer::connect(broker.port, "restore-watcher").await;
    observer.subscribe(&topics().events).await;
    agent.kill9();
    let restarted = Instant::now();
    agent.spawn();
    let (_, took) = wait_state(&dash, "bigclass back", Duration::from_secs(30), |s| {
        all_up(s, &["bigclass"], 1)
    })
    .await;
    println!(
        "after kill -9: bigclass publishing again {} ms after the restart",
        took.max(restarted.elapsed()).as_millis()
    );
    let failed = observer
        .next_where(Duration::from_secs(10), |m| {
            let e = m.json();
            e["room_id"] == "staff" && e["reason"] == "LoginFailed"
        })
        .await
        .expect("staff LoginFailed")
        .json();
    assert_eq!(failed["error_code"], 1002033, "{failed}");
    assert!(
        failed["error_message"]
            .as_str()
            .unwrap_or_default()
            .contains("which roomcast never stores"),
        "{failed}"
    );
    let saved = wait_for_file(&agent, |s| s.rooms.len() == 1).await;
    assert_eq!(saved.rooms[0].room_id.as_str(), "bigclass");

    let state_text = std::fs::read_to_string(agent.state_dir.join("state.json")).unwrap();
    let logs = agent.all_logs();
    for secret in secrets {
        assert!(!logs.contains(secret), "{secret} was logged");
        assert!(!state_text.contains(secret), "{secret} was saved");
    }
    // Every line is JSON; RUST_LOG=trace reached the WebSocket crate (its debug lines
    // are there) but not its trace lines, which hold whole frames with the secrets.
    let lines: Vec<Value> = logs
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 50, "{} JSON lines", lines.len());
    let from_tungstenite = |level: &str| {
        lines.iter().any(|l| {
            l["level"] == level
                && l["target"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("tungstenite"))
        })
    };
    assert!(from_tungstenite("DEBUG") && !from_tungstenite("TRACE"));
    assert!(
        lines.iter().any(|l| l["span"]["room"] == "bigclass"),
        "a line in the room span"
    );
    assert!(
        lines.iter().any(|l| l["span"]["stream"] == "cam-big"),
        "a line in the stream span"
    );
    println!(
        "{} JSON log lines at trace level, {} bytes: no secret in them",
        lines.len(),
        logs.len()
    );
    observer.close().await;
    dash.close().await;
}

async fn wait_for_file(
    agent: &AgentProcess,
    done: impl Fn(&roomcast::service::state::DesiredState) -> bool,
) -> roomcast::service::state::DesiredState {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(bytes) = std::fs::read(agent.state_dir.join("state.json")) {
            let state = roomcast::service::state::parse_state(&bytes).expect("readable");
            if done(&state) {
                return state;
            }
        }
        assert!(Instant::now() < deadline, "the state file never matched");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 18, the data-loss bug: 300 `start_playing` for streams nobody publishes, then a
/// power cut. The box used to accept all 300, its state file could hold 256, and the
/// restart set the whole file aside: no room at all. Now the 257th is refused with
/// 1000903 when it arrives, and after kill -9 the box is back in bigclass with all 256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_box_accepts_a_restart_restores() {
    support::require_netns();
    let janus = Janus::start();
    let broker = Mosquitto::start();
    let text = config_text(&broker.url(), &janus.ws_url(), Path::new("@STATE@"), "");
    let mut agent = AgentProcess::start(&text, Options::default());
    wait_online(broker.port).await;
    let dash = dashboard(&broker.url()).await;
    ok(&dash, "login_room", json!({"room_id": "bigclass"})).await;
    let mut accepted = 0;
    let mut refused = Vec::new();
    for n in 0..300 {
        let reply = support::dashboard::call(
            &dash,
            "start_playing",
            json!({"stream_id": format!("nobody-{n}"), "room_id": "bigclass"}),
        )
        .await;
        if reply["ok"] == true {
            assert_eq!(reply["result"]["state"], "PlayRequesting", "{reply}");
            accepted += 1;
        } else {
            refused.push(reply["error"].clone());
        }
    }
    assert_eq!(accepted, 256);
    assert_eq!(refused.len(), 44);
    assert!(refused.iter().all(|e| e["code"] == 1000903), "{refused:?}");
    println!(
        "300 start_playing: 256 accepted, 44 refused: {}",
        refused[0]
    );
    let saved = wait_for_file(&agent, |s| s.playing.len() == 256).await;
    assert_eq!(saved.rooms.len(), 1);

    agent.kill9();
    agent.spawn();
    let (state, took) = wait_state(
        &dash,
        "bigclass back with 256 plays",
        Duration::from_secs(30),
        |s| {
            rooms_of(s) == [("bigclass".to_owned(), "Logined".to_owned())]
                && s["playing"].as_array().is_some_and(|p| p.len() == 256)
        },
    )
    .await;
    println!(
        "after kill -9: bigclass and its 256 played streams back within {} ms",
        took.as_millis()
    );
    assert_eq!(
        state["playing"][0]["state"], "PlayRequesting",
        "{}",
        state["playing"][0]
    );
    let log = agent.log();
    assert!(!log.contains("set aside"), "{log}");
    dash.close().await;
}

/// Issue 18: logs cannot be forged. A command id and an argument name with a newline
/// and a journald priority (`<0>`) come back in the replies as they were sent, and in
/// the journal-format log every line is still one event with its own priority: no line
/// starts with the forged `<0>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_and_argument_names_cannot_forge_log_lines() {
    support::init_logs();
    let broker = Mosquitto::start();
    let unreachable = format!("ws://127.0.0.1:{}", support::free_port());
    let text = config_text(&broker.url(), &unreachable, Path::new("@STATE@"), "");
    let agent = AgentProcess::start(
        &text,
        Options {
            args: vec!["--log-format".into(), "journal".into()],
            ..Options::default()
        },
    );
    wait_online(broker.port).await;
    let t = topics();
    let mut raw = Observer::connect(broker.port, "forger").await;
    raw.subscribe(&t.reply).await;
    let forged_id = "c-1\n<0>roomcast: forged emergency";
    let payloads = [
        json!({"id": forged_id, "op": "login_room", "args": {"room_id": "bigclass", "x\n<0>forged arg": 1}}),
        json!({"id": "c-2\r\n<0>forged too", "op": "no\n<0>such op"}),
        json!({"id": "c-3", "op": "logout_room", "args": {"room_id": "nowhere\n<0>x"}}),
    ];
    for payload in &payloads {
        raw.publish(&t.cmd, payload.to_string()).await;
    }
    for payload in &payloads {
        let id = payload["id"].clone();
        let reply = raw
            .next_where(Duration::from_secs(10), |m| m.json()["id"] == id)
            .await
            .expect("a reply to each command")
            .json();
        assert_eq!(reply["ok"], false, "{reply}");
    }
    let log = agent.log();
    assert!(log.contains("c-1\\n<0>roomcast: forged emergency"), "{log}");
    for line in log.lines() {
        let priority = line
            .strip_prefix('<')
            .and_then(|rest| rest.split_once('>'))
            .map(|(n, _)| n);
        assert!(
            matches!(priority, Some("3" | "4" | "6" | "7")),
            "a line without its own priority: {line:?}\n{log}"
        );
    }
    raw.close().await;
}

/// One stop budget: a reload whose stop runs out of time (the engine stalled and cannot
/// leave its rooms) still closes the old Janus session; the new generation opens its
/// own. Before, the SFU session was closed only after the engine had stopped, inside the
/// service's own deadline, and a stop cut short left it open for the life of the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_that_runs_out_of_time_during_a_reload_leaves_no_janus_session() {
    let janus = Janus::start();
    let broker = Mosquitto::start();
    let (agent, dash) = agent_in_rooms(
        &janus,
        &broker,
        Options {
            faults: true,
            ..Options::default()
        },
        &["bigclass"],
    )
    .await;
    wait_state(&dash, "publishing", Duration::from_secs(20), |s| {
        all_up(s, &["bigclass"], 1)
    })
    .await;
    let sessions = async || {
        janus.admin("", json!({"janus": "list_sessions"})).await["sessions"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(sessions().await, 1, "the agent's one session");

    assert_eq!(agent.fault("stall-engine 8"), "ok");
    let stalled = Instant::now();
    rewrite(
        &agent.config_path,
        "request_timeout_ms = 3000",
        "request_timeout_ms = 3100",
    );
    agent.signal(libc::SIGHUP);
    wait_log(&agent, "reload: left the rooms in", Duration::from_secs(10)).await;
    let log = agent.log();
    assert!(
        log.contains("did not stop within") || log.contains("stopping took longer"),
        "the stop ran out of time:\n{log}"
    );
    // Past the stall, the old engine has woken up: still only the new generation's one
    // session.
    let deadline = stalled + Duration::from_secs(12);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after = sessions().await;
    assert_eq!(
        after,
        1,
        "sessions on Janus after the reload:\n{}",
        agent.log()
    );
    wait_state(&dash, "publishing again", Duration::from_secs(20), |s| {
        all_up(s, &["bigclass"], 1)
    })
    .await;
    dash.close().await;
}
