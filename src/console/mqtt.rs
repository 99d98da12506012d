//! The console's link to the broker: one rumqttc event loop (the connection settings,
//! TLS included, are `control::BrokerSettings`, the same as `roomcast ctl`'s), subscribed
//! to every box's `state`, `status`, `events` and `reply`; what arrives goes to the fleet
//! actor. Reconnects with exponential backoff and jitter and subscribes again after every
//! ConnAck (a clean session: the retained `state` and `status` of every box come again).

use std::time::Duration;

use rumqttc::{AsyncClient, ConnectReturnCode, Event, Packet, QoS, SubscribeFilter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::fleet::{Incoming, Sender};
use crate::base::backoff::Backoff;
use crate::control::{BrokerSettings, ControlError};

/// Requests (subscribes, commands) that may wait for the connection.
const REQUEST_QUEUE: usize = 256;

/// Publishes commands through the connection (rumqttc's client only queues them).
pub struct MqttSender(AsyncClient);

impl Sender for MqttSender {
    fn send(&self, topic: &str, payload: Vec<u8>) -> Result<(), String> {
        self.0
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
            .map_err(|e| format!("cannot queue the command: {e}"))
    }
}

/// The topic filters the console reads.
pub fn filters(prefix: &str) -> Vec<SubscribeFilter> {
    ["state", "status", "events", "reply"]
        .iter()
        .map(|kind| SubscribeFilter::new(format!("{prefix}/+/{kind}"), QoS::AtLeastOnce))
        .collect()
}

/// Starts the connection task. Fails only when the settings cannot work (TLS).
pub fn start(
    brokers: &[BrokerSettings],
    prefix: &str,
    fleet: mpsc::Sender<Incoming>,
    shutdown: CancellationToken,
) -> Result<(MqttSender, JoinHandle<()>), ControlError> {
    // Each broker's options, made (and checked) before anything connects.
    let mut options = Vec::with_capacity(brokers.len());
    for broker in brokers {
        let mut broker_options = broker.options()?;
        broker_options.set_clean_session(true);
        options.push((broker.url.to_string(), broker_options));
    }
    let Some((first_url, first)) = options.first().cloned() else {
        return Err(ControlError::NoBroker);
    };
    let (client, mut eventloop) = AsyncClient::new(first, REQUEST_QUEUE);
    eventloop.set_network_options(BrokerSettings::network_options());
    let mut url = first_url;
    let mut current = 0;
    let filters = filters(prefix);
    let prefix = prefix.to_owned();
    let subscriber = client.clone();
    let task = tokio::spawn(async move {
        let policy = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        let mut failures: u32 = 0;
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                event = eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    if ack.code != ConnectReturnCode::Success {
                        continue;
                    }
                    failures = 0;
                    info!("console: connected to the MQTT broker {url}");
                    if let Err(e) = subscriber.try_subscribe_many(filters.clone()) {
                        warn!("console: cannot subscribe: {e}");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let refused = ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                    let message = if refused {
                        Incoming::Disconnected(format!(
                            "the broker refused a subscription to the boxes' topics; allow this client to read {prefix}/+/state, status, events and reply in the broker's ACL"
                        ))
                    } else {
                        Incoming::Connected {
                            broker: url.clone(),
                        }
                    };
                    if fleet.send(message).await.is_err() {
                        break;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let message = Incoming::Message {
                        topic: publish.topic,
                        payload: publish.payload.to_vec(),
                    };
                    if fleet.send(message).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let reason = format!("the MQTT broker {url}: {e}");
                    if failures == 0 {
                        warn!("console: {reason}; reconnecting");
                    }
                    if fleet.send(Incoming::Disconnected(reason)).await.is_err() {
                        break;
                    }
                    // The next broker of the list (rumqttc's event loop takes the
                    // options it reconnects with from this field).
                    if options.len() > 1 {
                        current = (current + 1) % options.len();
                        let (next_url, next) = &options[current];
                        eventloop.mqtt_options = next.clone();
                        url.clone_from(next_url);
                        info!("console: trying the next MQTT broker, {url}");
                    }
                    let delay = policy.delay(failures);
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    });
    Ok((MqttSender(client), task))
}
