//! A real Janus 1.1.2 per test: config written from `tests/janus-config`, free ports,
//! started in the foreground, stopped (and restartable) by PID.
//!
//! Where the tests run on a system without a `janus` package (Debian 13:
//! `scripts/test-on.sh`), two variables say where Janus is instead:
//! `ROOMCAST_TEST_JANUS`, the program to start (given Janus's arguments; it must exec
//! Janus, so that its PID is Janus's), and `ROOMCAST_TEST_JANUS_LIBDIR`, Janus's
//! plugin folder as that program sees it (the config names it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{TempDir, free_port};

pub struct Janus {
    dir: TempDir,
    pub ws_port: u16,
    pub admin_port: u16,
    pub admin_secret: String,
    extra_general: String,
    /// Where the WebSocket API listens: loopback, or an address a box in another
    /// namespace reaches (`uplink::BoxNet`).
    ws_ip: String,
    /// `wss://` too: its port and the certificate and key files (PEM).
    wss: Option<(u16, PathBuf, PathBuf)>,
    /// `nat.ice_enforce_list`: gather (and advertise) only these addresses or prefixes.
    enforce: Option<String>,
    child: Option<Child>,
    starts: u32,
}

/// The program that starts Janus: `janus` from `PATH` unless `ROOMCAST_TEST_JANUS`
/// names another (see the module docs).
fn program() -> std::ffi::OsString {
    std::env::var_os("ROOMCAST_TEST_JANUS").unwrap_or_else(|| "janus".into())
}

fn libdir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ROOMCAST_TEST_JANUS_LIBDIR") {
        return PathBuf::from(dir);
    }
    let candidates = std::fs::read_dir("/usr/lib")
        .expect("read /usr/lib")
        .filter_map(Result::ok)
        .map(|e| e.path().join("janus"))
        .filter(|p| p.join("plugins").is_dir());
    candidates
        .into_iter()
        .next()
        .expect("Janus is not installed (apt-get install janus)")
}

impl Janus {
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts Janus with extra lines in the `general` section (e.g. an api_secret).
    pub fn start_with(extra_general: &str) -> Self {
        Self::start_configured("127.0.0.1", extra_general, None)
    }

    /// Starts Janus with its WebSocket API on `ws_ip` (an address of this namespace).
    pub fn start_at(ws_ip: &str, extra_general: &str) -> Self {
        Self::start_configured(ws_ip, extra_general, None)
    }

    /// As [`Janus::start_at`], advertising only the addresses that start with `prefix`
    /// (`nat.ice_enforce_list`), as a server configured for its network does; otherwise
    /// Janus offers every address of its namespace.
    pub fn start_at_enforcing(ws_ip: &str, prefix: &str) -> Self {
        let mut janus = Self::new_configured(ws_ip, "", None);
        janus.enforce = Some(prefix.to_owned());
        janus.write_config();
        let config =
            std::fs::read_to_string(janus.dir.path().join("janus.jcfg")).expect("read janus.jcfg");
        assert!(
            config.contains("ice_enforce_list"),
            "tests/janus-config/janus.jcfg lost its ice_ignore_list line"
        );
        janus.launch();
        janus
    }

    /// Starts Janus serving `wss://` as well ([`Janus::wss_url`]) with this certificate
    /// and key (PEM), e.g. from [`super::certs::make_certs`].
    pub fn start_wss(cert: &Path, key: &Path) -> Self {
        Self::start_configured(
            "127.0.0.1",
            "",
            Some((free_port(), cert.to_owned(), key.to_owned())),
        )
    }

    fn start_configured(
        ws_ip: &str,
        extra_general: &str,
        wss: Option<(u16, PathBuf, PathBuf)>,
    ) -> Self {
        let mut janus = Self::new_configured(ws_ip, extra_general, wss);
        janus.write_config();
        janus.launch();
        janus
    }

    fn new_configured(
        ws_ip: &str,
        extra_general: &str,
        wss: Option<(u16, PathBuf, PathBuf)>,
    ) -> Self {
        super::require_netns();
        Self {
            ws_ip: ws_ip.to_owned(),
            dir: TempDir::new("janus"),
            ws_port: free_port(),
            admin_port: free_port(),
            admin_secret: format!("admin-{}", std::process::id()),
            extra_general: extra_general.to_owned(),
            wss,
            enforce: None,
            child: None,
            starts: 0,
        }
    }

    pub fn wss_url(&self) -> String {
        let (port, ..) = self.wss.as_ref().expect("started with start_wss");
        format!("wss://127.0.0.1:{port}")
    }

    fn write_config(&self) {
        let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/janus-config");
        let rtp_base = 20000 + (rand::random::<u16>() % 40) * 1000;
        for entry in std::fs::read_dir(&templates).expect("read tests/janus-config") {
            let path = entry.expect("entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("jcfg") {
                continue;
            }
            let mut text = std::fs::read_to_string(&path).expect("read template");
            if let (Some((port, cert, key)), Some("janus.transport.websockets.jcfg")) =
                (&self.wss, path.file_name().and_then(|n| n.to_str()))
            {
                text = text.replace(
                    "wss = false",
                    &format!("wss = true\n\twss_port = {port}\n\twss_ip = \"127.0.0.1\""),
                ) + &format!(
                    "certificates: {{\n\tcert_pem = \"{}\"\n\tcert_key = \"{}\"\n}}\n",
                    cert.display(),
                    key.display()
                );
            }
            let text = text
                .replace("@CONFIG_DIR@", &self.dir.path().display().to_string())
                .replace("@JANUS_LIBDIR@", &libdir().display().to_string())
                .replace("@ADMIN_SECRET@", &self.admin_secret)
                .replace("@RTP_RANGE@", &format!("{rtp_base}-{}", rtp_base + 999))
                .replace("@ADMIN_PORT@", &self.admin_port.to_string())
                .replace("@WS_PORT@", &self.ws_port.to_string())
                .replace("@WS_IP@", &self.ws_ip)
                .replace("@EXTRA_GENERAL@", &self.extra_general);
            let text = match &self.enforce {
                Some(prefix) => text.replace(
                    "ice_ignore_list = \"vmnet\"",
                    &format!("ice_enforce_list = \"{prefix}\""),
                ),
                None => text,
            };
            std::fs::write(self.dir.path().join(path.file_name().expect("name")), text)
                .expect("write config");
        }
    }

    fn launch(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).expect("create janus log");
        let child = Command::new(program())
            .arg("-C")
            .arg(self.dir.path().join("janus.jcfg"))
            .arg("-F")
            .arg(self.dir.path())
            .arg("-o")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start janus ({:?}): {e}", program()));
        self.child = Some(child);
        if !super::wait_listening_at(&self.ws_ip, self.ws_port, Duration::from_secs(10)) {
            panic!(
                "Janus did not listen on {} within 10 s; its log:\n{}",
                self.ws_port,
                self.log()
            );
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("janus-{}.log", self.starts))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}:{}", self.ws_ip, self.ws_port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills Janus with SIGKILL (a crash, as far as its clients can tell).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Janus again on the same ports, with no memory of the old sessions.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// A request to the Admin API (`POST /admin` or `/admin/<session>/<handle>`).
    pub async fn admin(&self, path: &str, mut body: serde_json::Value) -> serde_json::Value {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        body["admin_secret"] = serde_json::json!(self.admin_secret);
        body["transaction"] = serde_json::json!(format!("admin-{}", rand::random::<u32>()));
        let payload = body.to_string();
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.admin_port))
            .await
            .expect("connect to the Janus admin API");
        let request = format!(
            "POST /admin{path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
            payload.len()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send admin request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read admin response");
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or("");
        serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("admin API answered non-JSON ({e}): {response}"))
    }

    /// Every handle Janus holds: `(session, handle, handle_info's "info")`.
    pub async fn handles(&self) -> Vec<(u64, u64, serde_json::Value)> {
        let mut out = Vec::new();
        let sessions = self
            .admin("", serde_json::json!({"janus": "list_sessions"}))
            .await;
        for session in sessions["sessions"].as_array().cloned().unwrap_or_default() {
            let Some(session) = session.as_u64() else {
                continue;
            };
            let handles = self
                .admin(
                    &format!("/{session}"),
                    serde_json::json!({"janus": "list_handles"}),
                )
                .await;
            for handle in handles["handles"].as_array().cloned().unwrap_or_default() {
                let Some(handle) = handle.as_u64() else {
                    continue;
                };
                let info = self
                    .admin(
                        &format!("/{session}/{handle}"),
                        serde_json::json!({"janus": "handle_info"}),
                    )
                    .await;
                out.push((session, handle, info["info"].clone()));
            }
        }
        out
    }

    /// Video packets Janus received from the publisher `feed` in `room`.
    pub async fn video_packets_in(&self, room: &str, feed: &str) -> Option<u64> {
        self.packets_in(room, feed, Some("video")).await
    }

    /// Packets Janus received from the publisher `feed` in `room`: of one media type
    /// (`video`, `audio`), or of all of them.
    pub async fn packets_in(&self, room: &str, feed: &str, kind: Option<&str>) -> Option<u64> {
        self.handles().await.into_iter().find_map(|(_, _, info)| {
            let plugin = &info["plugin_specific"];
            if plugin["room"] != room || plugin["id"] != feed || plugin["type"] != "publisher" {
                return None;
            }
            let counts = info["webrtc"]["media"]
                .as_object()?
                .values()
                .filter(|m| kind.is_none_or(|k| m["type"] == k))
                .map(|m| m["stats"]["in"]["packets"].as_u64())
                .collect::<Option<Vec<u64>>>()?;
            (!counts.is_empty()).then(|| counts.iter().sum())
        })
    }

    /// Packets Janus sent to each subscriber in `room` so far (one entry per subscriber
    /// handle: what the room's viewers received).
    pub async fn packets_out_to_subscribers(&self, room: &str) -> Vec<u64> {
        self.handles()
            .await
            .into_iter()
            .filter_map(|(_, _, info)| {
                let plugin = &info["plugin_specific"];
                if plugin["room"] != room || plugin["type"] != "subscriber" {
                    return None;
                }
                let media = info["webrtc"]["media"].as_object()?;
                Some(
                    media
                        .values()
                        .filter_map(|m| m["stats"]["out"]["packets"].as_u64())
                        .sum(),
                )
            })
            .collect()
    }

    /// Whether a VideoRoom exists (listed or private).
    pub async fn videoroom_exists(&self, room: &str) -> bool {
        let reply = self
            .admin(
                "",
                serde_json::json!({"janus": "message_plugin", "plugin": "janus.plugin.videoroom",
                    "request": {"request": "exists", "room": room}}),
            )
            .await;
        reply["response"]["exists"] == true
    }

    /// `listparticipants` of a VideoRoom, via the Admin API's plugin messaging.
    pub async fn videoroom_participants(&self, room: &str) -> Vec<serde_json::Value> {
        let reply = self
            .admin(
                "",
                serde_json::json!({"janus": "message_plugin", "plugin": "janus.plugin.videoroom",
                    "request": {"request": "listparticipants", "room": room}}),
            )
            .await;
        reply["response"]["participants"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Whether the VideoRoom and the TextRoom `room` exist.
    pub async fn rooms_exist(&self, room: &str) -> (bool, bool) {
        let mut exist = [false; 2];
        for (i, plugin) in ["janus.plugin.videoroom", "janus.plugin.textroom"]
            .iter()
            .enumerate()
        {
            let reply = self
                .admin(
                    "",
                    serde_json::json!({"janus": "message_plugin", "plugin": plugin,
                        "request": {"request": "exists", "room": room, "transaction": "admin"}}),
                )
                .await;
            exist[i] = reply["response"]["exists"] == true;
        }
        (exist[0], exist[1])
    }

    /// `listparticipants` of a TextRoom.
    pub async fn textroom_participants(&self, room: &str) -> Vec<serde_json::Value> {
        let reply = self
            .admin(
                "",
                serde_json::json!({"janus": "message_plugin", "plugin": "janus.plugin.textroom",
                    "request": {"request": "listparticipants", "room": room, "transaction": "admin"}}),
            )
            .await;
        reply["response"]["participants"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        self.kill();
    }
}
