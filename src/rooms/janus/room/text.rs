//! The room's TextRoom exchange over the data channel: requests and their answers, and
//! the users and messages it reports.

use super::*;

impl RoomActor {
    pub(super) async fn text_join(
        &self,
        j: &mut Joined,
        pin: Option<&str>,
    ) -> Result<Vec<TextParticipant>, BackendError> {
        let transaction = next_transaction(j);
        let user_id = j.user.user_id.to_string();
        let user_name = j.user.user_name.to_string();
        let request = TextRequest::Join {
            transaction: &transaction,
            room: self.room.as_str(),
            username: &user_id,
            display: &user_name,
            pin,
            history: false,
        };
        match self
            .text_request(j, transaction.clone(), &request, "join the TextRoom")
            .await?
        {
            TextEvent::Success { participants, .. } => Ok(participants.unwrap_or_default()),
            other => Err(BackendError::new(
                ErrorCode::SFU_REFUSED,
                format!("unexpected TextRoom answer to join: {other:?}"),
            )),
        }
    }

    /// Sends a TextRoom request over the data channel and waits for its answer, handling
    /// other data-channel traffic meanwhile.
    pub(super) async fn text_request(
        &self,
        j: &mut Joined,
        transaction: String,
        request: &TextRequest<'_>,
        what: &str,
    ) -> Result<TextEvent, BackendError> {
        let text = serde_json::to_string(request)
            .map_err(|e| BackendError::new(ErrorCode::INVALID_PARAMETER, e.to_string()))?;
        let (tx, mut rx) = oneshot::channel();
        j.text_pending.insert(transaction.clone(), tx);
        if let Err(e) = j.channel.send(&text) {
            j.text_pending.remove(&transaction);
            return Err(BackendError::new(
                ErrorCode::SFU_UNREACHABLE,
                format!("{what}: {e}"),
            ));
        }
        let deadline = tokio::time::Instant::now() + self.client.request_timeout();
        loop {
            tokio::select! {
                answer = &mut rx => {
                    return answer.unwrap_or_else(|_| Err(BackendError::new(ErrorCode::SFU_UNREACHABLE, format!("{what}: the data channel closed"))));
                }
                incoming = j.incoming.recv() => match incoming {
                    Some(message) => self.dispatch_text(j, &message).await,
                    None => return Err(BackendError::new(ErrorCode::SFU_UNREACHABLE, format!("{what}: the data channel closed"))),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    j.text_pending.remove(&transaction);
                    return Err(BackendError::new(ErrorCode::SFU_TIMEOUT, format!("Janus did not answer `{what}` within {:?}", self.client.request_timeout())));
                }
            }
        }
    }

    pub(super) async fn send_text(
        &self,
        j: &mut Joined,
        text: &str,
        tos: Option<Vec<&str>>,
    ) -> Result<(), BackendError> {
        let transaction = next_transaction(j);
        let request = TextRequest::Message {
            transaction: &transaction,
            room: self.room.as_str(),
            text,
            tos,
            ack: true,
        };
        match self
            .text_request(j, transaction.clone(), &request, "send a message")
            .await?
        {
            TextEvent::Success { .. } => Ok(()),
            other => Err(BackendError::new(
                ErrorCode::SFU_REFUSED,
                format!("unexpected TextRoom answer to a message: {other:?}"),
            )),
        }
    }

    pub(super) async fn on_text(&self, message: &str, joined: &mut Option<Joined>) {
        trace!(target: "roomcast::janus::wire", "textroom <- {message}");
        if let Some(j) = joined.as_mut() {
            self.dispatch_text(j, message).await;
        }
        // Being kicked or the room's destruction arrive here too.
        let removal =
            joined
                .as_ref()
                .and_then(|j| match serde_json::from_str::<TextEvent>(message) {
                    Ok(TextEvent::Kicked { username, .. })
                        if username == j.user.user_id.as_str() =>
                    {
                        Some("kicked from the TextRoom")
                    }
                    Ok(TextEvent::Destroyed { room }) if room == self.room.as_str() => {
                        Some("the room was destroyed")
                    }
                    _ => None,
                });
        if let Some(reason) = removal {
            self.kicked(joined, reason).await;
        }
    }

    pub(super) async fn dispatch_text(&self, j: &mut Joined, message: &str) {
        let event = match serde_json::from_str::<TextEvent>(message) {
            Ok(event) => event,
            Err(e) => {
                debug!("ignoring a TextRoom message that does not parse ({e})");
                return;
            }
        };
        let room = self.room.clone();
        match event {
            TextEvent::Success {
                ref transaction, ..
            } => {
                if let Some(waiter) = j.text_pending.remove(transaction) {
                    let _ = waiter.send(Ok(event));
                }
            }
            TextEvent::Error {
                transaction,
                error_code,
                error,
            } => {
                let error = errors::textroom(error_code, error);
                match transaction.and_then(|t| j.text_pending.remove(&t)) {
                    Some(waiter) => {
                        let _ = waiter.send(Err(error));
                    }
                    None => warn!("TextRoom error: {}", error.message),
                }
            }
            TextEvent::Join {
                room: r,
                username,
                display,
            } if r == room.as_str() && username != j.user.user_id.as_str() => {
                let user = text_user(&TextParticipant {
                    username: username.clone(),
                    display,
                });
                j.users.insert(username, user.clone());
                self.emit(BackendEvent::Users {
                    room,
                    update: UpdateType::Add,
                    users: vec![user],
                })
                .await;
            }
            TextEvent::Leave { room: r, username } if r == room.as_str() => {
                if let Some(user) = j.users.remove(&username) {
                    self.emit(BackendEvent::Users {
                        room,
                        update: UpdateType::Delete,
                        users: vec![user],
                    })
                    .await;
                }
            }
            TextEvent::Message {
                room: r,
                from,
                date,
                text,
                ..
            }
            | TextEvent::Whisper {
                room: r,
                from,
                date,
                text,
            } if r == room.as_str() && from != j.user.user_id.as_str() => {
                let from_user = j.users.get(&from).cloned().unwrap_or_else(|| UserInfo {
                    user_id: from.clone(),
                    user_name: from.clone(),
                });
                match serde_json::from_str::<CustomCommandEnvelope>(&text) {
                    Ok(envelope) => {
                        self.emit(BackendEvent::CustomCommand {
                            room,
                            from_user,
                            command: envelope.custom_command,
                        })
                        .await;
                    }
                    Err(_) => {
                        let message = BroadcastMessage {
                            message: text,
                            message_id: self
                                .message_ids
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                            send_time: date
                                .as_deref()
                                .and_then(parse_janus_date)
                                .unwrap_or_else(now_ms),
                            from_user,
                        };
                        self.emit(BackendEvent::BroadcastMessage { room, message })
                            .await;
                    }
                }
            }
            // Announcements, and joins or leaves of another TextRoom on the handle.
            _ => {}
        }
    }
}
