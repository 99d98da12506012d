//! The whole product the way a school sees it: a real Janus and mosquitto, the agent
//! (in-process, `roomcast::run`) commanded only over MQTT, and two real browsers —
//! headless Chromium with fake camera and microphone, driven over WebDriver — on the
//! project's own room page (`tests/web/`): a teacher in "bigclass", a student in
//! "group-3", the box in both.
//!
//! Screenshots of both pages (and, on failure, the pages' state and logs) go to
//! `target/e2e/classroom/`. Needs the private network namespace: `./scripts/test.sh`.

mod support;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::FutureExt;
use roomcast::config::{Config, MqttUrl};
use roomcast::control::client::CommandClient;
use roomcast::control::{BrokerSettings, Topics};
use serde_json::{Value, json};
use support::browser::{Browser, ChromeDriver};
use support::janus::Janus;
use support::mosquitto::Mosquitto;
use support::mqtt::Observer;
use support::web::PageServer;
use tokio_util::sync::CancellationToken;

const DEVICE: &str = "box-17";
const BIG: &str = "box-17-main-bigclass";
const GROUP: &str = "box-17-main-group-3";

fn config(mqtt_url: &str, janus: &Janus, state_dir: &Path) -> Config {
    let text = format!(
        r#"
device_id = "{DEVICE}"
state_dir = "{state}"

[identity]
user_id = "box-17"
user_name = "Room 101 camera"

[rooms]
mode = "multi"
multi_room_enabled = true

[sources.main]
video = "test"
width = 1280
height = 720
framerate = 15
audio = "test"

[encoder]
bitrate_kbps = 1000

[player]
audio_device = "null"

[mqtt]
url = "{mqtt_url}"
keepalive_s = 5

[janus]
url = "{janus}"
request_timeout_ms = 10000
"#,
        state = state_dir.display(),
        janus = janus.ws_url()
    );
    Config::parse(&text, Path::new("e2e.toml")).expect("config")
}

/// Where the screenshots go: `target/e2e/classroom`.
fn output_dir() -> PathBuf {
    let target_tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = target_tmp
        .parent()
        .unwrap_or(target_tmp)
        .join("e2e/classroom");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the e2e output folder");
    dir
}

/// The services, the agent, the dashboard and the two browsers.
struct Classroom {
    janus: Janus,
    dash: CommandClient,
    events: Observer,
    pages: PageServer,
    teacher: Browser,
    student: Browser,
    out: PathBuf,
    started: Instant,
}

impl Classroom {
    fn step(&self, what: &str) {
        println!("[{:>5.1} s] {what}", self.started.elapsed().as_secs_f64());
    }

    async fn ok(&self, op: &str, args: Value) -> Value {
        let reply = self
            .dash
            .request(op, args)
            .await
            .unwrap_or_else(|e| panic!("{op}: {e}"));
        assert_eq!(reply["ok"], true, "{op} should succeed: {reply}");
        reply["result"].clone()
    }

    fn page_url(&self, query: &str) -> String {
        self.pages.url(&format!(
            "{query}&janus=ws://127.0.0.1:{}/",
            self.janus.ws_port
        ))
    }
}

/// What the page exposes for tests (`window.roomcast.snapshot()`).
const SNAPSHOT_JS: &str = "return window.roomcast ? window.roomcast.snapshot() : null;";

async fn snapshot(page: &Browser) -> Value {
    page.execute(SNAPSHOT_JS, json!([])).await
}

/// Polls the page until `check` holds; panics with its last state.
async fn wait_page(
    page: &Browser,
    what: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    page.wait_for(SNAPSHOT_JS, what, within, check).await
}

fn frames(state: &Value, feed: &str) -> u64 {
    state["feeds"][feed]["frames"].as_u64().unwrap_or(0)
}

fn has_message(state: &Value, from: &str, text: &str) -> bool {
    state["messages"].as_array().is_some_and(|messages| {
        messages
            .iter()
            .any(|m| m["kind"] == "message" && m["from"] == from && m["text"] == text)
    })
}

/// The box's video plays in `page`: 1280x720, frames rising, sound arriving.
async fn wait_box_video(page: &Browser, feed: &str) {
    let state = wait_page(
        page,
        &format!("{feed} playing at 1280x720"),
        Duration::from_secs(40),
        |s| frames(s, feed) > 0 && s["feeds"][feed]["width"] == 1280,
    )
    .await;
    let shown = &state["feeds"][feed];
    assert_eq!(
        (shown["width"].as_u64(), shown["height"].as_u64()),
        (Some(1280), Some(720)),
        "{shown}"
    );
    assert_eq!(
        shown["user_id"], "box-17",
        "the display is our JSON: {shown}"
    );
    assert_eq!(shown["user_name"], "Room 101 camera", "{shown}");
    let first = frames(&state, feed);
    // 15 fps from the box: 20 more frames take about 1.3 s.
    wait_page(
        page,
        &format!("{feed}: frames rising past {first} + 20"),
        Duration::from_secs(15),
        |s| frames(s, feed) >= first + 20,
    )
    .await;
    wait_page(
        page,
        &format!("{feed}: sound played out"),
        Duration::from_secs(15),
        |s| {
            let f = &s["feeds"][feed];
            f["audio"] == true && f["muted"] == false && f["audio_samples"].as_u64() > Some(0)
        },
    )
    .await;
}

async fn scenario(c: &mut Classroom) {
    // 1. The agent, commanded only over MQTT: two rooms, one encode published into both.
    c.step("the agent logs in to bigclass and group-3 and publishes main into both");
    for room in ["bigclass", "group-3"] {
        c.ok("login_room", json!({"room_id": room})).await;
    }
    for (stream, room) in [(BIG, "bigclass"), (GROUP, "group-3")] {
        let result = c
            .ok(
                "start_publishing",
                json!({"stream_id": stream, "room_id": room, "channel": "main"}),
            )
            .await;
        assert_eq!(result["state"], "Publishing", "{result}");
    }

    // 2. A teacher in bigclass and a student in group-3 each see and hear the box.
    c.step("the teacher and the student open the page");
    c.teacher
        .goto(&c.page_url("room=bigclass&user=teacher&name=Ms%20Smith&stream=teacher-cam"))
        .await;
    c.student
        .goto(&c.page_url("room=group-3&user=student-1&name=Student%201"))
        .await;
    wait_box_video(&c.teacher, BIG).await;
    c.step("the teacher sees the box: 1280x720, frames rising, sound");
    wait_box_video(&c.student, GROUP).await;
    c.step("the student sees the box: 1280x720, frames rising, sound");
    // Both chat with the box: in the TextRoom, the box is "Room 101 camera".
    for page in [&c.teacher, &c.student] {
        wait_page(
            page,
            "in the TextRoom with the box",
            Duration::from_secs(15),
            |s| s["chat"] == "joined" && s["users"]["box-17"] == "Room 101 camera",
        )
        .await;
    }
    let teacher = snapshot(&c.teacher).await;
    let student = snapshot(&c.student).await;
    assert!(teacher["feeds"].get(GROUP).is_none(), "{teacher:#}");
    assert!(student["feeds"].get(BIG).is_none(), "{student:#}");

    // 3. The teacher publishes; the agent plays it.
    c.step("the teacher starts her camera");
    c.teacher.click("#publish").await;
    wait_page(
        &c.teacher,
        "the teacher's camera published",
        Duration::from_secs(30),
        |s| s["publishing"] == "publishing",
    )
    .await;
    let result = c
        .ok(
            "start_playing",
            json!({"stream_id": "teacher-cam", "room_id": "bigclass", "output": "none"}),
        )
        .await;
    assert!(
        result["state"] == "Playing" || result["state"] == "PlayRequesting",
        "{result}"
    );
    let state = support::eventually(
        "the agent plays teacher-cam with 30 frames decoded",
        Duration::from_secs(30),
        async || {
            let state = c.ok("get_state", json!({})).await;
            let playing = state["playing"]
                .as_array()?
                .iter()
                .find(|p| p["stream_id"] == "teacher-cam")?
                .clone();
            (playing["state"] == "Playing"
                && playing["stats"]["frames_decoded"].as_u64() >= Some(30))
            .then_some(state)
        },
    )
    .await;
    let bigclass = state["rooms"]
        .as_array()
        .and_then(|rooms| rooms.iter().find(|r| r["room_id"] == "bigclass"))
        .expect("bigclass in the state");
    assert!(
        bigclass["streams"]
            .as_array()
            .is_some_and(|streams| streams.iter().any(|s| s
                == &json!({"stream_id": "teacher-cam",
                "user": {"user_id": "teacher", "user_name": "Ms Smith"}}))),
        "the agent knows who publishes teacher-cam: {bigclass:#}"
    );
    c.step("the agent plays the teacher's camera: Playing, frames decoded");

    // 4. Messages stay in their room, both ways.
    let hello = "Can you hear us in group 3?";
    c.student.type_into("#message", hello).await;
    c.student.click("#send").await;
    let topics = Topics::new("roomcast", DEVICE);
    let group_topic = topics.room_events("group-3");
    let big_topic = topics.room_events("bigclass");
    // Every room event since the agent came online, up to the student's message.
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let got = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(m) = c.events.next_where(left, |_| true).await else {
            panic!("no broadcast_message on {group_topic} within 15 s");
        };
        events.push(m.clone());
        if m.topic == group_topic && m.json()["event"] == "broadcast_message" {
            break m;
        }
    };
    let message = &got.json()["messages"][0];
    assert_eq!(message["message"], hello, "{message}");
    assert_eq!(
        message["from_user"],
        json!({"user_id": "student-1", "user_name": "Student 1"}),
        "{message}"
    );
    c.step("the student's message reached the agent's group-3 events");

    let announcement = "Back to the big class in 5 minutes";
    c.ok(
        "send_broadcast_message",
        json!({"room_id": "bigclass", "message": announcement}),
    )
    .await;
    wait_page(
        &c.teacher,
        "the box's message in the teacher's page",
        Duration::from_secs(15),
        |s| has_message(s, "box-17", announcement),
    )
    .await;
    c.step("the box's message reached the teacher's page");
    // Give a stray copy time to arrive anywhere it should not.
    tokio::time::sleep(Duration::from_secs(1)).await;
    events.extend(c.events.drain());
    assert!(
        !events
            .iter()
            .any(|m| m.topic == big_topic && m.text().contains(hello)),
        "the student's message leaked into bigclass's events"
    );
    let student = snapshot(&c.student).await;
    assert!(
        has_message(&student, "student-1", hello),
        "the student sees her own message: {student:#}"
    );
    assert!(
        !has_message(&student, "box-17", announcement),
        "the bigclass message leaked into group-3: {student:#}"
    );
    for (page, name) in [(&c.teacher, "teacher"), (&c.student, "student")] {
        page.screenshot(&c.out.join(format!("{name}.png")))
            .await
            .unwrap_or_else(|e| panic!("screenshot of the {name}: {e}"));
    }

    // 5. The box leaves group-3: the student's video stops, the teacher's keeps playing.
    c.step("the agent logs out of group-3");
    let result = c.ok("logout_room", json!({"room_id": "group-3"})).await;
    assert_eq!(result["rooms"], json!(["group-3"]), "{result}");
    wait_page(
        &c.student,
        "the box's stream gone from the student's page",
        Duration::from_secs(15),
        |s| s["feeds"][GROUP]["state"] == "gone",
    )
    .await;
    let (student_before, teacher_before) = (snapshot(&c.student).await, snapshot(&c.teacher).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (student_after, teacher_after) = (snapshot(&c.student).await, snapshot(&c.teacher).await);
    assert_eq!(
        frames(&student_after, GROUP),
        frames(&student_before, GROUP),
        "the student's video still advances after the box left group-3"
    );
    assert!(
        frames(&teacher_after, BIG) >= frames(&teacher_before, BIG) + 10,
        "the teacher's video stopped too: {} -> {} frames in 2 s",
        frames(&teacher_before, BIG),
        frames(&teacher_after, BIG)
    );
    assert_eq!(teacher_after["feeds"][BIG]["state"], "playing");
    c.student
        .screenshot(&c.out.join("student-after-logout.png"))
        .await
        .unwrap_or_else(|e| panic!("screenshot of the student: {e}"));
    c.step("the student's video stopped; the teacher's plays on");
}

/// After a failure: screenshots, the pages' state and logs, and Janus's log.
async fn save_evidence(c: &Classroom) {
    for (page, name) in [(&c.teacher, "teacher"), (&c.student, "student")] {
        if let Err(e) = page
            .screenshot(&c.out.join(format!("failure-{name}.png")))
            .await
        {
            eprintln!("no screenshot of the {name}: {e}");
        }
        let state = page
            .try_execute("return window.roomcast ? window.roomcast.snapshot() : null;")
            .await
            .map(|v| format!("{v:#}"))
            .unwrap_or_else(|e| e);
        let log = page
            .try_execute("return window.roomcast ? window.roomcast.log() : 'no page';")
            .await
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .unwrap_or_else(|e| e);
        let _ = std::fs::write(
            c.out.join(format!("failure-{name}.txt")),
            format!("{state}\n\n{log}\n"),
        );
    }
    let _ = std::fs::write(c.out.join("failure-janus.log"), c.janus.log());
}

fn broker_settings(url: &str) -> BrokerSettings {
    BrokerSettings {
        url: MqttUrl::parse(url).expect("broker url"),
        client_id: format!("e2e-dashboard-{}", rand::random::<u32>()),
        username: None,
        password: None,
        ca_file: None,
        client_cert: None,
        keepalive: Duration::from_secs(30),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classroom_in_two_rooms_with_real_browsers() {
    support::require_netns();
    let started = Instant::now();
    let out = output_dir();
    let janus = Janus::start();
    let broker = Mosquitto::start();
    let state_dir = support::TempDir::new("e2e-agent");

    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(roomcast::run(
        config(&broker.url(), &janus, state_dir.path()),
        shutdown.clone(),
    ));
    let topics = Topics::new("roomcast", DEVICE);
    let mut events = Observer::connect(broker.port, "e2e-events").await;
    events.subscribe(&topics.status).await;
    events
        .next_where(Duration::from_secs(15), |m| m.text() == "online")
        .await
        .expect("the agent says online within 15 s");
    events.subscribe(&topics.room_events("bigclass")).await;
    events.subscribe(&topics.room_events("group-3")).await;
    let dash = CommandClient::connect(
        &broker_settings(&broker.url()),
        topics.clone(),
        Duration::from_secs(20),
    )
    .await
    .expect("the dashboard connects");

    let pages = PageServer::start().await;
    let driver = ChromeDriver::start();
    let teacher = driver.open("teacher").await;
    let student = driver.open("student").await;
    let mut classroom = Classroom {
        janus,
        dash,
        events,
        pages,
        teacher,
        student,
        out: out.clone(),
        started,
    };
    classroom.step("services, agent and two browsers up");

    let outcome = AssertUnwindSafe(tokio::time::timeout(
        Duration::from_secs(240),
        scenario(&mut classroom),
    ))
    .catch_unwind()
    .await;
    let failed = !matches!(outcome, Ok(Ok(())));
    if failed {
        save_evidence(&classroom).await;
        eprintln!("screenshots and logs of the failure: {}", out.display());
    }

    // Always: close the browsers, stop the agent, then (on drop) chromedriver, Janus and
    // mosquitto. ChromeDriver's drop kills whatever of Chromium is left.
    let Classroom {
        janus,
        dash,
        events,
        teacher,
        student,
        ..
    } = classroom;
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        teacher.close().await;
        student.close().await;
    })
    .await;
    drop(driver);
    dash.close().await;
    events.close().await;
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(20), agent).await;
    drop(janus);
    drop(broker);

    match outcome {
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(Err(_)) => panic!("the scenario took longer than 240 s"),
        Ok(Ok(())) => {}
    }
    stopped
        .expect("the agent stops within 20 s")
        .expect("the agent task")
        .expect("the agent ran without error");
    println!(
        "classroom scenario passed in {:.1} s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
}
