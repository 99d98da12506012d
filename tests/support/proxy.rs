//! A TCP proxy on a free loopback port that a test can cut: every connection through it
//! drops at once (no MQTT DISCONNECT: the broker sees a dead client), and new ones are
//! refused until it is opened again. This is how a test sends an agent "away" while the
//! broker stays up.

use std::sync::{Arc, Mutex};

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::free_port;

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    open: Mutex<bool>,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

impl Proxy {
    /// Forwards 127.0.0.1:`port` → 127.0.0.1:`target`.
    pub async fn start(target: u16) -> Self {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the proxy");
        let shared = Arc::new(Shared {
            open: Mutex::new(true),
            connections: Mutex::default(),
        });
        let state = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !*state.open.lock().unwrap() {
                    drop(inbound);
                    continue;
                }
                let task = tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let _ = copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                state.connections.lock().unwrap().push(task);
            }
        });
        Self {
            port,
            shared,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Drops every connection now and refuses new ones.
    pub fn cut(&self) {
        *self.shared.open.lock().unwrap() = false;
        for task in self.shared.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Accepts connections again.
    pub fn open(&self) {
        *self.shared.open.lock().unwrap() = true;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.shared.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}
