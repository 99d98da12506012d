//! The soak driver that `scripts/soak.sh` runs against two real agents, a real Janus and
//! a real mosquitto (all in the script's private network namespace). It is a dashboard
//! under load for a long time, and it counts what matters for a box that must run for
//! weeks:
//!
//! - the primary box logs in to 5 rooms and publishes its main source into all of them
//!   (one encode, 5 Janus publishers); a peer box sits in the same 5 rooms;
//! - every 3 s the primary box joins a sixth room, publishes into it and leaves it again;
//! - commands at `--rate` per second (default 20) to both boxes: get_state, broadcast
//!   messages and custom commands both ways (so room messages flow into the primary box
//!   as events too), plus the churn above;
//! - every `--restart-every` seconds (default 300) `--restart-cmd` restarts Janus, and
//!   the driver measures how long the primary box takes to be back in its 5 rooms and
//!   publishing into all of them;
//! - once a minute it samples the primary agent (`--agent-pid`): RSS, open file
//!   descriptors, threads and CPU time.
//!
//! Every command carries a unique id and must get exactly one reply: `lost` counts those
//! that did not (within 75 s; the agent itself answers 1000902 after 60 s). The report is
//! printed and written as JSON to `--report`. Exit status: 0 when no command was lost and
//! both boxes ended in their rooms; 1 otherwise.
//!
//! `cargo run --release --example soak -- --help`

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use roomcast::config::MqttUrl;
use roomcast::control::client::CommandClient;
use roomcast::control::{BrokerSettings, Topics};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

/// The rooms the primary box keeps live (and publishes into) for the whole run.
const LIVE_ROOMS: [&str; 5] = ["room-1", "room-2", "room-3", "room-4", "room-5"];
/// The room joined and left every 3 s.
const CHURN_ROOM: &str = "churn";
/// A command without a reply after this long is lost.
const REPLY_TIMEOUT: Duration = Duration::from_secs(75);
/// Commands in flight above this are not sent (counted as `skipped`): the driver never
/// piles up unbounded work when the agent is slow.
const MAX_IN_FLIGHT: u64 = 400;

#[derive(Parser, Debug)]
#[command(about = "roomcast soak driver (see scripts/soak.sh)")]
struct Args {
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: String,
    /// The box under test (publishes into the 5 rooms).
    #[arg(long, default_value = "box-17")]
    primary: String,
    /// The other box in the same rooms (sends and receives messages).
    #[arg(long, default_value = "box-18")]
    peer: String,
    /// The primary agent's process id, for RSS, file descriptors and CPU.
    #[arg(long)]
    agent_pid: u32,
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Commands per second, both boxes together.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    #[arg(long, default_value_t = 300)]
    restart_every: u64,
    /// A shell command that restarts Janus (run with `bash -c`).
    #[arg(long)]
    restart_cmd: Option<String>,
    #[arg(long, default_value = "soak-report.json")]
    report: String,
}

#[derive(Default)]
struct Counts {
    sent: u64,
    ok: u64,
    /// Error replies by code (a refusal is a reply too: nothing lost).
    errors: BTreeMap<u32, u64>,
    /// No reply within REPLY_TIMEOUT, or the driver's connection broke.
    lost: u64,
    lost_ops: BTreeMap<String, u64>,
    by_op: BTreeMap<String, u64>,
    latencies_ms: Vec<f64>,
}

#[derive(Default)]
struct Observed {
    /// `"{box} {event} {reason or state}"` → count.
    events: BTreeMap<String, u64>,
    /// `online` status messages per box (MQTT connections of the agents).
    online: BTreeMap<String, u64>,
}

struct Driver {
    primary: CommandClient,
    peer: CommandClient,
    counts: Mutex<Counts>,
    in_flight: AtomicU64,
    skipped: AtomicU64,
    repairs: AtomicU64,
    messages: AtomicU64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Primary,
    Peer,
}

impl Driver {
    fn client(&self, target: Target) -> &CommandClient {
        match target {
            Target::Primary => &self.primary,
            Target::Peer => &self.peer,
        }
    }

    /// Sends one command and records its fate. `None` when it got no reply.
    async fn command(&self, target: Target, op: &str, args: Value) -> Option<Value> {
        if let Ok(mut c) = self.counts.lock() {
            c.sent += 1;
            *c.by_op.entry(op.to_owned()).or_default() += 1;
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let reply = self.client(target).request(op, args).await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut c = self.counts.lock().ok()?;
        match reply {
            Ok(reply) => {
                c.latencies_ms.push(ms);
                if reply.get("ok").and_then(Value::as_bool) == Some(true) {
                    c.ok += 1;
                } else {
                    let code = reply
                        .pointer("/error/code")
                        .and_then(Value::as_u64)
                        .unwrap_or(0) as u32;
                    *c.errors.entry(code).or_default() += 1;
                }
                Some(reply)
            }
            Err(e) => {
                c.lost += 1;
                *c.lost_ops.entry(op.to_owned()).or_default() += 1;
                eprintln!("soak: {op} got no reply: {e}");
                None
            }
        }
    }

    fn spawn(self: &Arc<Self>, target: Target, op: &'static str, args: Value) {
        if self.in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let driver = self.clone();
        tokio::spawn(async move {
            driver.command(target, op, args).await;
        });
    }

    async fn state(&self, target: Target) -> Option<Value> {
        let reply = self.command(target, "get_state", json!({})).await?;
        reply.get("result").cloned()
    }

    /// Puts a box back into its rooms (and the primary's streams back) if the SFU or a
    /// failed reconnect took it out. Returns whether everything was already in place.
    async fn reconcile(&self, target: Target, own: &str) -> bool {
        let Some(state) = self.state(target).await else {
            return false;
        };
        let rooms: Vec<&str> = state["rooms"]
            .as_array()
            .map(|r| r.iter().filter_map(|r| r["room_id"].as_str()).collect())
            .unwrap_or_default();
        let streams: Vec<&str> = state["publishing"]
            .as_array()
            .map(|p| p.iter().filter_map(|p| p["stream_id"].as_str()).collect())
            .unwrap_or_default();
        let mut complete = true;
        for room in LIVE_ROOMS {
            if !rooms.contains(&room) {
                complete = false;
                self.repairs.fetch_add(1, Ordering::Relaxed);
                self.command(target, "login_room", json!({"room_id": room}))
                    .await;
            }
            let stream = format!("{own}-{room}");
            if target == Target::Primary && !streams.contains(&stream.as_str()) {
                complete = false;
                self.repairs.fetch_add(1, Ordering::Relaxed);
                self.command(
                    target,
                    "start_publishing",
                    json!({"stream_id": stream, "room_id": room, "channel": "main"}),
                )
                .await;
            }
        }
        complete
    }

    /// Whether the primary box is in its 5 rooms, Logined, publishing into all 5.
    async fn primary_live(&self) -> bool {
        let Some(state) = self.state(Target::Primary).await else {
            return false;
        };
        let rooms_ok = LIVE_ROOMS.iter().all(|room| {
            state["rooms"].as_array().is_some_and(|rooms| {
                rooms
                    .iter()
                    .any(|r| r["room_id"] == *room && r["state"] == "Logined")
            })
        });
        let publishing = state["publishing"].as_array().map_or(0, |p| {
            p.iter()
                .filter(|p| {
                    p["state"] == "Publishing"
                        && LIVE_ROOMS.iter().any(|room| p["room_id"] == *room)
                })
                .count()
        });
        rooms_ok && publishing == LIVE_ROOMS.len()
    }
}

/// One minute's sample of the agent process.
#[derive(Clone, Copy, Default)]
struct Sample {
    rss_kib: u64,
    fds: u64,
    threads: u64,
    cpu_ticks: u64,
}

fn sample(pid: u32) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after `) state`.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Sample {
        rss_kib: field("VmRSS:")?,
        fds,
        threads: field("Threads:")?,
        cpu_ticks: utime + stime,
    })
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Counts every event and status message of every box.
fn watch_events(broker: &MqttUrl, observed: Arc<Mutex<Observed>>) {
    let mut options = MqttOptions::new(
        format!("soak-watch-{:08x}", rand::random::<u32>()),
        &broker.host,
        broker.port,
    );
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(4 * 1024 * 1024, 64 * 1024);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client
                        .subscribe("roomcast/+/events", QoS::AtLeastOnce)
                        .await;
                    let _ = client
                        .subscribe("roomcast/+/status", QoS::AtLeastOnce)
                        .await;
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let mut levels = publish.topic.split('/');
                    let device = levels.nth(1).unwrap_or("?").to_owned();
                    let kind = levels.next().unwrap_or("");
                    let Ok(mut seen) = observed.lock() else {
                        continue;
                    };
                    if kind == "status" {
                        if &publish.payload[..] == b"online" {
                            *seen.online.entry(device).or_default() += 1;
                        }
                        continue;
                    }
                    let Ok(event) = serde_json::from_slice::<Value>(&publish.payload) else {
                        continue;
                    };
                    let name = event["event"].as_str().unwrap_or("?");
                    let detail = event["reason"]
                        .as_str()
                        .or_else(|| event["state"].as_str())
                        .or_else(|| event["update_type"].as_str())
                        .unwrap_or("");
                    *seen
                        .events
                        .entry(format!("{device} {name} {detail}").trim_end().to_owned())
                        .or_default() += 1;
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("soak: event watcher: {e}; reconnecting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
}

async fn connect(broker: &MqttUrl, device: &str) -> Result<CommandClient, String> {
    let settings = BrokerSettings {
        url: broker.clone(),
        client_id: format!("soak-{device}-{:08x}", rand::random::<u32>()),
        username: None,
        password: None,
        ca_file: None,
        client_cert: None,
        keepalive: Duration::from_secs(30),
    };
    CommandClient::connect(&settings, Topics::new("roomcast", device), REPLY_TIMEOUT)
        .await
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("soak: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<bool, String> {
    let broker = MqttUrl::parse(&args.broker)?;
    let observed = Arc::new(Mutex::new(Observed::default()));
    watch_events(&broker, observed.clone());
    let driver = Arc::new(Driver {
        primary: connect(&broker, &args.primary).await?,
        peer: connect(&broker, &args.peer).await?,
        counts: Mutex::default(),
        in_flight: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        repairs: AtomicU64::new(0),
        messages: AtomicU64::new(0),
    });

    // ---- setup: both boxes in the 5 rooms, the primary publishing into each ----------
    let setup_started = Instant::now();
    for target in [Target::Primary, Target::Peer] {
        for room in LIVE_ROOMS {
            driver
                .command(target, "login_room", json!({"room_id": room}))
                .await;
        }
    }
    for room in LIVE_ROOMS {
        let stream = format!("{}-{room}", args.primary);
        driver
            .command(
                Target::Primary,
                "start_publishing",
                json!({"stream_id": stream, "room_id": room, "channel": "main"}),
            )
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while !driver.primary_live().await {
        if Instant::now() > deadline {
            return Err("the primary box was not live in its 5 rooms within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "soak: setup done in {:.1} s: {} in 5 rooms publishing into each, {} in the same rooms",
        setup_started.elapsed().as_secs_f64(),
        args.primary,
        args.peer
    );

    // ---- the run ------------------------------------------------------------------
    let ticks_per_s = clock_ticks_per_second();
    let run_for = Duration::from_secs_f64(args.minutes * 60.0);
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut samples: Vec<(f64, Sample)> = Vec::new();
    let first = sample(args.agent_pid).ok_or("cannot read the agent's /proc entry")?;
    samples.push((0.0, first));
    println!(
        "soak: minute  sent  replied  lost  rss_MiB  fds  threads  cpu_%  reconnected  repairs"
    );

    // Janus restarts, and how long the primary box takes to be live again.
    let recoveries: Arc<Mutex<Vec<f64>>> = Arc::default();
    let restarter = {
        let (driver, stop, recoveries) = (driver.clone(), stop.clone(), recoveries.clone());
        let (observed, primary) = (observed.clone(), args.primary.clone());
        let restart_cmd = args.restart_cmd.clone();
        let every = Duration::from_secs(args.restart_every.max(1));
        tokio::spawn(async move {
            let Some(cmd) = restart_cmd else { return };
            let mut next = Instant::now() + every;
            loop {
                tokio::time::sleep_until(next.into()).await;
                // No restart in the last minute: the run ends with a settled box.
                if stop.load(Ordering::Relaxed)
                    || next + Duration::from_secs(60) > started + run_for
                {
                    return;
                }
                next += every;
                let reconnecting = |o: &Mutex<Observed>| {
                    o.lock().map_or(0, |o| {
                        o.events
                            .get(&format!("{primary} room_state_changed Reconnecting"))
                            .copied()
                            .unwrap_or(0)
                    })
                };
                let before = reconnecting(&observed);
                let at = started.elapsed().as_secs_f64();
                // Measured from the kill: the outage and the recovery together.
                let restarted = Instant::now();
                let status = tokio::process::Command::new("bash")
                    .arg("-c")
                    .arg(&cmd)
                    .status()
                    .await;
                println!("soak: {at:.0} s: Janus killed and restarted ({status:?})");
                let deadline = restarted + Duration::from_secs(120);
                // First the box must notice (its rooms report Reconnecting), then be
                // back: Logined in the 5 rooms and publishing into each.
                while reconnecting(&observed) == before && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if driver.primary_live().await {
                        let took = restarted.elapsed().as_secs_f64();
                        println!("soak: live again in 5 rooms {took:.1} s after the kill");
                        if let Ok(mut r) = recoveries.lock() {
                            r.push(took);
                        }
                        break;
                    }
                    if Instant::now() > deadline {
                        println!("soak: NOT live again 120 s after the restart");
                        break;
                    }
                }
            }
        })
    };

    // Repairs: a room given up after a failed reconnect is joined again (a dashboard
    // would do the same); counted, so the report shows whether it was ever needed.
    let repairer = {
        let (driver, stop) = (driver.clone(), stop.clone());
        let (primary, peer) = (args.primary.clone(), args.peer.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(15)).await;
                driver.reconcile(Target::Primary, &primary).await;
                driver.reconcile(Target::Peer, &peer).await;
            }
        })
    };

    let interval = Duration::from_secs_f64(1.0 / args.rate.max(0.1));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ticks_per_cycle = (3.0 * args.rate).round().max(3.0) as u64;
    let mut tick: u64 = 0;
    let mut next_sample = started + Duration::from_secs(60);
    let mut last_sent = 0;
    let mut last_replied = 0;
    while started.elapsed() < run_for {
        ticker.tick().await;
        tick += 1;
        let phase = tick % ticks_per_cycle;
        let room = LIVE_ROOMS[(tick / 7) as usize % LIVE_ROOMS.len()];
        let n = driver.messages.fetch_add(1, Ordering::Relaxed);
        if phase == 0 {
            driver.spawn(
                Target::Primary,
                "login_room",
                json!({"room_id": CHURN_ROOM}),
            );
        } else if phase == ticks_per_cycle / 3 {
            driver.spawn(
                Target::Primary,
                "start_publishing",
                json!({"stream_id": format!("{}-churn", args.primary), "room_id": CHURN_ROOM, "channel": "main"}),
            );
        } else if phase == 2 * ticks_per_cycle / 3 {
            driver.spawn(
                Target::Primary,
                "logout_room",
                json!({"room_id": CHURN_ROOM}),
            );
        } else {
            match tick % 6 {
                0 => driver.spawn(Target::Primary, "get_state", json!({})),
                1 => driver.spawn(
                    Target::Peer,
                    "send_broadcast_message",
                    json!({"room_id": room, "message": format!("soak message {n} from the peer")}),
                ),
                2 => driver.spawn(
                    Target::Primary,
                    "send_broadcast_message",
                    json!({"room_id": room, "message": format!("soak message {n} from the primary")}),
                ),
                3 => driver.spawn(
                    Target::Peer,
                    "send_custom_command",
                    json!({"room_id": room, "command": format!("raise-hand {n}"), "to_users": [args.primary]}),
                ),
                4 => driver.spawn(Target::Peer, "get_state", json!({})),
                _ => driver.spawn(
                    Target::Primary,
                    "send_custom_command",
                    json!({"room_id": room, "command": format!("mute {n}")}),
                ),
            }
        }

        // Sampled at the same point of the churn cycle every time: just before the next
        // login, when the churn room has been left, so samples compare like with like.
        if Instant::now() >= next_sample && phase + 1 == ticks_per_cycle {
            next_sample += Duration::from_secs(60);
            let minute = started.elapsed().as_secs_f64() / 60.0;
            let now = sample(args.agent_pid).ok_or("the agent process is gone")?;
            let (sent, replied, lost) = driver
                .counts
                .lock()
                .map(|c| (c.sent, c.ok + c.errors.values().sum::<u64>(), c.lost))
                .unwrap_or_default();
            let previous = samples.last().map(|(_, s)| *s).unwrap_or(now);
            let cpu = (now.cpu_ticks - previous.cpu_ticks) as f64 / ticks_per_s / 60.0 * 100.0;
            let reconnected = observed
                .lock()
                .map(|o| {
                    o.events
                        .get(&format!("{} room_state_changed Reconnected", args.primary))
                        .copied()
                        .unwrap_or(0)
                })
                .unwrap_or(0);
            println!(
                "soak: {minute:6.1} {:5} {:8} {lost:5} {:8.1} {:4} {:8} {cpu:6.1} {reconnected:12} {:8}",
                sent - last_sent,
                replied - last_replied,
                now.rss_kib as f64 / 1024.0,
                now.fds,
                now.threads,
                driver.repairs.load(Ordering::Relaxed),
            );
            last_sent = sent;
            last_replied = replied;
            samples.push((minute, now));
        }
    }
    stop.store(true, Ordering::Relaxed);
    restarter.abort();
    let _ = repairer.await;

    // Every command sent must be answered: wait for the last ones.
    let drain_deadline = Instant::now() + REPLY_TIMEOUT + Duration::from_secs(5);
    while driver.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A settled end: the churn room left (as at every sample), the primary box back in
    // its 5 rooms, publishing.
    driver
        .command(
            Target::Primary,
            "logout_room",
            json!({"room_id": CHURN_ROOM}),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settle_deadline = Instant::now() + Duration::from_secs(60);
    let mut live = driver.primary_live().await;
    while !live && Instant::now() < settle_deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        live = driver.primary_live().await;
    }
    let end = sample(args.agent_pid).ok_or("the agent process is gone at the end")?;
    let elapsed = started.elapsed().as_secs_f64();
    samples.push((elapsed / 60.0, end));

    // ---- the report -----------------------------------------------------------------
    let counts = driver.counts.lock().map_err(|_| "counts poisoned")?;
    let seen = observed.lock().map_err(|_| "events poisoned")?;
    let replied = counts.ok + counts.errors.values().sum::<u64>();
    let mut latencies = counts.latencies_ms.clone();
    latencies.sort_by(f64::total_cmp);
    // RSS and fds "at start": the first sample after a minute of load (pipelines, Janus
    // handles and buffers all exist by then); "at end": after the last command.
    let baseline = samples.get(1).map_or(first, |(_, s)| *s);
    let growth = |a: u64, b: u64| (b as f64 - a as f64) / (a.max(1) as f64) * 100.0;
    // (The end sample closes a last, partial window; shorter than 10 s it says nothing.)
    let cpu_per_minute: Vec<f64> = samples
        .windows(2)
        .filter(|w| w[1].0 - w[0].0 >= 10.0 / 60.0)
        .map(|w| {
            let minutes = (w[1].0 - w[0].0).max(1e-6);
            (w[1].1.cpu_ticks - w[0].1.cpu_ticks) as f64 / ticks_per_s / (minutes * 60.0) * 100.0
        })
        .collect();
    let cpu_mean = cpu_per_minute.iter().sum::<f64>() / cpu_per_minute.len().max(1) as f64;
    let cpu_max = cpu_per_minute.iter().copied().fold(0.0, f64::max);
    let recoveries = recoveries.lock().map(|r| r.clone()).unwrap_or_default();
    let report = json!({
        "minutes": elapsed / 60.0,
        "rate_per_s": args.rate,
        "commands": {
            "sent": counts.sent,
            "replied": replied,
            "ok": counts.ok,
            "error_replies_by_code": counts.errors,
            "lost": counts.lost,
            "lost_by_op": counts.lost_ops,
            "skipped_by_driver": driver.skipped.load(Ordering::Relaxed),
            "by_op": counts.by_op,
            "latency_ms": {
                "p50": percentile(&latencies, 0.5),
                "p90": percentile(&latencies, 0.9),
                "p99": percentile(&latencies, 0.99),
                "max": latencies.last().copied().unwrap_or(0.0),
            },
        },
        "janus_restarts": recoveries.len(),
        "recovery_s": recoveries,
        "repairs": driver.repairs.load(Ordering::Relaxed),
        "events": seen.events,
        "mqtt_online": seen.online,
        "agent": {
            "rss_kib": {"first": first.rss_kib, "start": baseline.rss_kib, "end": end.rss_kib,
                        "growth_percent": growth(baseline.rss_kib, end.rss_kib)},
            "fds": {"first": first.fds, "start": baseline.fds, "end": end.fds,
                    "growth_percent": growth(baseline.fds, end.fds)},
            "threads": {"start": baseline.threads, "end": end.threads},
            "cpu_percent_per_minute": cpu_per_minute,
            "samples": samples.iter().map(|(minute, s)| json!({
                "minute": minute, "rss_kib": s.rss_kib, "fds": s.fds, "threads": s.threads,
            })).collect::<Vec<_>>(),
            "cpu_percent_mean": cpu_mean,
            "cpu_percent_max": cpu_max,
        },
        "ended_live": live,
    });
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&args.report, &text).map_err(|e| format!("{}: {e}", args.report))?;
    println!("{text}");
    let passed = counts.lost == 0 && live;
    println!(
        "soak: {} — {} commands sent, {} replied, {} lost; RSS {} → {} KiB ({:+.1} %), fds {} → {} ({:+.1} %)",
        if passed { "PASSED" } else { "FAILED" },
        counts.sent,
        replied,
        counts.lost,
        baseline.rss_kib,
        end.rss_kib,
        growth(baseline.rss_kib, end.rss_kib),
        baseline.fds,
        end.fds,
        growth(baseline.fds, end.fds),
    );
    Ok(passed)
}
