//! Remote control over MQTT: the command/reply/event/state contract dashboards are
//! written against (`docs/mqtt.md` is the full reference).
//!
//! # Topic tree
//!
//! `{base}` is `{mqtt.topic_prefix}/{device_id}`, e.g. `roomcast/box-17`.
//!
//! ```text
//! {base}/cmd                  in   QoS 1       {"id": "<1-64 chars>", "op": "<op>", "args": {…}}
//! {base}/reply                out  QoS 1       {"id": …, "ok": true, "result": {…}}
//!                                              {"id": …, "ok": false, "error": {"code": n, "message": "…"}}
//! {base}/events               out  QoS 1       every engine event: {"event": "…", "room_id": "…", …}
//! {base}/rooms/{room}/events  out  QoS 1       the same event, once more, under its room
//!                                              ({room}: `%` `/` `+` `#` percent-encoded)
//! {base}/state                out  QoS 1 retained  the engine snapshot, republished on change
//!                                                  (at most ~10 per second)
//! {base}/status               out  QoS 1 retained  `online` once connected; `offline` on a
//!                                                  clean stop and as the last will
//! ```
//!
//! Ops: `login_room`, `logout_room`, `start_publishing`, `stop_publishing`,
//! `start_playing`, `stop_playing`, `send_broadcast_message`, `send_custom_command`,
//! `set_room_mode`, `get_state`, `list_devices` ([`protocol`] has their arguments).
//!
//! # Delivery
//!
//! - The session is persistent (`clean_session = false`, client id
//!   `roomcast-{device_id}` by default), so QoS 1 commands sent while the box was away
//!   are delivered when it comes back. A command id seen in the last 10 minutes is not
//!   run again: its first reply is sent again ([`dedup`]).
//! - Commands start in the order they arrive and run concurrently (at most
//!   [`MAX_RUNNING`] at once): a login that takes seconds does not hold up a `get_state`.
//!   The engine applies them in arrival order, so a `start_publishing` sent right after
//!   its `login_room` waits for that login.
//! - Bounded queues, and what happens when they are full: [`COMMAND_QUEUE`] commands may
//!   wait for a slot; past that a command is answered at once with 1000901 (busy) and not
//!   run. Events wait in the engine's event buffer (1024); a publisher that falls behind
//!   (the broker is slow or away) loses the oldest, logs how many, and republishes
//!   `state` so a dashboard can resynchronise. Nothing here ever blocks the engine: it
//!   only ever sees a subscriber and callers like any other.
//! - Reconnection: exponential backoff from 250 ms to 30 s with ±25 % jitter;
//!   resubscribe, `online` and a fresh `state` after every ConnAck.
//! - Payloads over 64 KiB are refused (1000017) where they arrive, never queued; every
//!   payload the box publishes is at most 64 KiB (`publish::MAX_PAYLOAD_BYTES`) (its longest
//!   lists cut, with `<list>_more` counts); MQTT packets over
//!   [`MAX_INCOMING_PACKET`] cannot even be received: the agent then drops its broker
//!   session once to get rid of the packet (see `docs/mqtt.md`).
//! - Retained messages on `cmd` are ignored (a retained command would run again on every
//!   resubscription).

pub mod client;
mod connection;
pub mod dedup;
mod dispatch;
pub mod protocol;
mod publish;
pub mod tls;
pub mod topics;

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS, Transport};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::base::secret::Secret;
use crate::config::{Config, MqttUrl};
use crate::engine::{EngineHandle, User};
pub use tls::{TlsError, TlsFiles};
pub use topics::Topics;

/// At most this many commands run at once (each waits on the engine, the SFU or media).
pub const MAX_RUNNING: usize = 32;
/// At most this many received commands wait for a free slot; more are answered 1000901.
pub const COMMAND_QUEUE: usize = 256;
/// A command that has not finished after this long is answered 1000902.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// MQTT packets larger than this cannot be received (the command limit is 64 KiB; this
/// only has to be large enough to read and refuse a bigger one).
pub const MAX_INCOMING_PACKET: usize = 2 * 1024 * 1024;

/// The MQTT socket's receive buffer (the kernel doubles it for its own bookkeeping): room
/// for a few commands of the largest size, not for a flood. See
/// [`BrokerSettings::network_options`].
pub const TCP_RECEIVE_BUFFER: u32 = 128 * 1024;
/// Largest packet the MQTT client sends: a backstop only, payloads are bounded far below
/// (`publish::MAX_PAYLOAD_BYTES`), since a QoS 1 publish that cannot be encoded would be
/// retried first on every reconnect.
pub const MAX_OUTGOING_PACKET: usize = 1024 * 1024;
/// Requests (publishes, subscribes) that may wait for the MQTT connection.
const REQUEST_QUEUE: usize = 512;

/// Why remote control cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// TLS is configured but cannot be set up (never a plaintext fallback).
    #[error("MQTT TLS: {0}")]
    Tls(#[from] TlsError),
    #[error(
        "mqtt.url {0} is mqtts:// but mqtt.ca_file is not set; give the CA certificate (PEM) that signed the broker's certificate"
    )]
    TlsWithoutCa(MqttUrl),
    #[error("no MQTT broker is configured: set mqtt.url, or mqtt.urls for several")]
    NoBroker,
}

/// How to reach the broker, shared by the agent and `roomcast ctl`.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub url: MqttUrl,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub ca_file: Option<std::path::PathBuf>,
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
    pub keepalive: Duration,
}

impl BrokerSettings {
    /// TCP settings: Nagle's algorithm off (commands and replies are small and latency
    /// matters more than packet count), a connect timeout, and a small receive buffer.
    ///
    /// The receive buffer bounds what a flood of large payloads can hold: rumqttc reads up
    /// to ten packets in one go when the socket already holds them, so with the kernel's
    /// default (several MiB) ten oversized payloads could sit in memory at once. With
    /// [`TCP_RECEIVE_BUFFER`] at most one packet larger than it is read before the agent has
    /// refused the one before.
    pub(crate) fn network_options() -> rumqttc::NetworkOptions {
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        network.set_tcp_recv_buffer_size(TCP_RECEIVE_BUFFER);
        network.set_connection_timeout(10);
        network
    }

    /// The rumqttc options: TLS from our own rustls config when the URL is mqtts://, an
    /// error (never plaintext) when that cannot be built.
    pub(crate) fn options(&self) -> Result<MqttOptions, ControlError> {
        let mut options = MqttOptions::new(&self.client_id, &self.url.host, self.url.port);
        options
            .set_keep_alive(self.keepalive)
            .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET)
            .set_request_channel_capacity(REQUEST_QUEUE);
        if let Some(username) = &self.username {
            let password = self.password.as_ref().map(Secret::expose).unwrap_or("");
            options.set_credentials(username, password);
        }
        if self.url.is_tls() {
            let ca_file = self
                .ca_file
                .clone()
                .ok_or_else(|| ControlError::TlsWithoutCa(self.url.clone()))?;
            let config = tls::client_config(&TlsFiles {
                ca_file,
                client: self.client_cert.clone(),
            })?;
            options.set_transport(Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(config),
            ));
        }
        Ok(options)
    }
}

/// One broker of `mqtt.url` / `mqtt.urls` and the client options to reach it (the same
/// client id, credentials, persistent session and last will on each).
#[derive(Clone)]
pub(crate) struct Broker {
    pub url: MqttUrl,
    pub options: MqttOptions,
}

/// Remote control, configured and ready to start.
pub struct Control {
    /// In the order they are tried; the first is connected first.
    brokers: Vec<Broker>,
    topics: Topics,
    identity: User,
    device_id: String,
}

impl Control {
    /// Checks the MQTT settings and builds TLS. Fails (and the agent must not start) when
    /// TLS is configured but cannot be set up. Connects to nothing yet.
    pub fn new(config: &Config) -> Result<Self, ControlError> {
        let mqtt = &config.mqtt;
        let topics = Topics::new(&mqtt.topic_prefix, &config.device_id);
        let mut brokers = Vec::new();
        for url in mqtt.brokers() {
            let settings = BrokerSettings {
                url: url.clone(),
                client_id: mqtt
                    .client_id
                    .clone()
                    .unwrap_or_else(|| format!("roomcast-{}", config.device_id)),
                username: mqtt.username.clone(),
                password: mqtt.password.clone(),
                ca_file: mqtt.ca_file.clone(),
                client_cert: mqtt.client_cert.clone().zip(mqtt.client_key.clone()),
                keepalive: Duration::from_secs(u64::from(mqtt.keepalive_s)),
            };
            let mut options = settings.options()?;
            // A persistent session: QoS 1 commands sent while the box is away wait for it.
            options.set_clean_session(false);
            options.set_last_will(LastWill::new(
                &topics.status,
                "offline",
                QoS::AtLeastOnce,
                true,
            ));
            brokers.push(Broker { url, options });
        }
        if brokers.is_empty() {
            return Err(ControlError::NoBroker);
        }
        Ok(Self {
            brokers,
            topics,
            identity: config.identity.clone(),
            device_id: config.device_id.clone(),
        })
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Connects (in the background, retrying until it succeeds) and serves commands.
    pub fn start(self, engine: EngineHandle) -> RunningControl {
        let first = self.brokers[0].clone();
        let (client, mut eventloop) = AsyncClient::new(first.options, REQUEST_QUEUE);
        eventloop.set_network_options(BrokerSettings::network_options());
        let events = engine.subscribe();
        let state = Arc::new(publish::StateSignal::default());
        let accepting = CancellationToken::new();
        let finish = CancellationToken::new();
        let publishers_stop = CancellationToken::new();
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);

        let context = Arc::new(dispatch::Context {
            engine: engine.clone(),
            client: client.clone(),
            topics: self.topics.clone(),
            identity: self.identity,
            device_id: self.device_id.clone(),
        });
        let dispatcher = tokio::spawn(dispatch::run(context, commands_rx));
        let events_task = tokio::spawn(publish::forward_events(
            events,
            client.clone(),
            self.topics.clone(),
            state.clone(),
            publishers_stop.clone(),
        ));
        let state_task = tokio::spawn(publish::publish_state(
            engine,
            client.clone(),
            self.topics.clone(),
            self.device_id,
            state.clone(),
            publishers_stop.clone(),
        ));
        let names: Vec<String> = self.brokers.iter().map(|b| b.url.to_string()).collect();
        info!(
            "MQTT control: broker {}, commands on {}",
            names.join(", then "),
            self.topics.cmd
        );
        let (connected_tx, connected) = tokio::sync::watch::channel(false);
        let connection = tokio::spawn(
            connection::Connection {
                eventloop,
                client: client.clone(),
                topics: self.topics.clone(),
                brokers: self.brokers,
                current: 0,
                commands: Some(commands_tx),
                accepting: accepting.clone(),
                finish: finish.clone(),
                state,
                addresses: crate::base::netwatch::watch_addresses(),
                connected: connected_tx,
            }
            .run(),
        );
        RunningControl {
            client,
            topics: self.topics,
            accepting,
            finish,
            publishers_stop,
            dispatcher,
            events_task,
            state_task,
            connection,
            connected,
        }
    }
}

/// Remote control, running.
pub struct RunningControl {
    client: AsyncClient,
    topics: Topics,
    accepting: CancellationToken,
    finish: CancellationToken,
    publishers_stop: CancellationToken,
    dispatcher: JoinHandle<()>,
    events_task: JoinHandle<()>,
    state_task: JoinHandle<()>,
    connection: JoinHandle<()>,
    /// Whether the connection is up now (the connection task says).
    connected: tokio::sync::watch::Receiver<bool>,
}

impl RunningControl {
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// The tasks that keep the connection and serve commands are still there (for the
    /// watchdog: a panicked connection task would leave the box unreachable).
    pub fn is_alive(&self) -> bool {
        !self.connection.is_finished() && !self.dispatcher.is_finished()
    }

    /// Stops cleanly: no new commands; running ones finish and are answered; the last
    /// events are published; then `offline` (retained) and an MQTT DISCONNECT, so the
    /// broker does not publish the last will. Call it after the engine has left the
    /// rooms, so their events go out. Takes at most `within` (what is left of the
    /// service's stop budget), each step a share of what is left when it starts, so that
    /// slow commands cannot use up the time for `offline` and the DISCONNECT.
    pub async fn stop(self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        // A step gets `fraction` of what is left (and never more than `cap`).
        let share = |fraction: f32, cap: Duration| {
            deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .mul_f32(fraction)
                .min(cap)
        };
        self.accepting.cancel();
        let commands = share(0.4, Duration::from_secs(3));
        if tokio::time::timeout(commands, self.dispatcher)
            .await
            .is_err()
        {
            warn!(
                "MQTT control: commands still running after {:.1} s were abandoned",
                commands.as_secs_f64()
            );
        }
        self.publishers_stop.cancel();
        let mut events_task = self.events_task;
        if tokio::time::timeout(share(0.3, Duration::from_secs(1)), &mut events_task)
            .await
            .is_err()
        {
            events_task.abort();
        }
        self.state_task.abort();
        if !*self.connected.borrow() {
            // Nobody to say `offline` to, nor to disconnect from: the broker (if it ever
            // had our session) publishes the last will.
            self.finish.cancel();
            let _ = self.connection.await;
            info!("MQTT control stopped (no broker connected; the last will says offline)");
            return;
        }
        let said_offline = tokio::time::timeout(
            share(0.3, Duration::from_secs(1)),
            self.client
                .publish(&self.topics.status, QoS::AtLeastOnce, true, "offline"),
        )
        .await;
        let _ = tokio::time::timeout(share(0.3, Duration::from_secs(1)), self.client.disconnect())
            .await;
        let mut connection = self.connection;
        let closing = share(1.0, Duration::from_secs(2));
        if tokio::time::timeout(closing, &mut connection)
            .await
            .is_err()
        {
            warn!(
                "MQTT control: the broker did not take the disconnect within {:.1} s; it will publish `offline` as the last will",
                closing.as_secs_f64()
            );
            self.finish.cancel();
            let _ = connection.await;
        } else if !matches!(said_offline, Ok(Ok(()))) {
            warn!("MQTT control: could not queue the `offline` status");
        }
        info!("MQTT control stopped");
    }
}
