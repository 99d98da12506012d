//! Where does memory go when rooms come and go? Runs the agent in-process against a local
//! Janus (inside `scripts/in-netns.sh`), keeps `base` rooms live and publishing, then
//! joins, publishes into and leaves one more room `cycles` times. Every `every` cycles it
//! trims the heap and prints RSS next to what the allocator says is in use (glibc's
//! `mallinfo2`): in-use memory that keeps rising is a leak (something holds it), RSS
//! rising with in-use flat is fragmentation. With `race` as the fourth argument the room
//! is left while its publish is still being negotiated (after 0 to 390 ms), which is
//! how a publisher's webrtcbin once got stuck on its way to NULL: threads and file
//! descriptors that keep rising say it happens again. With `restart` Janus itself is
//! killed and restarted every cycle and the agent reconnects all `base` rooms (what
//! tests/faults.rs does ten times).
//!
//! ```sh
//! ./scripts/bench.sh churn [cycles] [base] [every] [race|restart]    # e.g. 200 4 10 race
//! ```
//!
//! `ROOMCAST_CHURN_EXIT_LIVE=1` exits without stopping the agent, so that a heap profiler
//! (`heaptrack`) reports as "leaked" everything the live agent holds: run it with 5 and
//! with 25 cycles and diff the two (`heaptrack_print -d`) to see what grows per cycle.

#[path = "../tests/support/mod.rs"]
mod support;

use roomcast::engine::{Channel, Event, PublisherConfig, PublisherState, RoomStateReason, User};
use support::agent::TestAgent;
use support::janus::Janus;

fn in_room(room: &str) -> PublisherConfig {
    PublisherConfig {
        room_id: Some(room.into()),
    }
}

/// (RSS, heap in use, heap held) in KiB.
fn memory() -> (u64, u64, u64) {
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4);
    // SAFETY: mallinfo2 reads glibc's own counters.
    let info = unsafe { libc::mallinfo2() };
    let in_use = (info.uordblks + info.hblkhd) as u64 / 1024;
    let held = (info.arena + info.hblkhd) as u64 / 1024;
    (rss, in_use, held)
}

fn trim() {
    // SAFETY: malloc_trim only walks glibc's own arenas.
    unsafe { libc::malloc_trim(0) };
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` adds `--bench`: only the positional arguments count.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let number = |i: usize, default: usize| {
        args.get(i)
            .and_then(|a| a.parse::<usize>().ok())
            .unwrap_or(default)
    };
    let cycles = number(0, 200);
    let base = number(1, 4);
    let every = number(2, 25).max(1);
    let race = args.get(3).is_some_and(|a| a == "race");
    let restart = args.get(3).is_some_and(|a| a == "restart");
    support::require_netns();
    let mut janus = Janus::start();
    let agent = TestAgent::start(&janus.ws_url(), "width = 640\nheight = 360\nframerate = 15");
    let user = User::parse("box-17", "Churn").expect("a valid user");
    for i in 0..base {
        let room = format!("live-{i}");
        agent
            .engine
            .login_room(&room, user.clone(), None)
            .await
            .expect("login");
        agent
            .engine
            .start_publishing(&format!("cam-{i}"), in_room(&room), Channel::Main)
            .await
            .expect("publish");
    }
    println!("cycle  rss_KiB  heap_in_use_KiB  heap_held_KiB  threads  fds  cpu_%");
    let mut last = (
        std::time::Instant::now(),
        support::cpu_seconds("self").unwrap_or(0.0),
    );
    for cycle in 0..=cycles {
        if cycle % every == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            trim();
            let (rss, in_use, held) = memory();
            let threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
            let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
            // CPU of the whole process since the last line, % of one core.
            let now = (
                std::time::Instant::now(),
                support::cpu_seconds("self").unwrap_or(0.0),
            );
            let cpu = (now.1 - last.1) / now.0.duration_since(last.0).as_secs_f64() * 100.0;
            last = now;
            println!("{cycle:5} {rss:8} {in_use:16} {held:14} {threads:8} {fds:4} {cpu:6.1}");
        }
        if cycle == cycles {
            break;
        }
        if restart {
            let mut events = agent.engine.subscribe();
            janus.restart();
            wait_all_back(&mut events, base).await;
            continue;
        }
        agent
            .engine
            .login_room("churn", user.clone(), None)
            .await
            .expect("login churn");
        if race {
            let engine = agent.engine.clone();
            let publish = tokio::spawn(async move {
                engine
                    .start_publishing("cam-churn", in_room("churn"), Channel::Main)
                    .await
            });
            let delay = (cycle as u64 * 10) % 400;
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            agent
                .engine
                .logout_room(Some("churn"))
                .await
                .expect("logout churn");
            let _ = publish.await;
        } else {
            agent
                .engine
                .start_publishing("cam-churn", in_room("churn"), Channel::Main)
                .await
                .expect("publish churn");
            agent
                .engine
                .logout_room(Some("churn"))
                .await
                .expect("logout churn");
        }
    }
    if std::env::var_os("ROOMCAST_CHURN_EXIT_LIVE").is_some() {
        // For heaptrack: what is still allocated at exit is what the agent held while
        // live, not what a clean stop leaves behind.
        // _exit: no atexit handlers or TLS destructors, with which heaptrack's preload
        // can deadlock against GLib's threads.
        drop(janus);
        // SAFETY: ends the process at once; nothing after this runs.
        unsafe { libc::_exit(0) };
    }
    agent.stop().await;
}

/// Waits until every one of `rooms` rooms has reconnected and its stream is publishing
/// again after a Janus restart.
async fn wait_all_back(events: &mut tokio::sync::broadcast::Receiver<Event>, rooms: usize) {
    use std::collections::BTreeSet;
    let mut reconnected = BTreeSet::new();
    let mut publishing = BTreeSet::new();
    let deadline = std::time::Duration::from_secs(60);
    tokio::time::timeout(deadline, async {
        while reconnected.len() < rooms || publishing.len() < rooms {
            match events.recv().await {
                Ok(Event::RoomStateChanged {
                    room_id,
                    reason: RoomStateReason::Reconnected,
                    ..
                }) => {
                    reconnected.insert(room_id);
                }
                Ok(Event::PublisherStateUpdate {
                    stream_id,
                    state: PublisherState::Publishing,
                    ..
                }) => {
                    publishing.insert(stream_id);
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    })
    .await
    .expect("all rooms back within 60 s of a Janus restart");
}
