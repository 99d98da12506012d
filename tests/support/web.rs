//! Serves the room page (`tests/web/`) and Debian's JavaScript libraries (janus.js,
//! adapter.js under `/javascript/`, as Debian's javascript-common lays them out) on a
//! free loopback port, in-process. `scripts/demo.sh` serves the same layout with
//! `python3 -m http.server`.

use std::path::{Component, Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct PageServer {
    pub port: u16,
    task: JoinHandle<()>,
}

impl PageServer {
    pub async fn start() -> Self {
        for lib in [
            "/usr/share/javascript/janus-gateway/janus.js",
            "/usr/share/javascript/webrtc-adapter/adapter.js",
        ] {
            assert!(
                Path::new(lib).is_file(),
                "{lib} is missing: apt-get install libjs-janus-gateway libjs-webrtc-adapter \
                 (scripts/install-deps.sh)"
            );
        }
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the page server");
        let port = listener.local_addr().expect("local addr").port();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream));
            }
        });
        Self { port, task }
    }

    /// The page's URL with `query` (already encoded).
    pub fn url(&self, query: &str) -> String {
        format!("http://127.0.0.1:{}/?{query}", self.port)
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The file a request path names, or `None` when it would leave its root.
fn file_for(path: &str) -> Option<PathBuf> {
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let (root, rest) = match path.strip_prefix("/javascript/") {
        Some(rest) => (PathBuf::from("/usr/share/javascript"), rest),
        None => (
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web"),
            path.trim_start_matches('/'),
        ),
    };
    let rest = if rest.is_empty() { "index.html" } else { rest };
    let relative = Path::new(rest);
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return None;
    }
    Some(root.join(relative))
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("map") | Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

async fn serve(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let found = match (method, file_for(path)) {
        ("GET", Some(file)) => tokio::fs::read(&file).await.ok().map(|body| (file, body)),
        _ => None,
    };
    let response = match found {
        Some((file, body)) => {
            let mut response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                content_type(&file),
                body.len()
            )
            .into_bytes();
            response.extend_from_slice(&body);
            response
        }
        None => {
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
        }
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}
