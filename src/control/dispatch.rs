//! Runs commands: parse, deduplicate, call the engine, reply. One task; the commands
//! themselves run concurrently inside it, so a slow one holds up nothing but itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rumqttc::{AsyncClient, QoS};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::dedup::{ReplyCache, Seen};
use super::protocol::{self, Op, Reply, Request, codes};
use super::{COMMAND_TIMEOUT, MAX_RUNNING, Topics, publish};
use crate::engine::{EngineError, EngineHandle, ErrorCode, PlayerConfig, PublisherConfig, User};

/// What commands need.
pub(crate) struct Context {
    pub engine: EngineHandle,
    pub client: AsyncClient,
    pub topics: Topics,
    /// Who `login_room` logs in as when the command names no user.
    pub identity: User,
    pub device_id: String,
}

enum Finished {
    /// A command ran; its reply still has to be recorded and published.
    Ran {
        id: String,
        reply: Vec<u8>,
        /// Remembered for deduplication (not for read-only ops).
        remember: bool,
    },
    Published,
}

type Work = Pin<Box<dyn Future<Output = Finished> + Send>>;

/// Serves commands until the connection closes the queue and the running ones are done.
pub(crate) async fn run(context: Arc<Context>, mut commands: mpsc::Receiver<rumqttc::Publish>) {
    let mut cache = ReplyCache::new();
    let mut running: FuturesUnordered<Work> = FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            // Poll what runs first: a command just accepted reaches the engine before the
            // next one is taken, so the engine sees them in arrival order.
            biased;
            Some(done) = running.next(), if !running.is_empty() => {
                match done {
                    Finished::Ran { id, reply, remember: true } => {
                        let times = cache.finish(&id, &reply, Instant::now());
                        running.push(Box::pin(send_reply(context.clone(), reply, times)));
                    }
                    Finished::Ran { reply, remember: false, .. } => {
                        running.push(Box::pin(send_reply(context.clone(), reply, 1)));
                    }
                    Finished::Published => {}
                }
            }
            received = commands.recv(), if open && running.len() < MAX_RUNNING => {
                match received {
                    Some(publish) => {
                        if let Some(work) = accept(&context, &mut cache, &publish.payload) {
                            running.push(work);
                        }
                    }
                    None => open = false,
                }
            }
            else => break,
        }
    }
}

fn accept(context: &Arc<Context>, cache: &mut ReplyCache, payload: &[u8]) -> Option<Work> {
    let request = match protocol::parse(payload) {
        Ok(request) => request,
        Err(refused) => {
            info!(
                id = refused.id.as_deref().unwrap_or("-"),
                code = 1000017,
                "command refused: {}",
                refused.message
            );
            let reply = Reply::refused(refused).to_bytes();
            return Some(Box::pin(send_reply(context.clone(), reply, 1)));
        }
    };
    let fingerprint = cache.fingerprint(payload);
    let now = Instant::now();
    let read_only = request.op.is_read_only();
    let seen = if read_only {
        cache.check_read_only(&request.id, fingerprint, now)
    } else {
        cache.arrive(&request.id, fingerprint, now)
    };
    match seen {
        Seen::New => Some(Box::pin(execute(context.clone(), request, !read_only))),
        Seen::Conflict => {
            let message = format!(
                "command id `{}` was already used for another command in the last {} minutes; nothing was done: use a new id for a new command",
                request.id,
                super::dedup::REMEMBER_FOR.as_secs() / 60
            );
            info!(id = %request.id, op = request.op.name(), code = codes::ID_REUSED.as_u32(), "command refused: {message}");
            let reply = Reply::error(Some(&request.id), codes::ID_REUSED, message).to_bytes();
            Some(Box::pin(send_reply(context.clone(), reply, 1)))
        }
        Seen::Running => {
            debug!(id = %request.id, "duplicate of a running command: its reply will be sent again");
            None
        }
        Seen::Done(reply) => {
            info!(id = %request.id, op = request.op.name(), "duplicate command: not run again, first reply sent again");
            Some(Box::pin(send_reply(context.clone(), reply, 1)))
        }
    }
}

async fn send_reply(context: Arc<Context>, reply: Vec<u8>, times: u32) -> Finished {
    for _ in 0..times {
        if let Err(e) = context
            .client
            .publish(
                &context.topics.reply,
                QoS::AtLeastOnce,
                false,
                reply.clone(),
            )
            .await
        {
            warn!("MQTT control: a reply could not be queued ({e})");
        }
    }
    Finished::Published
}

async fn execute(context: Arc<Context>, request: Request, remember: bool) -> Finished {
    let Request { id, op } = request;
    let name = op.name();
    let started = Instant::now();
    let reply = match tokio::time::timeout(COMMAND_TIMEOUT, run_op(&context, op)).await {
        Ok(Ok(result)) => Reply::ok(&id, result),
        Ok(Err(e)) => Reply::error(Some(&id), e.code(), e.to_string()),
        Err(_) => Reply::error(
            Some(&id),
            codes::TIMED_OUT,
            format!(
                "{name} did not finish within {} s; it may still take effect: send get_state or read {}",
                COMMAND_TIMEOUT.as_secs(),
                context.topics.state
            ),
        ),
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match &reply.error {
        None => info!(id = %id, op = name, elapsed_ms, "command done"),
        Some(error) => {
            info!(id = %id, op = name, elapsed_ms, code = error.code, "command failed: {}", error.message)
        }
    }
    // Within the payload limit: a result's lists are cut (see `publish::bounded`).
    let bytes = serde_json::to_value(&reply)
        .ok()
        .and_then(publish::bounded)
        .unwrap_or_else(|| {
            Reply::error(
                Some(&id),
                ErrorCode::INVALID_PARAMETER,
                format!(
                    "the reply to {name} would be larger than {} bytes; read {} instead",
                    publish::MAX_PAYLOAD_BYTES,
                    context.topics.state
                ),
            )
            .to_bytes()
        });
    Finished::Ran {
        id,
        reply: bytes,
        remember,
    }
}

async fn run_op(context: &Context, op: Op) -> Result<Value, EngineError> {
    let engine = &context.engine;
    Ok(match op {
        Op::LoginRoom {
            room_id,
            user,
            token,
            server,
        } => {
            let user = match user {
                Some((user_id, user_name)) => User::parse(user_id, user_name)?,
                None => context.identity.clone(),
            };
            engine
                .login_room_on(&room_id, server.as_deref(), user.clone(), token)
                .await?;
            // The server the room went to (named, or by rooms.routes).
            let server = engine
                .state()
                .await?
                .rooms
                .into_iter()
                .find(|r| r.room_id.as_str() == room_id)
                .map(|r| r.server);
            json!({"room_id": room_id, "user": user, "server": server})
        }
        Op::LogoutRoom { room_id } => {
            let rooms = engine.logout_room(room_id.as_deref()).await?;
            json!({ "rooms": rooms })
        }
        Op::StartPublishing {
            stream_id,
            room_id,
            channel,
        } => {
            let state = engine
                .start_publishing(&stream_id, PublisherConfig { room_id }, channel)
                .await?;
            json!({"stream_id": stream_id, "state": state})
        }
        Op::StopPublishing { stream_id } => {
            engine.stop_publishing(&stream_id).await?;
            json!({ "stream_id": stream_id })
        }
        Op::StartPlaying {
            stream_id,
            room_id,
            output,
        } => {
            let state = engine
                .start_playing(&stream_id, PlayerConfig { room_id, output })
                .await?;
            json!({"stream_id": stream_id, "state": state})
        }
        Op::StopPlaying { stream_id } => {
            engine.stop_playing(&stream_id).await?;
            json!({ "stream_id": stream_id })
        }
        Op::SendBroadcastMessage { room_id, message } => {
            let message_id = engine.send_broadcast_message(&room_id, &message).await?;
            json!({"room_id": room_id, "message_id": message_id})
        }
        Op::SendCustomCommand {
            room_id,
            command,
            to_users,
        } => {
            engine
                .send_custom_command(&room_id, &to_users, &command)
                .await?;
            json!({ "room_id": room_id })
        }
        Op::SetRoomMode { mode } => {
            engine.set_room_mode(mode).await?;
            json!({ "mode": mode })
        }
        Op::GetState => {
            let snapshot = engine.state().await?;
            publish::state_value(&context.device_id, &snapshot)
        }
        // Probing devices blocks (V4L2 and ALSA ioctls, GStreamer's registry): not on
        // the dispatcher, which would hold up every other command meanwhile.
        Op::ListDevices => {
            let devices = tokio::task::spawn_blocking(crate::media::devices::list)
                .await
                .map_err(|e| EngineError::InvalidParameter(format!("cannot list devices: {e}")))?;
            serde_json::to_value(devices)
                .map_err(|e| EngineError::InvalidParameter(format!("cannot list devices: {e}")))?
        }
    })
}
