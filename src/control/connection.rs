//! The one task that owns the MQTT connection (rumqttc's event loop): reconnects with
//! backoff, resubscribes and says `online` after every ConnAck, and hands commands on.
//! It never waits on anything but the network, so keepalives and replies keep flowing.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Outgoing, Packet, Publish,
    QoS, StateError, SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::protocol::{self, Reply, codes};
use super::publish::StateSignal;
use super::{Broker, COMMAND_QUEUE, MAX_INCOMING_PACKET, MAX_RUNNING, Topics};
use crate::base::backoff::Backoff;
use crate::config::MqttUrl;
use crate::engine::ErrorCode;

/// Reconnect delays: 250 ms doubling to 30 s, ±25 % jitter; the box never gives up.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));

pub(crate) struct Connection {
    pub eventloop: EventLoop,
    pub client: AsyncClient,
    pub topics: Topics,
    /// `mqtt.url`, or the `mqtt.urls` in order; `current` is the one in use.
    pub brokers: Vec<Broker>,
    pub current: usize,
    /// `None` once stopping: commands are then answered 1000001.
    pub commands: Option<mpsc::Sender<Publish>>,
    pub accepting: CancellationToken,
    pub finish: CancellationToken,
    pub state: Arc<StateSignal>,
    /// Bumped when the box loses a network address (`base::netwatch`).
    pub addresses: tokio::sync::watch::Receiver<u64>,
    /// Whether a broker has accepted the connection (ConnAck) and it has not failed since.
    pub connected: tokio::sync::watch::Sender<bool>,
}

impl Connection {
    fn url(&self) -> &MqttUrl {
        &self.brokers[self.current].url
    }

    /// With several brokers: the connection to this one is gone, the next is tried
    /// (after the usual backoff). The session state (what was not acknowledged) goes
    /// along; the new broker has no session of ours, so `announce` subscribes again
    /// and republishes the status and state there.
    fn next_broker(&mut self) {
        if self.brokers.len() < 2 {
            return;
        }
        self.current = (self.current + 1) % self.brokers.len();
        let broker = &self.brokers[self.current];
        info!("MQTT: trying the next broker, {}", broker.url);
        self.eventloop.mqtt_options = broker.options.clone();
    }

    pub async fn run(mut self) {
        let mut failures: u32 = 0;
        let mut on_connect: Option<JoinHandle<()>> = None;
        // Set after a packet too large to read: the next connection starts a clean
        // session (dropping the packet the broker would otherwise resend forever), then
        // goes straight back to a persistent one.
        let mut purging = false;
        // After our DISCONNECT went out: wait for the broker to close the connection
        // (closing first could reset it before the broker has read the DISCONNECT, and
        // the broker would then publish the last will).
        let mut closing: Option<AfterClose> = None;
        loop {
            let polled = tokio::select! {
                biased;
                _ = self.finish.cancelled() => break,
                _ = self.accepting.cancelled(), if self.commands.is_some() => {
                    self.commands = None;
                    continue;
                }
                Ok(()) = self.addresses.changed() => {
                    // The connection may be on the lost address, dead without an error
                    // until the keepalive runs out: connect again now (what was not
                    // acknowledged is sent again).
                    info!("MQTT: the box's network address changed; connecting again to {}", self.url());
                    self.eventloop.clean();
                    continue;
                }
                polled = self.eventloop.poll() => polled,
            };
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    failures = 0;
                    self.connected.send_replace(true);
                    if purging {
                        purging = false;
                        info!(
                            "MQTT: connected with a clean session to drop the oversized packet; reconnecting with a persistent session"
                        );
                        self.eventloop.mqtt_options.set_clean_session(false);
                        let _ = self.client.try_disconnect();
                        continue;
                    }
                    info!(
                        "MQTT: connected to {} (session {})",
                        self.url(),
                        if ack.session_present {
                            "resumed"
                        } else {
                            "new"
                        }
                    );
                    if let Some(task) = on_connect.take() {
                        task.abort();
                    }
                    on_connect = Some(tokio::spawn(announce(
                        self.client.clone(),
                        self.topics.clone(),
                        self.state.clone(),
                    )));
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => self.on_publish(publish),
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure))
                    {
                        error!(
                            "MQTT: the broker refused the subscription to {}: no command can arrive. Allow this client to read it in the broker's ACL (see config/mosquitto-acl.example)",
                            self.topics.cmd
                        );
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    closing = Some(if self.accepting.is_cancelled() {
                        AfterClose::Stop
                    } else {
                        AfterClose::Reconnect
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    self.connected.send_replace(false);
                    match closing.take() {
                        Some(AfterClose::Stop) => break,
                        // The purge's clean session is closed: reconnect persistently, now.
                        Some(AfterClose::Reconnect) => continue,
                        None if is_oversized(&e) => {
                            error!(
                                "MQTT: the broker sent a packet larger than {} bytes, which cannot be read ({e}); dropping this client's broker session once so that it is not sent again (commands queued while the box was away are lost). Limit the broker's message size (mosquitto: max_packet_size) to prevent this",
                                MAX_INCOMING_PACKET
                            );
                            purging = true;
                            self.eventloop.mqtt_options.set_clean_session(true);
                        }
                        None => {
                            let delay = RECONNECT.delay(failures);
                            report(self.url(), &e, failures, delay);
                            failures = failures.saturating_add(1);
                            self.next_broker();
                            tokio::select! {
                                _ = self.finish.cancelled() => break,
                                _ = tokio::time::sleep(delay) => {}
                            }
                        }
                    }
                }
            }
        }
        if let Some(task) = on_connect {
            task.abort();
        }
    }

    fn on_publish(&self, publish: Publish) {
        if publish.topic != self.topics.cmd {
            return;
        }
        if publish.retain {
            warn!(
                "MQTT: ignoring a retained message on {}: commands must be published without the retain flag (clear it with an empty retained message)",
                self.topics.cmd
            );
            return;
        }
        // Refused where it arrives: a payload over the command limit is never queued (256
        // of them waiting for a slot would hold 256 × up to MAX_INCOMING_PACKET bytes).
        if publish.payload.len() > protocol::MAX_COMMAND_BYTES {
            let message = format!(
                "the payload is {} bytes; a command may be at most {} bytes (it was not read)",
                publish.payload.len(),
                protocol::MAX_COMMAND_BYTES
            );
            info!(id = "-", code = 1000017, "command refused: {message}");
            let reply = Reply::error(None, ErrorCode::INVALID_PARAMETER, message).to_bytes();
            drop(publish);
            if self
                .client
                .try_publish(&self.topics.reply, QoS::AtLeastOnce, false, reply)
                .is_err()
            {
                warn!("MQTT: the request queue is full; a reply was dropped");
            }
            return;
        }
        let Some(commands) = &self.commands else {
            self.answer_now(
                &publish,
                ErrorCode::ENGINE_STOPPED,
                "roomcast is shutting down; send the command again once it is back online",
            );
            return;
        };
        match commands.try_send(publish) {
            Ok(()) => {}
            Err(TrySendError::Full(publish)) => {
                let message = format!(
                    "busy: {COMMAND_QUEUE} commands are already waiting and {MAX_RUNNING} running; nothing was done, send it again later"
                );
                warn!("MQTT: {message}");
                self.answer_now(&publish, codes::BUSY, &message);
            }
            Err(TrySendError::Closed(publish)) => {
                self.answer_now(
                    &publish,
                    ErrorCode::ENGINE_STOPPED,
                    "roomcast is shutting down; send the command again once it is back online",
                );
            }
        }
    }

    /// Replies without running the command, never waiting (dropped if the request queue
    /// is full: the sender then times out, as it would with the broker away).
    fn answer_now(&self, publish: &Publish, code: ErrorCode, message: &str) {
        let id = protocol::peek_id(&publish.payload);
        let reply = Reply::error(id.as_deref(), code, message).to_bytes();
        if self
            .client
            .try_publish(&self.topics.reply, QoS::AtLeastOnce, false, reply)
            .is_err()
        {
            warn!("MQTT: the request queue is full; a reply was dropped");
        }
    }
}

/// What to do once the broker has closed the connection after our DISCONNECT.
enum AfterClose {
    Stop,
    Reconnect,
}

/// After each ConnAck: resubscribe (a new session has no subscriptions), say `online`,
/// and republish the state (a restarted broker may have lost its retained copy).
async fn announce(client: AsyncClient, topics: Topics, state: Arc<StateSignal>) {
    if let Err(e) = client.subscribe(&topics.cmd, QoS::AtLeastOnce).await {
        warn!("MQTT: cannot subscribe to {}: {e}", topics.cmd);
    }
    if let Err(e) = client
        .publish(&topics.status, QoS::AtLeastOnce, true, "online")
        .await
    {
        warn!("MQTT: cannot publish the status: {e}");
    }
    state.republish();
}

fn is_oversized(e: &ConnectionError) -> bool {
    matches!(
        e,
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(_)
        ))
    )
}

/// Logs a failed connection: what failed and what to do. Credentials never appear
/// (rumqttc's errors do not carry them).
fn report(url: &MqttUrl, e: &ConnectionError, failures: u32, delay: Duration) {
    let retry = format!("retrying in {:.1} s", delay.as_secs_f64());
    match e {
        ConnectionError::ConnectionRefused(code) => {
            let why = match code {
                ConnectReturnCode::BadUserNamePassword => {
                    "bad username or password: check mqtt.username and mqtt.password"
                }
                ConnectReturnCode::NotAuthorized => {
                    "not authorized: check mqtt.username / mqtt.password and the broker's ACL"
                }
                ConnectReturnCode::BadClientId => {
                    "client id rejected: check mqtt.client_id (1 to 23 characters for strict brokers)"
                }
                ConnectReturnCode::ServiceUnavailable => "the broker is unavailable",
                _ => "refused",
            };
            error!("MQTT: {url} refused the connection: {why}; {retry}");
        }
        other if failures == 0 => {
            warn!("MQTT: connection to {url} failed or was lost ({other}); {retry}")
        }
        other => warn!(
            "MQTT: still cannot reach {url} ({other}); attempt {}, {retry}",
            failures + 1
        ),
    }
}
