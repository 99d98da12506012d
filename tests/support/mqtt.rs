//! A plain MQTT client for tests (rumqttc): subscribe, publish anything (also what the
//! contract forbids), and look at every message received, with its retain flag.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One received message.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Message {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", self.topic, self.text()))
    }
}

pub struct Observer {
    pub client: AsyncClient,
    messages: mpsc::UnboundedReceiver<Message>,
    subacks: mpsc::UnboundedReceiver<()>,
    task: JoinHandle<()>,
}

impl Observer {
    /// Connects with a clean session (and keeps reconnecting if the broker goes away).
    pub async fn connect(port: u16, client_id: &str) -> Self {
        Self::connect_with(port, client_id, true).await
    }

    /// `clean = false`: a persistent session, whose QoS 1 publishes survive a broker
    /// outage in this client (and, on a persistent broker, in the broker).
    pub async fn connect_with(port: u16, client_id: &str, clean: bool) -> Self {
        Self::connect_as(port, client_id, clean, None).await
    }

    /// With a username and password.
    pub async fn connect_as(
        port: u16,
        client_id: &str,
        clean: bool,
        credentials: Option<(&str, &str)>,
    ) -> Self {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        if let Some((username, password)) = credentials {
            options.set_credentials(username, password);
        }
        options
            .set_clean_session(clean)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(8 * 1024 * 1024, 8 * 1024 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let (tx, messages) = mpsc::unbounded_channel();
        let (connected_tx, mut connected) = mpsc::unbounded_channel();
        let (suback_tx, subacks) = mpsc::unbounded_channel();
        let last_error = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let task = tokio::spawn({
            let last_error = last_error.clone();
            async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let _ = tx.send(Message {
                                topic: p.topic.clone(),
                                payload: p.payload.to_vec(),
                                retain: p.retain,
                            });
                        }
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            let _ = connected_tx.send(());
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            let _ = suback_tx.send(());
                        }
                        Ok(_) => {}
                        Err(rumqttc::ConnectionError::RequestsDone) => return,
                        Err(e) => {
                            if let Ok(mut last) = last_error.lock() {
                                *last = Some(e.to_string());
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await
                        }
                    }
                }
            }
        });
        if tokio::time::timeout(Duration::from_secs(10), connected.recv())
            .await
            .is_err()
        {
            let last = last_error.lock().ok().and_then(|last| last.clone());
            panic!(
                "the test client did not connect to mosquitto on 127.0.0.1:{port} within 10 s \
                 (last error: {})",
                last.as_deref().unwrap_or("none: no CONNACK came")
            );
        }
        Self {
            client,
            messages,
            subacks,
            task,
        }
    }

    /// Subscribes (QoS 1) and waits for the broker to confirm.
    pub async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("queue subscribe");
        tokio::time::timeout(Duration::from_secs(5), self.subacks.recv())
            .await
            .expect("SUBACK within 5 s");
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("queue publish");
    }

    /// The next message matching `want`, skipping others; `None` after `within`.
    pub async fn next_where(
        &mut self,
        within: Duration,
        want: impl Fn(&Message) -> bool,
    ) -> Option<Message> {
        tokio::time::timeout(within, async {
            loop {
                let message = self.messages.recv().await?;
                if want(&message) {
                    return Some(message);
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// The next message on `topic`, or a panic naming what was awaited.
    pub async fn expect_on(&mut self, topic: &str, within: Duration) -> Message {
        self.next_where(within, |m| m.topic == topic)
            .await
            .unwrap_or_else(|| panic!("no message on {topic} within {within:?}"))
    }

    /// Every message received so far and not yet taken.
    pub fn drain(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        while let Ok(message) = self.messages.try_recv() {
            out.push(message);
        }
        out
    }

    pub async fn close(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}
