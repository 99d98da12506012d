//! Headless Firefox (Debian `firefox-esr`) driven over WebDriver BiDi, which Firefox
//! serves itself (`--remote-debugging-port`; Debian packages no geckodriver). The same
//! commands as the Chromium window in `browser.rs`, so that one page test runs in both.
//! The profile lives in a folder of its own, so that dropping the browser can find and
//! kill every process it started.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::browser::{Browser, kill_browser};
use super::{TempDir, free_port, wait_listening};

/// How long one BiDi command may take (starting a browser on a loaded machine is the
/// slowest).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

const PROGRAM: &str = "/usr/bin/firefox-esr";

/// Preferences for a browser nobody looks at, on a machine without a network: fake
/// media devices without prompts, sound allowed to play, real host candidates instead
/// of mDNS names (Janus ignores .local candidates), and nothing that calls home.
const PREFS: &[(&str, &str)] = &[
    ("media.navigator.streams.fake", "true"),
    ("media.navigator.permission.disabled", "true"),
    ("media.autoplay.default", "0"),
    ("media.autoplay.blocking_policy", "0"),
    ("media.peerconnection.ice.obfuscate_host_addresses", "false"),
    ("browser.shell.checkDefaultBrowser", "false"),
    ("datareporting.policy.dataSubmissionEnabled", "false"),
    ("toolkit.telemetry.enabled", "false"),
    ("app.update.enabled", "false"),
    ("app.normandy.enabled", "false"),
    ("network.captive-portal-service.enabled", "false"),
    ("network.connectivity-service.enabled", "false"),
    ("browser.safebrowsing.malware.enabled", "false"),
    ("browser.safebrowsing.phishing.enabled", "false"),
    ("extensions.update.enabled", "false"),
    ("services.settings.server", "\"http://127.0.0.1:1/\""),
    ("dom.min_background_timeout_value", "4"),
];

/// One headless Firefox with its own profile.
pub struct Firefox {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl Firefox {
    pub fn start() -> Self {
        assert!(
            Path::new(PROGRAM).exists(),
            "{PROGRAM} is missing: apt-get install firefox-esr (scripts/install-deps.sh)"
        );
        let dir = TempDir::new("firefox");
        let profile = dir.path().join("profile");
        std::fs::create_dir_all(&profile).expect("create the Firefox profile");
        let prefs: String = PREFS
            .iter()
            .map(|(name, value)| format!("user_pref(\"{name}\", {value});\n"))
            .collect();
        std::fs::write(profile.join("user.js"), prefs).expect("write user.js");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("firefox.log")).expect("create log");
        let mut command = Command::new(PROGRAM);
        command
            .args(["--headless", "--no-remote", "--profile"])
            .arg(&profile)
            .arg("--remote-debugging-port")
            .arg(port.to_string())
            .args(["--remote-allow-hosts", "127.0.0.1"])
            .arg("about:blank")
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .env("MOZ_CRASHREPORTER_DISABLE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log);
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // Its own process group, which its content processes join.
            command.process_group(0);
        }
        let child = command.spawn().expect("start firefox-esr");
        let firefox = Self {
            child: Some(child),
            port,
            dir,
        };
        assert!(
            wait_listening(port, Duration::from_secs(30)),
            "Firefox did not serve WebDriver BiDi within 30 s; its log:\n{}",
            firefox.log()
        );
        firefox
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("firefox.log")).unwrap_or_default()
    }

    /// A BiDi session on the browser's first tab.
    pub async fn open(&self, name: &str) -> Browser {
        let url = format!("ws://127.0.0.1:{}/session", self.port);
        let (socket, _) = tokio::time::timeout(
            COMMAND_TIMEOUT,
            tokio_tungstenite::connect_async(url.as_str()),
        )
        .await
        .unwrap_or_else(|_| panic!("{name} browser: no WebDriver BiDi at {url}"))
        .unwrap_or_else(|e| panic!("{name} browser: connect to {url}: {e}"));
        let mut session = Bidi { socket, next_id: 0 };
        session
            .call("session.new", json!({"capabilities": {}}))
            .await
            .unwrap_or_else(|e| panic!("{name} browser: session.new: {e}"));
        let tree = session
            .call("browsingContext.getTree", json!({}))
            .await
            .unwrap_or_else(|e| panic!("{name} browser: getTree: {e}"));
        let context = tree["contexts"][0]["context"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} browser: no tab in {tree}"))
            .to_owned();
        Browser::Firefox(Box::new(FirefoxWindow {
            session: Mutex::new(session),
            context,
            name: name.to_owned(),
        }))
    }
}

impl Drop for Firefox {
    fn drop(&mut self) {
        kill_browser(self.child.take(), self.dir.path());
    }
}

/// A WebDriver BiDi connection: commands answered by id, events skipped.
struct Bidi {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Bidi {
    async fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"id": id, "method": method, "params": params});
        tokio::time::timeout(COMMAND_TIMEOUT, async {
            self.socket
                .send(Message::text(request.to_string()))
                .await
                .map_err(|e| format!("send: {e}"))?;
            loop {
                let message = match self.socket.next().await {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(format!("read: {e}")),
                    None => return Err("the browser closed the connection".into()),
                };
                let value: Value = serde_json::from_str(&message)
                    .map_err(|e| format!("not JSON ({e}): {message}"))?;
                if value["id"] != id {
                    continue;
                }
                return match value["type"].as_str() {
                    Some("success") => Ok(value["result"].clone()),
                    _ => Err(format!(
                        "{}: {}",
                        value["error"].as_str().unwrap_or("error"),
                        value["message"].as_str().unwrap_or_default()
                    )),
                };
            }
        })
        .await
        .map_err(|_| format!("{method}: no answer within {COMMAND_TIMEOUT:?}"))?
    }
}

/// The tab of a [`Firefox`] a test drives.
pub struct FirefoxWindow {
    session: Mutex<Bidi>,
    context: String,
    pub name: String,
}

impl FirefoxWindow {
    async fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        self.session.lock().await.call(method, params).await
    }

    async fn command(&self, method: &str, params: Value) -> Value {
        self.call(method, params)
            .await
            .unwrap_or_else(|e| panic!("{} browser: {method}: {e}", self.name))
    }

    pub async fn goto(&self, url: &str) {
        self.command(
            "browsingContext.navigate",
            json!({"context": self.context, "url": url, "wait": "complete"}),
        )
        .await;
    }

    /// Runs `script` as a function body (`arguments` holds `args`, as with WebDriver's
    /// execute) and returns its result, carried back as JSON.
    pub async fn try_execute_with(&self, script: &str, args: Value) -> Result<Value, String> {
        let function = format!(
            "async function (argsJson) {{\n\
               const result = await (function () {{\n{script}\n}}).apply(null, JSON.parse(argsJson));\n\
               return JSON.stringify(result === undefined ? null : result);\n\
             }}"
        );
        let result = self
            .call(
                "script.callFunction",
                json!({
                    "functionDeclaration": function,
                    "arguments": [{"type": "string", "value": args.to_string()}],
                    "target": {"context": self.context},
                    "awaitPromise": true,
                    "resultOwnership": "none",
                }),
            )
            .await?;
        match result["type"].as_str() {
            Some("success") => {
                let text = result["result"]["value"].as_str().unwrap_or("null");
                serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {text}"))
            }
            _ => Err(format!(
                "the script threw: {}",
                result["exceptionDetails"]["text"]
                    .as_str()
                    .unwrap_or("(no text)")
            )),
        }
    }

    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.try_execute_with(script, args)
            .await
            .unwrap_or_else(|e| panic!("{} browser: {e}\n{script}", self.name))
    }

    /// The element `css`, scrolled into view, as a BiDi node reference.
    async fn element(&self, css: &str) -> Value {
        let result = self
            .command(
                "script.callFunction",
                json!({
                    "functionDeclaration": "function (css) { const e = document.querySelector(css); \
                                            if (e) e.scrollIntoView({block: 'center'}); return e; }",
                    "arguments": [{"type": "string", "value": css}],
                    "target": {"context": self.context},
                    "awaitPromise": false,
                    "resultOwnership": "none",
                }),
            )
            .await;
        let shared = &result["result"]["sharedId"];
        if !shared.is_string() {
            panic!("{} browser: no element {css}: {result}", self.name);
        }
        json!({"sharedId": shared})
    }

    /// Types `text` into the element `css` as keystrokes.
    pub async fn type_into(&self, css: &str, text: &str) {
        self.click(css).await;
        let keys: Vec<Value> = text
            .chars()
            .flat_map(|c| {
                let key = c.to_string();
                [
                    json!({"type": "keyDown", "value": key}),
                    json!({"type": "keyUp", "value": key}),
                ]
            })
            .collect();
        self.command(
            "input.performActions",
            json!({"context": self.context,
                   "actions": [{"type": "key", "id": "keyboard", "actions": keys}]}),
        )
        .await;
    }

    /// A mouse click in the middle of the element `css`.
    pub async fn click(&self, css: &str) {
        let element = self.element(css).await;
        self.command(
            "input.performActions",
            json!({"context": self.context, "actions": [{
                "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
                "actions": [
                    {"type": "pointerMove", "x": 0, "y": 0,
                     "origin": {"type": "element", "element": element}},
                    {"type": "pointerDown", "button": 0},
                    {"type": "pointerUp", "button": 0},
                ],
            }]}),
        )
        .await;
    }

    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.command(
            "browsingContext.setViewport",
            json!({"context": self.context,
                   "viewport": {"width": width, "height": height}}),
        )
        .await;
    }

    /// Saves a PNG of the viewport. Never panics: it is also used after a failure.
    pub async fn screenshot(&self, path: &Path) -> Result<(), String> {
        let result = self
            .call(
                "browsingContext.captureScreenshot",
                json!({"context": self.context}),
            )
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(result["data"].as_str().unwrap_or_default())
            .map_err(|e| format!("the screenshot is not base64: {e}"))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(path, png).map_err(|e| format!("write {}: {e}", path.display()))
    }

    /// Ends the session (the browser goes with the [`Firefox`]).
    pub async fn close(self) {
        let _ = self.call("session.end", json!({})).await;
    }
}
