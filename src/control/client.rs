//! The dashboard side of the contract, in its smallest form: send a command to one box and
//! wait for its reply. `roomcast ctl`, the benchmark and the tests use it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, Packet, QoS, SubscribeReasonCode};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::{BrokerSettings, ControlError, Topics};

/// Why a command could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Setup(#[from] ControlError),
    #[error("cannot connect to the MQTT broker {broker}: {reason}")]
    Connect { broker: String, reason: String },
    #[error(
        "the broker refused to let this client read {topic}; allow it in the broker's ACL (see config/mosquitto-acl.example)"
    )]
    SubscribeRefused { topic: String },
    #[error(
        "no reply within {} s; is the box online? (`mosquitto_sub -t {status}` shows its status)",
        timeout.as_secs_f64()
    )]
    Timeout { timeout: Duration, status: String },
    #[error("the connection to the broker was lost: {0}")]
    Lost(String),
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;

/// A connection that sends commands to one box and matches replies by id.
pub struct CommandClient {
    client: AsyncClient,
    topics: Topics,
    pending: Pending,
    lost: watch::Receiver<Option<String>>,
    timeout: Duration,
    task: JoinHandle<()>,
}

impl CommandClient {
    /// Connects (clean session, a random client id) and subscribes to the box's replies.
    /// Everything, connecting included, must happen within `timeout`.
    pub async fn connect(
        broker: &BrokerSettings,
        topics: Topics,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let options = broker.options()?;
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        eventloop.set_network_options(BrokerSettings::network_options());
        let pending: Pending = Arc::default();
        let (lost_tx, lost) = watch::channel(None);
        let (ready_tx, ready) = oneshot::channel::<Result<(), ClientError>>();
        let reply_topic = topics.reply.clone();
        let broker_name = broker.url.to_string();
        let task_pending = pending.clone();
        let subscriber = client.clone();
        let task = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = subscriber.try_subscribe(&reply_topic, QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        let refused = ack
                            .return_codes
                            .iter()
                            .any(|c| matches!(c, SubscribeReasonCode::Failure));
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(if refused {
                                Err(ClientError::SubscribeRefused {
                                    topic: reply_topic.clone(),
                                })
                            } else {
                                Ok(())
                            });
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        if publish.topic != reply_topic {
                            continue;
                        }
                        let Ok(reply) = serde_json::from_slice::<Value>(&publish.payload) else {
                            continue;
                        };
                        let Some(id) = reply.get("id").and_then(Value::as_str) else {
                            continue;
                        };
                        let waiter = task_pending
                            .lock()
                            .ok()
                            .and_then(|mut pending| pending.remove(id));
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(reply);
                        }
                    }
                    Ok(_) => {}
                    Err(ConnectionError::RequestsDone) => break,
                    Err(e) => {
                        let reason = e.to_string();
                        match ready_tx.take() {
                            Some(tx) => {
                                let _ = tx.send(Err(ClientError::Connect {
                                    broker: broker_name.clone(),
                                    reason,
                                }));
                            }
                            None => {
                                let _ = lost_tx.send(Some(reason));
                            }
                        }
                        break;
                    }
                }
            }
        });
        let connected = tokio::time::timeout(timeout, ready).await;
        let failure = match connected {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(e))) => Some(e),
            Ok(Err(_)) => Some(ClientError::Lost("the MQTT task ended".into())),
            Err(_) => Some(ClientError::Connect {
                broker: broker.url.to_string(),
                reason: format!("no answer within {} s", timeout.as_secs_f64()),
            }),
        };
        if let Some(e) = failure {
            task.abort();
            return Err(e);
        }
        Ok(Self {
            client,
            topics,
            pending,
            lost,
            timeout,
            task,
        })
    }

    /// Sends `{"id", "op", "args"}` with a fresh id and returns the reply object.
    pub async fn request(&self, op: &str, args: Value) -> Result<Value, ClientError> {
        let id = format!("ctl-{:016x}", rand::random::<u64>());
        let payload = json!({"id": id, "op": op, "args": args});
        self.request_raw(&id, payload.to_string().into_bytes())
            .await
    }

    /// Publishes `payload` as is and waits for the reply carrying `id`.
    pub async fn request_raw(&self, id: &str, payload: Vec<u8>) -> Result<Value, ClientError> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(id.to_owned(), tx);
        }
        let outcome = async {
            self.client
                .publish(&self.topics.cmd, QoS::AtLeastOnce, false, payload)
                .await
                .map_err(|e| ClientError::Lost(e.to_string()))?;
            let mut lost = self.lost.clone();
            tokio::select! {
                reply = rx => reply.map_err(|_| ClientError::Lost("the MQTT task ended".into())),
                reason = lost.wait_for(Option::is_some) => {
                    let reason = reason.ok().and_then(|r| r.clone()).unwrap_or_default();
                    Err(ClientError::Lost(reason))
                }
            }
        };
        let result = match tokio::time::timeout(self.timeout, outcome).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                timeout: self.timeout,
                status: self.topics.status.clone(),
            }),
        };
        if result.is_err()
            && let Ok(mut pending) = self.pending.lock()
        {
            pending.remove(id);
        }
        result
    }

    /// Disconnects cleanly.
    pub async fn close(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// Turns `key=value` words into an `args` object. A value that is a JSON object, array or
/// string (`to_users='["a","b"]'`, `user='{"user_id":"x","user_name":"X"}'`) is used as
/// that JSON; anything else is the text as typed (`room_id=101` is the string "101":
/// no argument of the contract is a number or a boolean).
pub fn parse_args<S: AsRef<str>>(words: &[S]) -> Result<Value, String> {
    let mut args = serde_json::Map::new();
    for word in words {
        let word = word.as_ref();
        let Some((key, value)) = word.split_once('=') else {
            return Err(format!(
                "{word:?} is not key=value (e.g. room_id=bigclass, to_users='[\"a\",\"b\"]')"
            ));
        };
        if key.is_empty() {
            return Err(format!("{word:?} has no key before '='"));
        }
        let value = match serde_json::from_str::<Value>(value) {
            Ok(json @ (Value::Object(_) | Value::Array(_) | Value::String(_))) => json,
            _ => Value::String(value.to_owned()),
        };
        if args.insert(key.to_owned(), value).is_some() {
            return Err(format!("{key} is given twice"));
        }
    }
    Ok(Value::Object(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_words_become_args() {
        let args = parse_args(&[
            "room_id=101",
            "message=hello world",
            r#"to_users=["a","b"]"#,
            r#"user={"user_id":"u","user_name":"U"}"#,
            r#"command="quoted""#,
            "flag=true",
            "empty=",
        ])
        .unwrap();
        assert_eq!(
            args,
            json!({"room_id": "101", "message": "hello world", "to_users": ["a", "b"],
                "user": {"user_id": "u", "user_name": "U"}, "command": "quoted",
                "flag": "true", "empty": ""})
        );
        assert!(parse_args(&["novalue"]).is_err());
        assert!(parse_args(&["=x"]).is_err());
        assert!(parse_args(&["a=1", "a=2"]).is_err());
    }
}
