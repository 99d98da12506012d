//! A real mosquitto 2.0 per test: config written to a TempDir, a free loopback port,
//! started in the foreground, killed / stopped / restarted by PID on the same port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{TempDir, free_port, wait_listening};

pub struct Mosquitto {
    dir: TempDir,
    pub port: u16,
    extra: String,
    child: Option<Child>,
    starts: u32,
}

impl Mosquitto {
    /// An anonymous broker on 127.0.0.1, in-memory only.
    pub fn start() -> Self {
        Self::start_with("persistence false\n")
    }

    /// A broker that saves its sessions and retained messages to disk after every change,
    /// so that they survive a SIGKILL and a restart.
    pub fn start_persistent() -> Self {
        Self::start_with(
            "persistence true\npersistence_location @DIR@/\nautosave_interval 1\nautosave_on_changes true\n",
        )
    }

    /// A broker with extra config lines (`@DIR@` is its folder). The default listener is
    /// left out when `extra` has its own `listener` line.
    pub fn start_with(extra: &str) -> Self {
        let dir = TempDir::new("mosquitto");
        // Started as root, mosquitto drops to the `mosquitto` user: let it write here.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
                .expect("chmod the mosquitto folder");
        }
        let mut broker = Self {
            port: free_port(),
            extra: extra.replace("@DIR@", &dir.path().display().to_string()),
            dir,
            child: None,
            starts: 0,
        };
        broker.launch();
        broker
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    fn launch(&mut self) {
        self.starts += 1;
        let listener = if self.extra.contains("listener ") {
            String::new()
        } else {
            format!("listener {} 127.0.0.1\nallow_anonymous true\n", self.port)
        };
        let config = format!(
            "{listener}{}\nlog_dest stderr\nlog_type all\nlog_timestamp_format %H:%M:%S\n",
            self.extra.replace("@PORT@", &self.port.to_string())
        );
        std::fs::write(self.config_path(), config).expect("write mosquitto.conf");
        let log = std::fs::File::create(self.log_path()).expect("create mosquitto log");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("start mosquitto (apt-get install mosquitto)");
        self.child = Some(child);
        // Its own listener, not someone else's on the port: mosquitto says `running`
        // once every listener is open, and exits if one cannot be.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !self.log().contains(" running") {
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if exited.is_some() || std::time::Instant::now() > deadline {
                panic!(
                    "mosquitto did not start on {} within 10 s ({exited:?}); its log:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !wait_listening(self.port, Duration::from_secs(10)) {
            panic!(
                "mosquitto did not listen on {} within 10 s; its log:\n{}",
                self.port,
                self.log()
            );
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("mosquitto-{}.log", self.starts))
    }

    /// The log of the current run.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// An anonymous broker listening on loopback and on `ip` too (an address of this
    /// namespace that a box in another one reaches: `uplink::BoxNet`).
    pub fn start_also_on(ip: &str) -> Self {
        Self::start_with(&format!(
            "listener @PORT@ 127.0.0.1\nlistener @PORT@ {ip}\nallow_anonymous true\n"
        ))
    }

    /// Its URL at `ip` (see [`Mosquitto::start_also_on`]).
    pub fn url_at(&self, ip: &str) -> String {
        format!("mqtt://{ip}:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: a crash, as far as its clients can tell (no last wills are sent).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (after [`Mosquitto::kill`], or killing it first).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}
