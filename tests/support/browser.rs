//! A browser window a test drives: headless Chromium (Debian `chromium`) over WebDriver
//! by Debian's `chromedriver`, with a small HTTP client of our own, or headless Firefox
//! over WebDriver BiDi (`firefox.rs`); fake camera and microphone, sound allowed to
//! autoplay. Every browser's profile and `HOME` live in one folder per driver, so that
//! dropping the driver can find and kill every process it started (crashpad included),
//! whatever state the test ended in.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{TempDir, free_port, wait_listening};

/// How long one WebDriver command may take (starting a browser on a loaded machine is
/// the slowest).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The WebDriver key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Chromium's command line: the flags that work here (shared/NOTES.md) plus fake media.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--password-store=basic",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    // Real host candidates instead of mDNS names (Janus ignores .local candidates).
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    // Keep timers and rendering running in a browser nobody looks at.
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--window-size=1280,800",
];

pub struct ChromeDriver {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl ChromeDriver {
    pub fn start() -> Self {
        for program in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: apt-get install chromium chromium-driver \
                 (scripts/install-deps.sh)"
            );
        }
        let dir = TempDir::new("chromedriver");
        let port = free_port();
        let mut command = Command::new("/usr/bin/chromedriver");
        command
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.path().join("chromedriver.log").display()
            ))
            // Chromium keeps its crash database and caches under HOME / XDG folders: ours.
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // Its own process group, which the browsers it starts join.
            command.process_group(0);
        }
        let child = command.spawn().expect("start chromedriver");
        let driver = Self {
            child: Some(child),
            port,
            dir,
        };
        assert!(
            wait_listening(port, Duration::from_secs(15)),
            "chromedriver did not listen within 15 s"
        );
        driver
    }

    /// Starts a browser (a WebDriver session) with its own profile.
    pub async fn open(&self, name: &str) -> Browser {
        let profile = self.dir.path().join(format!("profile-{name}"));
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|s| (*s).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
            "timeouts": {"script": 30_000, "pageLoad": 30_000},
        }}});
        let value = webdriver(self.port, "POST", "/session", Some(&capabilities))
            .await
            .unwrap_or_else(|e| panic!("start the {name} browser: {e}"));
        let session = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {value}"))
            .to_owned();
        Browser::Chromium(ChromiumWindow {
            port: self.port,
            session,
            name: name.to_owned(),
        })
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("chromedriver.log")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        kill_browser(self.child.take(), self.dir.path());
    }
}

/// SIGKILLs `child` and the process group it leads (a browser or its driver started with
/// `process_group(0)`), then whatever left the group (crashpad handlers, content
/// processes) but still names `dir`, the browser's own folder, on its command line.
pub(super) fn kill_browser(child: Option<Child>, dir: &Path) {
    if let Some(mut child) = child {
        #[cfg(unix)]
        // SAFETY: kill(2) on the process group we created for this child.
        unsafe {
            libc::kill(-(child.id() as i32), libc::SIGKILL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    kill_processes_naming(dir);
}

/// SIGKILLs every process whose command line contains `dir` (processes this driver
/// started and that escaped its process group).
fn kill_processes_naming(dir: &Path) {
    let needle = dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            // SAFETY: kill(2) on a process that names our own temporary folder.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// One browser window, in Chromium or in Firefox: the same commands in both.
pub enum Browser {
    Chromium(ChromiumWindow),
    Firefox(Box<super::firefox::FirefoxWindow>),
}

impl Browser {
    pub fn name(&self) -> &str {
        match self {
            Browser::Chromium(w) => &w.name,
            Browser::Firefox(w) => &w.name,
        }
    }

    pub async fn goto(&self, url: &str) {
        match self {
            Browser::Chromium(w) => w.goto(url).await,
            Browser::Firefox(w) => w.goto(url).await,
        }
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its result.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        match self {
            Browser::Chromium(w) => w.execute(script, args).await,
            Browser::Firefox(w) => w.execute(script, args).await,
        }
    }

    /// Types `text` into the element `css` as keystrokes.
    pub async fn type_into(&self, css: &str, text: &str) {
        match self {
            Browser::Chromium(w) => w.type_into(css, text).await,
            Browser::Firefox(w) => w.type_into(css, text).await,
        }
    }

    pub async fn click(&self, css: &str) {
        match self {
            Browser::Chromium(w) => w.click(css).await,
            Browser::Firefox(w) => w.click(css).await,
        }
    }

    /// Runs `script` (no arguments) every 100 ms until `check` holds on its result;
    /// panics after `within` with what it returned last.
    pub async fn wait_for(
        &self,
        script: &str,
        what: &str,
        within: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + within;
        loop {
            let shown = self.execute(script, json!([])).await;
            if check(&shown) {
                return shown;
            }
            if std::time::Instant::now() >= deadline {
                panic!(
                    "{} browser: timed out after {within:?} waiting for: {what}\nthe page shows: {shown:#}",
                    self.name()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Resizes the window (Chromium) or the viewport (Firefox), e.g. to a tablet's.
    pub async fn set_window_size(&self, width: u32, height: u32) {
        match self {
            Browser::Chromium(w) => w.set_window_size(width, height).await,
            Browser::Firefox(w) => w.set_window_size(width, height).await,
        }
    }

    /// Saves a PNG of the window. Never panics: it is also used after a failure.
    pub async fn screenshot(&self, path: &Path) -> Result<(), String> {
        match self {
            Browser::Chromium(w) => w.screenshot(path).await,
            Browser::Firefox(w) => w.screenshot(path).await,
        }
    }

    /// `execute` that never panics (for collecting evidence after a failure).
    pub async fn try_execute(&self, script: &str) -> Result<Value, String> {
        match self {
            Browser::Chromium(w) => w.try_execute(script).await,
            Browser::Firefox(w) => w.try_execute_with(script, json!([])).await,
        }
    }

    /// Ends the session; the browser closes (Chromium) or goes with its driver.
    pub async fn close(self) {
        match self {
            Browser::Chromium(w) => w.close().await,
            Browser::Firefox(w) => (*w).close().await,
        }
    }
}

/// One Chromium window (a WebDriver session).
pub struct ChromiumWindow {
    port: u16,
    session: String,
    pub name: String,
}

impl ChromiumWindow {
    async fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        webdriver(self.port, method, &path, body)
            .await
            .unwrap_or_else(|e| panic!("{} browser: {method} {path}: {e}", self.name))
    }

    pub async fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(&json!({"url": url})))
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its result.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": args})),
        )
        .await
    }

    async fn element(&self, css: &str) -> String {
        let value = self
            .command(
                "POST",
                "/element",
                Some(&json!({"using": "css selector", "value": css})),
            )
            .await;
        value[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {value}"))
            .to_owned()
    }

    /// Types `text` into the element `css` as keystrokes.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            Some(&json!({"text": text})),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let element = self.element(css).await;
        self.command(
            "POST",
            &format!("/element/{element}/click"),
            Some(&json!({})),
        )
        .await;
    }

    /// Resizes the window (e.g. to a tablet's viewport).
    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.command(
            "POST",
            "/window/rect",
            Some(&json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Saves a PNG of the window. Never panics: it is also used after a failure.
    pub async fn screenshot(&self, path: &Path) -> Result<(), String> {
        let url = format!("/session/{}/screenshot", self.session);
        let value = webdriver(self.port, "GET", &url, None).await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap_or_default())
            .map_err(|e| format!("the screenshot is not base64: {e}"))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(path, png).map_err(|e| format!("write {}: {e}", path.display()))
    }

    /// `execute` that never panics (for collecting evidence after a failure).
    pub async fn try_execute(&self, script: &str) -> Result<Value, String> {
        let path = format!("/session/{}/execute/sync", self.session);
        let body = json!({"script": script, "args": []});
        webdriver(self.port, "POST", &path, Some(&body)).await
    }

    /// Ends the session: chromedriver closes the browser.
    pub async fn close(self) {
        let path = format!("/session/{}", self.session);
        let _ = webdriver(self.port, "DELETE", &path, None).await;
    }
}

/// One WebDriver request to chromedriver on 127.0.0.1:`port`; its `value`, or the
/// WebDriver error.
async fn webdriver(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, String> {
    let (status, body) = tokio::time::timeout(COMMAND_TIMEOUT, http(port, method, path, body))
        .await
        .map_err(|_| format!("no answer within {COMMAND_TIMEOUT:?}"))??;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        format!(
            "HTTP {status}, not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    })?;
    let value = value.get("value").cloned().unwrap_or(Value::Null);
    if status == 200 {
        Ok(value)
    } else {
        Err(format!(
            "HTTP {status}: {} {}",
            value["error"].as_str().unwrap_or_default(),
            value["message"].as_str().unwrap_or_default()
        ))
    }
}

/// A minimal HTTP/1.1 exchange (one request per connection).
async fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Vec<u8>), String> {
    let payload = body.map(Value::to_string).unwrap_or_default();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect to chromedriver: {e}"))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    // chromedriver may keep the connection open: read by Content-Length (or chunks).
    let mut response = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let complete = |response: &[u8]| -> Option<usize> {
        let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
        let body = &response[split + 4..];
        if head.contains("transfer-encoding: chunked") {
            return body.ends_with(b"0\r\n\r\n").then_some(split);
        }
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())?;
        (body.len() >= length).then_some(split)
    };
    let split = loop {
        if let Some(split) = complete(&response) {
            break split;
        }
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            // Closed: whatever came is the whole answer.
            break response
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .ok_or("no HTTP header in the answer")?;
        }
        response.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let body = response[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no HTTP status")?;
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(&body)?
    } else {
        body
    };
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("bad chunk size: {e}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err("short chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}
