//! Media benchmarks (issue 4). Run with `./scripts/bench.sh media` (it builds, then runs
//! this inside the private network namespace with a local Janus). Prints, in one run:
//!
//! 1. agent CPU over 20 s at 1280x720 30 fps publishing into 1 room and into 5 rooms
//!    (one shared encode), and 5 rooms with one encoder per room, with the ratios;
//! 2. capture→decoded latency read from the BLK1 stamp by a subscriber in one of 5
//!    live rooms, p50 / p95;
//! 3. time from login_room + start_publishing to the first frame decoded by a
//!    subscriber already waiting in that room (cold source, then warm);
//! 4. peak RSS with 5 rooms publishing and 2 streams playing;
//! 5. what roomcast's SRTP primitives save per room against libsrtp's own (NSS), four
//!    agents at once;
//! 6. what the shortened sending path saves per room against webrtcbin's every pad,
//!    four agents at once.
//!
//! The agent runs in a child process (this binary re-executed, driven over stdin), so
//! its CPU and memory are measured apart from the test subscribers and Janus.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use roomcast::engine::{Channel, PlayOutput, PlayerConfig, PublisherConfig, User};
use roomcast::{Agent, Config};
use support::janus::Janus;
use support::peers::{Subscriber, TestPublisher};
use tokio_util::sync::CancellationToken;

const CHILD_ENV: &str = "ROOMCAST_BENCH_AGENT";
const WINDOW: Duration = Duration::from_secs(20);

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child_main(&spec);
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(parent_main());
}

// ---- the agent process ---------------------------------------------------------------

/// `spec` is `shared|per-room <janus url> <state dir>`. Commands on stdin, one per line:
/// `login ROOM`, `logout ROOM`, `publish STREAM ROOM`, `play STREAM ROOM`, `quit`. Each gets `ok` or
/// `err MESSAGE` on stdout.
fn child_main(spec: &str) {
    // As the shipped agent does first in main.
    roomcast::service::memory::limit_arenas();
    let mut parts = spec.split(' ');
    let (mode, janus_url, dir) = (
        parts.next().unwrap_or("shared").to_owned(),
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or("/tmp").to_owned(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        // ROOMCAST_BENCH_AGENT_TOML: more config for the agent under test (e.g. to compare
        // with `[network] retransmissions = false`).
        let extra = std::env::var("ROOMCAST_BENCH_AGENT_TOML").unwrap_or_default();
        let mut text = support::agent::config_text(&janus_url, std::path::Path::new(&dir), &extra);
        // ROOMCAST_BENCH_AUDIO: the main channel's audio input instead of the test tone.
        if let Ok(audio) = std::env::var("ROOMCAST_BENCH_AUDIO") {
            text = text.replace("audio = \"test\"", &format!("audio = \"{audio}\""));
        }
        let config = Config::parse(&text, std::path::Path::new("bench.toml")).expect("config");
        let shutdown = CancellationToken::new();
        let mut agents: Vec<(String, Agent)> = Vec::new();
        let user = User::parse("box-17", "Room 101 camera").unwrap();
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let line = line.unwrap_or_default();
            let words: Vec<&str> = line.split_whitespace().collect();
            let result: Result<(), String> = async {
                match words.as_slice() {
                    ["login", room] => {
                        if mode == "per-room" || agents.is_empty() {
                            let agent = Agent::start(&config, shutdown.clone())
                                .map_err(|e| e.to_string())?;
                            agents.push((room.to_string(), agent));
                        }
                        let agent = agent_for(&agents, &mode, room);
                        agent
                            .engine
                            .login_room(room, user.clone(), None)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    ["publish", stream, room] => {
                        let agent = agent_for(&agents, &mode, room);
                        let config = PublisherConfig {
                            room_id: Some(room.to_string()),
                        };
                        agent
                            .engine
                            .start_publishing(stream, config, Channel::Main)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }
                    ["play", stream, room] => {
                        let agent = agent_for(&agents, &mode, room);
                        let config = PlayerConfig {
                            room_id: Some(room.to_string()),
                            output: PlayOutput::None,
                        };
                        agent
                            .engine
                            .start_playing(stream, config)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }
                    ["logout", room] => {
                        let agent = agent_for(&agents, &mode, room);
                        agent
                            .engine
                            .logout_room(Some(room))
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }
                    ["quit"] => Err("quit".into()),
                    other => Err(format!("unknown command {other:?}")),
                }
            }
            .await;
            match result {
                Ok(()) => println!("ok"),
                Err(e) if e == "quit" => break,
                Err(e) => println!("err {e}"),
            }
            let _ = std::io::stdout().flush();
        }
        shutdown.cancel();
        for (_, agent) in agents {
            agent.stopped(std::time::Duration::from_secs(4)).await;
        }
    });
}

fn agent_for<'a>(agents: &'a [(String, Agent)], mode: &str, room: &str) -> &'a Agent {
    if mode == "per-room" {
        &agents.iter().find(|(r, _)| r == room).expect("logged in").1
    } else {
        &agents[0].1
    }
}

// ---- the measuring process -------------------------------------------------------------

struct AgentProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    _dir: support::TempDir,
}

impl AgentProcess {
    fn start(janus: &Janus, mode: &str) -> Self {
        Self::start_with_env(janus, mode, &[])
    }

    fn start_with_env(janus: &Janus, mode: &str, env: &[(&str, &str)]) -> Self {
        let dir = support::TempDir::new("bench-agent");
        let mut child = Command::new(std::env::current_exe().expect("self"))
            .envs(env.iter().copied())
            .env(
                CHILD_ENV,
                format!("{mode} {} {}", janus.ws_url(), dir.path().display()),
            )
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the agent process");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Self {
            child,
            stdin,
            stdout,
            _dir: dir,
        }
    }

    /// Sends a command and waits for its answer.
    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").expect("write");
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).expect("read");
        assert_eq!(
            answer.trim(),
            "ok",
            "agent answered {command:?} with {answer:?}"
        );
    }

    /// User + system CPU seconds so far.
    fn cpu_seconds(&self) -> f64 {
        support::cpu_seconds(&self.child.id().to_string()).expect("the agent's /proc stat")
    }

    /// Where the RSS is: anonymous memory, file-backed pages per library (the biggest
    /// ones), from /proc/<pid>/smaps.
    fn rss_breakdown(&self) -> String {
        let smaps =
            std::fs::read_to_string(format!("/proc/{}/smaps", self.child.id())).unwrap_or_default();
        let mut by_name: std::collections::BTreeMap<String, u64> = Default::default();
        let mut name = String::new();
        for line in smaps.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields
                .first()
                .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
            {
                name = fields.get(5).map_or("[anon]".to_owned(), |path| {
                    path.rsplit('/').next().unwrap_or(path).to_owned()
                });
            } else if fields.first() == Some(&"Rss:") {
                let kib: u64 = fields.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
                *by_name.entry(name.clone()).or_default() += kib;
            }
        }
        let anon: u64 = by_name
            .iter()
            .filter(|(n, _)| n.starts_with('['))
            .map(|(_, k)| k)
            .sum();
        let file: u64 = by_name.values().sum::<u64>() - anon;
        let mut biggest: Vec<(&String, &u64)> = by_name.iter().collect();
        biggest.sort_by(|a, b| b.1.cmp(a.1));
        let top: Vec<String> = biggest
            .iter()
            .take(8)
            .map(|(n, k)| format!("{n} {:.1}", **k as f64 / 1024.0))
            .collect();
        format!(
            "anonymous {:.1} MiB, file-backed {:.1} MiB; biggest: {}",
            anon as f64 / 1024.0,
            file as f64 / 1024.0,
            top.join(", ")
        )
    }

    fn peak_rss_mib(&self) -> f64 {
        self.status_mib("VmHWM:")
    }

    fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS:")
    }

    fn status_mib(&self, field: &str) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmHWM");
        kb / 1024.0
    }

    fn stop(mut self) {
        let _ = writeln!(self.stdin, "quit");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds of an agent publishing into `rooms` rooms over [`WINDOW`].
async fn cpu_run(janus: &Janus, mode: &str, rooms: usize) -> f64 {
    let mut agent = AgentProcess::start(janus, mode);
    for i in 0..rooms {
        let room = format!("{mode}-{rooms}-{i}");
        agent.send(&format!("login {room}"));
        agent.send(&format!("publish cam-{i} {room}"));
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // settle
    let start = agent.cpu_seconds();
    tokio::time::sleep(WINDOW).await;
    let used = agent.cpu_seconds() - start;
    agent.stop();
    used
}

/// CPU seconds of two agents running at the same time over the same [`WINDOW`], one
/// publishing into 1 room and one into 5: whatever else loads the machine then loads
/// both alike, which alternating runs only approximate.
async fn cpu_side_by_side(janus: &Janus) -> (f64, f64) {
    let mut one = AgentProcess::start(janus, "shared");
    let mut five = AgentProcess::start(janus, "shared");
    one.send("login together-1-0");
    one.send("publish cam-0 together-1-0");
    for i in 0..5 {
        five.send(&format!("login together-5-{i}"));
        five.send(&format!("publish cam-{i} together-5-{i}"));
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // settle
    let (start_one, start_five) = (one.cpu_seconds(), five.cpu_seconds());
    tokio::time::sleep(WINDOW).await;
    let used = (
        one.cpu_seconds() - start_one,
        five.cpu_seconds() - start_five,
    );
    one.stop();
    five.stop();
    used
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[index]
}

/// CPU ms/s of four agents running at once over [`WINDOW`]: environment `a` in 1 and in 5
/// rooms, then `b` in 1 and in 5 rooms (in that order). Running all four together lets
/// load from elsewhere hit both sides alike.
async fn four_agents(janus: &Janus, tag: &str, a: &[(&str, &str)], b: &[(&str, &str)]) -> Vec<f64> {
    let mut agents = Vec::new();
    for (k, env) in [a, b].iter().enumerate() {
        for rooms in [1, 5] {
            let mut agent = AgentProcess::start_with_env(janus, "shared", env);
            for i in 0..rooms {
                let room = format!("{tag}-{k}-{rooms}-{i}");
                agent.send(&format!("login {room}"));
                agent.send(&format!("publish cam-{i} {room}"));
            }
            agents.push(agent);
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // settle
    let start: Vec<f64> = agents.iter().map(AgentProcess::cpu_seconds).collect();
    tokio::time::sleep(WINDOW).await;
    let used = agents
        .iter()
        .zip(&start)
        .map(|(agent, s)| (agent.cpu_seconds() - s) / WINDOW.as_secs_f64() * 1000.0)
        .collect();
    for agent in agents {
        agent.stop();
    }
    used
}

/// Four agents at once, 1 and 5 rooms each with environment `a` and `b`, over
/// [`WINDOW`], for `ROUNDS` rounds: what a room costs with each (CPU ms/s per extra
/// room). Running all four together lets load from elsewhere hit both sides alike.
async fn per_room_a_b(
    janus: &Janus,
    tag: &str,
    a: (&str, &[(&str, &str)]),
    b: (&str, &[(&str, &str)]),
) {
    const ROUNDS: usize = 5;
    let mut per_room = [Vec::new(), Vec::new()];
    let mut ratios = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        let used = four_agents(janus, &format!("{tag}{round}"), a.1, b.1).await;
        let mut line = format!("   round {}:", round + 1);
        for (k, name) in [a.0, b.0].iter().enumerate() {
            let (one, five) = (used[2 * k], used[2 * k + 1]);
            per_room[k].push((five - one) / 4.0);
            ratios[k].push(five / one);
            line += &format!(
                "  {name}: 1 room {one:.1}, 5 rooms {five:.1}, {:.2} per extra room ({:.2}x)",
                (five - one) / 4.0,
                five / one
            );
        }
        println!("{line}");
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let lower = per_room[1]
        .iter()
        .zip(&per_room[0])
        .filter(|(b, a)| b < a)
        .count();
    println!(
        "   mean per extra room: {} {:.2} ms/s, {} {:.2} ms/s ({:+.0} %, lower in {lower} of {ROUNDS} rounds); ratio 5/1 rooms {:.2}x -> {:.2}x",
        a.0,
        mean(&per_room[0]),
        b.0,
        mean(&per_room[1]),
        (mean(&per_room[1]) / mean(&per_room[0]) - 1.0) * 100.0,
        mean(&ratios[0]),
        mean(&ratios[1])
    );
}

/// Four agents at once on the simulated room's microphone: processing all off and at its
/// defaults (echo cancellation, moderate noise suppression, gain control, high-pass),
/// each in 1 and in 5 rooms. The processing's cost is the difference at equal rooms.
async fn audio_processing_cost(janus: &Janus) {
    const ROUNDS: usize = 3;
    let off = "[audio_processing]\necho_cancel = false\nnoise_suppression = \"off\"\ngain_control = false\nhigh_pass_filter = false\n";
    let on = "[audio_processing]\n";
    println!(
        "7. audio processing at 48 kHz (audio = \"test-room\"), four agents at once, CPU ms/s over {} s:",
        WINDOW.as_secs()
    );
    let (mut cost_one, mut cost_five) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let env = |toml| {
            [
                ("ROOMCAST_BENCH_AUDIO", "test-room"),
                ("ROOMCAST_BENCH_AGENT_TOML", toml),
            ]
        };
        let used = four_agents(janus, &format!("aproc{round}"), &env(off), &env(on)).await;
        let (off1, off5, on1, on5) = (used[0], used[1], used[2], used[3]);
        cost_one.push(on1 - off1);
        cost_five.push(on5 - off5);
        println!(
            "   round {}: off 1 room {off1:.1}, 5 rooms {off5:.1}; defaults 1 room {on1:.1}, 5 rooms {on5:.1}; processing costs {:.1} (1 room) and {:.1} (5 rooms)",
            round + 1,
            on1 - off1,
            on5 - off5
        );
    }
    println!(
        "   processing cost, median of {ROUNDS}: 1 room {:.1} ms/s ({:.1} % of a core), 5 rooms {:.1} ms/s ({:.1} % of a core)",
        percentile(&mut cost_one, 0.5),
        percentile(&mut cost_one, 0.5) / 10.0,
        percentile(&mut cost_five, 0.5),
        percentile(&mut cost_five, 0.5) / 10.0
    );
}

async fn parent_main() {
    support::require_netns();
    let janus = Janus::start();
    println!(
        "roomcast media benchmarks — 1280x720 30 fps, x264enc ultrafast/zerolatency 2 Mbit/s + Opus 32 kbit/s"
    );
    println!("(one machine, side by side in one run; compare ratios, not absolute figures)\n");

    // ROOMCAST_BENCH_ONLY=1,4 runs only those sections.
    let only = std::env::var("ROOMCAST_BENCH_ONLY").ok();
    let run = |section: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|s| s.trim() == section))
    };

    // 1. CPU: shared encode, 1 and 5 rooms; one encoder per room, 5 rooms.
    if run("1") {
        // Alternating pairs, so that load from elsewhere hits both sides alike.
        let mut ratios = Vec::new();
        let (mut ones, mut fives) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let one = cpu_run(&janus, "shared", 1).await;
            let five = cpu_run(&janus, "shared", 5).await;
            ratios.push(five / one);
            ones.push(one);
            fives.push(five);
        }
        let per_room = cpu_run(&janus, "per-room", 5).await;
        let one = percentile(&mut ones, 0.5);
        let five = percentile(&mut fives, 0.5);
        let w = WINDOW.as_secs_f64();
        let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "1. agent CPU over {} s (CPU seconds, % of one core; medians of 3 alternating pairs):",
            WINDOW.as_secs()
        );
        println!(
            "   1 room,  shared encode:     {one:6.2} s  {:5.1} %",
            one / w * 100.0
        );
        println!(
            "   5 rooms, shared encode:     {five:6.2} s  {:5.1} %   ratio {:.2}x median, pairs [{}] (goal <= 1.15x)",
            five / w * 100.0,
            percentile(&mut ratios, 0.5),
            listed.join(", ")
        );
        println!(
            "   5 rooms, encoder per room:  {per_room:6.2} s  {:5.1} %   ratio {:.2}x (baseline)",
            per_room / w * 100.0,
            per_room / one
        );
        // The same two shared-encode cases at the same time, in two agents.
        let mut together = Vec::new();
        for _ in 0..3 {
            let (one, five) = cpu_side_by_side(&janus).await;
            together.push(five / one);
        }
        let listed: Vec<String> = together.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "   1 and 5 rooms at the same time (two agents, 3 runs): ratio {:.2}x median, runs [{}]",
            percentile(&mut together, 0.5),
            listed.join(", ")
        );
    }

    // 7. Audio processing: what it costs, and that it does not grow with rooms.
    if run("7") {
        audio_processing_cost(&janus).await;
    }

    // 5. SRTP primitives: libsrtp's own (NSS) against roomcast's, per room.
    if run("5") {
        let libsrtp = [(
            "ROOMCAST_BENCH_AGENT_TOML",
            "[media]\nsrtp_primitives = false\n",
        )];
        println!(
            "5. SRTP per room: libsrtp's own AES-ICM/HMAC-SHA1 (NSS) against roomcast's, four agents at once, CPU ms/s over {} s:",
            WINDOW.as_secs()
        );
        per_room_a_b(&janus, "srtp", ("libsrtp's", &libsrtp), ("roomcast's", &[])).await;
    }

    // 6. The sending path: every pad of webrtcbin's against the shortened one, per room.
    if run("6") {
        let long = [(
            "ROOMCAST_BENCH_AGENT_TOML",
            "[media]\nsending_path_shortcut = false\n",
        )];
        println!(
            "\n6. sending path per room: webrtcbin's every pad against roomcast's shortcuts past its ghost pads, clocksync and funnel, four agents at once, CPU ms/s over {} s:",
            WINDOW.as_secs()
        );
        per_room_a_b(&janus, "path", ("webrtcbin's", &long), ("shortened", &[])).await;
    }

    // 2. Five rooms live, a subscriber in one.
    if run("2") {
        let mut agent = AgentProcess::start(&janus, "shared");
        for i in 0..5 {
            agent.send(&format!("login live-{i}"));
            agent.send(&format!("publish live-cam-{i} live-{i}"));
        }
        let sub = Subscriber::start(&janus.ws_url(), "live-0", "live-cam-0").await;
        sub.wait_frames(30, Duration::from_secs(10)).await;
        sub.seen.latencies_ms.lock().unwrap().clear();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let mut latencies = sub.seen.latencies_ms.lock().unwrap().clone();
        println!(
            "\n2. capture→decoded latency through Janus, 5 rooms live, subscriber in one ({} stamped frames over 10 s):",
            latencies.len()
        );
        println!(
            "   p50 {:.1} ms, p95 {:.1} ms (goal p50 <= 15 ms, p95 <= 25 ms; anchor: single-room webrtcbin publisher 11.3 / 13.8 ms)",
            percentile(&mut latencies, 0.5),
            percentile(&mut latencies, 0.95)
        );
        drop(sub);
        agent.stop();
    }

    // 4. Memory: 5 rooms publishing and 2 streams playing, step by step.
    if run("4") {
        println!("\n4. agent RSS, 5 rooms publishing + 2 streams playing (goal: peak <= 100 MB):");
        let _teacher = TestPublisher::start(&janus.ws_url(), "mem-1", "teacher", "Teacher").await;
        let _assistant =
            TestPublisher::start(&janus.ws_url(), "mem-2", "assistant", "Assistant").await;
        {
            let mut agent = AgentProcess::start(&janus, "shared");
            tokio::time::sleep(Duration::from_millis(500)).await;
            let idle = agent.rss_mib();
            let idle_breakdown = agent.rss_breakdown();
            agent.send("login mem-0");
            let one_room = agent.rss_breakdown();
            for i in 1..5 {
                agent.send(&format!("login mem-{i}"));
            }
            let rooms = agent.rss_mib();
            let rooms_breakdown = agent.rss_breakdown();
            agent.send("publish mem-cam-0 mem-0");
            tokio::time::sleep(Duration::from_secs(3)).await;
            let one_publishing = agent.rss_breakdown();
            for i in 1..5 {
                agent.send(&format!("publish mem-cam-{i} mem-{i}"));
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            let publishing = agent.rss_mib();
            let publishing_breakdown = agent.rss_breakdown();
            agent.send("play teacher mem-1");
            agent.send("play assistant mem-2");
            tokio::time::sleep(Duration::from_secs(10)).await;
            println!(
                "   idle {idle:5.1} MiB, 5 rooms logged in {rooms:5.1}, +5 publishing {publishing:5.1}, +2 playing {:5.1}; peak {:5.1} MiB",
                agent.rss_mib(),
                agent.peak_rss_mib()
            );
            println!("   idle:              {idle_breakdown}");
            println!("   1 room logged in:  {one_room}");
            println!("   5 rooms logged in: {rooms_breakdown}");
            println!("   +1 publishing:     {one_publishing}");
            println!("   +5 publishing:     {publishing_breakdown}");
            println!("   +2 playing:        {}", agent.rss_breakdown());
            agent.stop();
        }
    }

    // 3. login + publish → first frame at a subscriber already waiting in the room.
    if !run("3") {
        return;
    }
    println!(
        "\n3. login_room + start_publishing → first frame decoded by a subscriber waiting in the room:"
    );
    let mut agent = AgentProcess::start(&janus, "shared");
    let mut warm = Vec::new();
    for i in 0..6 {
        let room = format!("first-{i}");
        let feed = format!("first-cam-{i}");
        let url = janus.ws_url();
        let (r, f) = (room.clone(), feed.clone());
        let waiting = tokio::spawn(async move {
            Subscriber::wait_for(&url, &r, &f, Duration::from_secs(15)).await
        });
        tokio::time::sleep(Duration::from_millis(500)).await; // the subscriber is in the room
        let started = Instant::now();
        agent.send(&format!("login {room}"));
        let logged_in = started.elapsed();
        agent.send(&format!("publish {feed} {room}"));
        let published = started.elapsed();
        let sub = waiting.await.expect("subscriber");
        sub.wait_frames(1, Duration::from_secs(10)).await;
        let elapsed = sub.seen.first_frame().expect("a frame") - started;
        let at = |t: Option<Instant>| t.map_or(f64::NAN, |t| (t - started).as_secs_f64() * 1000.0);
        let phases = format!(
            "logined {:.0}, publishing {:.0}, feed seen {:.0}, subscribed {:.0}, first frame {:.0} ms",
            logged_in.as_secs_f64() * 1000.0,
            published.as_secs_f64() * 1000.0,
            at(*sub.seen.feed_seen.lock().unwrap()),
            at(*sub.seen.started.lock().unwrap()),
            elapsed.as_secs_f64() * 1000.0
        );
        drop(sub);
        // Leave again: at most 5 rooms; the source lingers 10 s, so the next run is warm.
        agent.send(&format!("logout {room}"));
        let ms = elapsed.as_secs_f64() * 1000.0;
        if i == 0 {
            println!("   cold (source starting):      {ms:6.1} ms   ({phases})");
        } else {
            println!("   warm run {i}:                  {ms:6.1} ms   ({phases})");
            warm.push(ms);
        }
    }
    let count = warm.len();
    println!(
        "   warm (source already up), {count} rooms: p50 {:.1} ms, max {:.1} ms (goal <= 300 ms)",
        percentile(&mut warm.clone(), 0.5),
        percentile(&mut warm, 1.0)
    );
    agent.stop();
}
