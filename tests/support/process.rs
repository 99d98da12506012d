//! `roomcast run` as a real process, the way systemd runs it: a config file, a state
//! folder, a notify socket the test binds (NOTIFY_SOCKET), signals, stderr in a file.
//! Optionally the test-only fault socket (ROOMCAST_FAULT_SOCKET).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::TempDir;

/// Config text for a subprocess agent (multi-room, test sources, small picture).
pub fn config_text(mqtt_url: &str, janus_url: &str, state_dir: &Path, extra: &str) -> String {
    format!(
        r#"
device_id = "box-17"
state_dir = "{state}"

[identity]
user_id = "box-17"
user_name = "Room 101 camera"

[rooms]
mode = "multi"
max_rooms = 5
multi_room_enabled = true

[sources.main]
video = "test"
width = 320
height = 240
framerate = 15
audio = "test"

[player]
audio_device = "null"

[mqtt]
url = "{mqtt_url}"
keepalive_s = 5

[janus]
url = "{janus_url}"
request_timeout_ms = 3000
reconnect_window_s = 60
{extra}
"#,
        state = state_dir.display()
    )
}

/// How to start the process.
#[derive(Default)]
pub struct Options {
    /// Bind a notify socket and set NOTIFY_SOCKET.
    pub notify: bool,
    /// WATCHDOG_USEC to set (with `notify`).
    pub watchdog_usec: Option<u64>,
    /// Turn on the fault socket.
    pub faults: bool,
    pub rust_log: Option<String>,
    pub args: Vec<String>,
    /// Run the agent in this network namespace (`uplink::BoxNet`): the PID of a
    /// process in it, for `nsenter`.
    pub netns_pid: Option<u32>,
    /// Extra environment for the agent.
    pub env: Vec<(String, String)>,
}

/// One notify datagram and when it arrived.
#[derive(Debug, Clone)]
pub struct Notification {
    pub at: Instant,
    pub text: String,
}

impl Notification {
    pub fn has(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }

    pub fn status(&self) -> Option<&str> {
        self.text.lines().find_map(|l| l.strip_prefix("STATUS="))
    }
}

pub struct AgentProcess {
    child: Option<Child>,
    pub dir: TempDir,
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    pub started: Instant,
    log_path: PathBuf,
    notifications: Arc<Mutex<Vec<Notification>>>,
    fault_socket: Option<PathBuf>,
    runs: u32,
    options: Options,
}

impl AgentProcess {
    /// Writes `config` (text with `@STATE@` for the state folder) and starts the agent.
    pub fn start(config: &str, options: Options) -> Self {
        let mut process = Self::prepare(config, options);
        process.spawn();
        process
    }

    /// Writes the files; [`AgentProcess::spawn`] starts it.
    pub fn prepare(config: &str, options: Options) -> Self {
        let dir = TempDir::new("process");
        let state_dir = dir.path().join("state");
        let config_path = dir.path().join("roomcast.toml");
        std::fs::write(
            &config_path,
            config.replace("@STATE@", &state_dir.display().to_string()),
        )
        .expect("write the config");
        let notifications = Arc::new(Mutex::new(Vec::new()));
        if options.notify {
            let socket = UnixDatagram::bind(dir.path().join("notify.sock")).expect("bind notify");
            let seen = notifications.clone();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 8192];
                while let Ok(n) = socket.recv(&mut buffer) {
                    let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                    let Ok(mut seen) = seen.lock() else { return };
                    seen.push(Notification {
                        at: Instant::now(),
                        text,
                    });
                }
            });
        }
        let fault_socket = options.faults.then(|| dir.path().join("faults.sock"));
        Self {
            child: None,
            log_path: dir.path().join("agent-1.log"),
            dir,
            config_path,
            state_dir,
            started: Instant::now(),
            notifications,
            fault_socket,
            runs: 0,
            options,
        }
    }

    /// Starts the process (again, after it exited or was killed): same files.
    pub fn spawn(&mut self) {
        self.runs += 1;
        self.log_path = self.dir.path().join(format!("agent-{}.log", self.runs));
        let log = std::fs::File::create(&self.log_path).expect("create the agent log");
        let mut command = match self.options.netns_pid {
            // nsenter execs the agent: the child's PID is the agent's.
            Some(pid) => {
                let mut command = Command::new("nsenter");
                command
                    .arg("-t")
                    .arg(pid.to_string())
                    .arg("-n")
                    .arg("--")
                    .arg(env!("CARGO_BIN_EXE_roomcast"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_roomcast")),
        };
        command
            .arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .args(&self.options.args)
            .env(
                "RUST_LOG",
                self.options.rust_log.as_deref().unwrap_or("info"),
            )
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM")
            .env_remove("ROOMCAST_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log);
        if self.options.notify {
            command.env("NOTIFY_SOCKET", self.dir.path().join("notify.sock"));
            if let Some(usec) = self.options.watchdog_usec {
                command.env("WATCHDOG_USEC", usec.to_string());
            }
        }
        if let Some(path) = &self.fault_socket {
            command.env("ROOMCAST_FAULT_SOCKET", path);
        }
        command.envs(self.options.env.iter().map(|(k, v)| (k, v)));
        self.started = Instant::now();
        self.child = Some(command.spawn().expect("start roomcast run"));
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("the agent was started")
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit; `None` if it is still running after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child().try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The log of the current (or last) run.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Every run's log.
    pub fn all_logs(&self) -> String {
        (1..=self.runs)
            .map(|n| {
                std::fs::read_to_string(self.dir.path().join(format!("agent-{n}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn notifications(&self) -> Vec<Notification> {
        self.notifications
            .lock()
            .map(|n| n.clone())
            .unwrap_or_default()
    }

    /// Waits for a notification matching `want`, at or after index `from`; returns its
    /// index and itself.
    pub fn wait_notification(
        &self,
        what: &str,
        from: usize,
        within: Duration,
        want: impl Fn(&Notification) -> bool,
    ) -> (usize, Notification) {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.notifications();
            if let Some((i, n)) = seen.iter().enumerate().skip(from).find(|(_, n)| want(n)) {
                return (i, n.clone());
            }
            if Instant::now() >= deadline {
                panic!(
                    "no notification within {within:?}: {what}; got {:?}\nagent log:\n{}",
                    seen.iter().map(|n| &n.text).collect::<Vec<_>>(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a command to the fault socket and returns the answer.
    pub fn fault(&self, command: &str) -> String {
        let path = self.fault_socket.as_ref().expect("started with faults");
        let reply_path = self
            .dir
            .path()
            .join(format!("fault-client-{}.sock", rand::random::<u32>()));
        let socket = UnixDatagram::bind(&reply_path).expect("bind the fault client");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let deadline = Instant::now() + Duration::from_secs(10);
        while socket.send_to(command.as_bytes(), path).is_err() {
            assert!(Instant::now() < deadline, "the fault socket never appeared");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut buffer = [0u8; 1024];
        let n = socket
            .recv(&mut buffer)
            .expect("an answer from the fault socket");
        let _ = std::fs::remove_file(&reply_path);
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    }

    /// The saved state file, parsed (panics when it is not readable).
    pub fn state_file(&self) -> roomcast::service::state::DesiredState {
        let bytes = std::fs::read(self.state_dir.join("state.json")).expect("a state file");
        roomcast::service::state::parse_state(&bytes).expect("a readable state file")
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
