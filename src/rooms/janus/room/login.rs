//! Logging in to a room and out of it: the VideoRoom presence, the TextRoom and its
//! data
//! channel, creating the rooms when configured to and destroying what the box created.

use super::*;

impl RoomActor {
    pub(super) async fn login(
        &self,
        user: &User,
        token: Option<Secret>,
    ) -> Result<Joined, BackendError> {
        let timeout = self.client.request_timeout();
        self.client
            .wait_connected(timeout)
            .await
            .map_err(|e| errors::map(e, "connect"))?;
        let room = self.room.as_str();
        let pin = token.as_ref().map(|t| t.expose().to_owned());

        let (presence, presence_events) = self
            .client
            .attach(VIDEOROOM)
            .await
            .map_err(|e| errors::map(e, "attach"))?;
        let (text, text_events) = match self.client.attach(TEXTROOM).await {
            Ok(attached) => attached,
            Err(e) => {
                let _ = presence.detach().await;
                return Err(errors::map(e, "attach"));
            }
        };
        let partial = (presence.clone(), text.clone());
        let result = async {
            self.ensure_rooms(&presence, &text, token.as_ref()).await?;

            let display = display_of(user);
            let join = RoomRequest::Join {
                room,
                role: JoinAs::Publisher {
                    id: None,
                    display: &display,
                },
                pin: pin.as_deref(),
            };
            let joined = presence
                .message("join the VideoRoom", join.body(), None)
                .await
                .map_err(|e| errors::map(e, "login"))?;
            let publishers = match parse_videoroom(&joined)? {
                VideoRoom::Joined { publishers, .. } => publishers,
                other => return Err(unexpected("join the VideoRoom", &other)),
            };
            let left_behind =
                remove_left_behind(&presence, room, &display_of(user), &publishers, None).await;
            let publishers = publishers
                .into_iter()
                .filter(|p| !left_behind.contains(&p.id));

            debug!("VideoRoom joined");
            let channel = self
                .channels
                .open(&format!("textroom-{room}"))
                .map_err(|e| {
                    BackendError::new(
                        ErrorCode::SFU_REFUSED,
                        format!("cannot open the TextRoom data channel: {e}"),
                    )
                })?;
            let setup = text
                .message("set up the TextRoom", RoomRequest::Setup.body(), None)
                .await
                .map_err(|e| errors::map(e, "login"))?;
            let offer = setup.jsep.ok_or_else(|| {
                BackendError::new(
                    ErrorCode::SFU_REFUSED,
                    "the TextRoom setup carried no SDP offer",
                )
            })?;
            let answer = channel.answer_offer(&offer.sdp).await.map_err(|e| {
                BackendError::new(
                    ErrorCode::SFU_REFUSED,
                    format!("cannot answer the TextRoom offer: {e}"),
                )
            })?;
            text.message(
                "answer the TextRoom",
                RoomRequest::Ack.body(),
                Some(Jsep {
                    kind: JsepType::Answer,
                    sdp: answer,
                }),
            )
            .await
            .map_err(|e| errors::map(e, "login"))?;
            if let Some(candidates) = channel.take_local_candidates() {
                tokio::spawn(trickle(text.clone(), candidates));
            }
            debug!("TextRoom answered; waiting for the data channel");
            channel
                .wait_open(negotiation_timeout(timeout))
                .await
                .map_err(|e| match e {
                    crate::peer::ChannelError::RelayFailed(_) => {
                        BackendError::new(ErrorCode::ROOM_RELAY_FAILED, e.to_string())
                    }
                    e => BackendError::new(
                        ErrorCode::SFU_TIMEOUT,
                        format!("TextRoom data channel: {e}"),
                    ),
                })?;
            let incoming = channel.take_incoming().ok_or_else(|| {
                BackendError::new(
                    ErrorCode::SFU_REFUSED,
                    "TextRoom data channel has no receiver",
                )
            })?;
            debug!("TextRoom data channel open");
            let channel_state = channel.state();
            let mut j = Joined {
                user: user.clone(),
                pin: token.clone(),
                presence: presence.clone(),
                presence_events,
                text: text.clone(),
                text_events,
                channel,
                channel_state,
                incoming,
                text_pending: HashMap::new(),
                next_transaction: 1,
                feeds: BTreeMap::new(),
                users: BTreeMap::new(),
                publishers: HashMap::new(),
                players: HashMap::new(),
            };
            for publisher in publishers {
                let info = StreamInfo {
                    stream_id: publisher.id.clone(),
                    user: user_of_feed(&publisher.id, publisher.display.as_deref()),
                };
                j.feeds.insert(publisher.id, info);
            }
            let participants = self.text_join(&mut j, pin.as_deref()).await?;
            for p in participants {
                if p.username != user.user_id.as_str() {
                    j.users.insert(p.username.clone(), text_user(&p));
                }
            }
            Ok(j)
        }
        .await;
        if result.is_err() {
            let (presence, text) = partial;
            let _ = presence.detach().await;
            let _ = text.detach().await;
        }
        result
    }

    /// Makes sure the VideoRoom and the TextRoom exist, creating them when configured to.
    pub(super) async fn ensure_rooms(
        &self,
        presence: &Handle,
        text: &Handle,
        pin: Option<&Secret>,
    ) -> Result<(), BackendError> {
        let room = self.room.as_str();
        let exists = presence
            .message(
                "check the VideoRoom exists",
                RoomRequest::Exists { room }.body(),
                None,
            )
            .await
            .map_err(|e| errors::map(e, "login"))?;
        let video_exists = matches!(
            parse_videoroom(&exists)?,
            VideoRoom::Success {
                exists: Some(true),
                ..
            }
        );
        let exists = text
            .message(
                "check the TextRoom exists",
                RoomRequest::Exists { room }.body(),
                None,
            )
            .await
            .map_err(|e| errors::map(e, "login"))?;
        let text_exists = matches!(
            serde_json::from_value::<TextRoomApi>(exists.data.data.clone()),
            Ok(TextRoomApi::Success {
                exists: Some(true),
                ..
            })
        );
        if video_exists && text_exists {
            return Ok(());
        }
        if !self.settings.create_rooms {
            return Err(BackendError::new(
                ErrorCode::SFU_ROOM_NOT_FOUND,
                format!(
                    "room `{room}` does not exist on Janus and janus.create_rooms is false; create it on the server or enable create_rooms"
                ),
            ));
        }
        let create = |video| RoomRequest::Create {
            room,
            description: room,
            permanent: false,
            video,
            admin_key: self.settings.admin_key.as_ref().map(Secret::expose),
            pin: pin.map(Secret::expose),
        };
        if !video_exists {
            let options = VideoRoomOptions {
                publishers: self.settings.publishers,
                bitrate: self.settings.bitrate_bps,
                videocodec: "h264",
                audiocodec: "opus",
                fir_freq: 0,
                notify_joining: false,
            };
            match presence
                .message("create the VideoRoom", create(Some(options)).body(), None)
                .await
            {
                Ok(_) => {
                    info!("created VideoRoom");
                    self.mark_created(|c| c.video = true);
                }
                Err(JanusError::Plugin { code: 427, .. }) => {} // someone else was faster
                Err(e) => return Err(errors::map(e, "create")),
            }
        }
        if !text_exists {
            match text
                .message("create the TextRoom", create(None).body(), None)
                .await
            {
                Ok(_) => {
                    info!("created TextRoom");
                    self.mark_created(|c| c.text = true);
                }
                Err(JanusError::Plugin { code: 418, .. }) => {}
                Err(e) => return Err(errors::map(e, "create")),
            }
        }
        Ok(())
    }

    pub(super) fn mark_created(&self, mark: impl FnOnce(&mut Created)) {
        if let Ok(mut created) = self.created.lock() {
            mark(created.entry(self.room.clone()).or_default());
        }
    }

    /// After a logout: destroys what this box created of the room when nobody else is
    /// in it (VideoRoom and TextRoom participants both counted), so that login/logout
    /// loops do not fill a shared Janus. Best effort, bounded by the request timeout;
    /// a room someone else is in (or joins meanwhile: Janus then refuses nothing, they
    /// are told it was destroyed) is kept, and destroyed by whoever leaves it last.
    pub(super) async fn destroy_if_created_and_empty(&self) {
        let created = match self.created.lock() {
            Ok(created) => created.get(&self.room).copied().unwrap_or_default(),
            Err(_) => return,
        };
        if created == Created::default() {
            return;
        }
        let room = self.room.as_str();
        let (video, _video_events) = match self.client.attach(VIDEOROOM).await {
            Ok(attached) => attached,
            Err(e) => return debug!("not destroying the room: {e}"),
        };
        let (text, _text_events) = match self.client.attach(TEXTROOM).await {
            Ok(attached) => attached,
            Err(e) => {
                let _ = video.detach().await;
                return debug!("not destroying the room: {e}");
            }
        };
        // VideoRoom answers `"videoroom": "participants"`, TextRoom `"textroom": "success"`:
        // both carry a `participants` list.
        let count = |reply: Result<PluginReply, JanusError>| {
            reply
                .ok()
                .and_then(|r| r.data.data["participants"].as_array().map(Vec::len))
        };
        let list = |transaction| RoomRequest::Listparticipants { room, transaction }.body();
        let in_video = count(video.message("list the VideoRoom", list(None), None).await);
        let in_text = count(
            text.message("list the TextRoom", list(Some("list")), None)
                .await,
        );
        let destroy = |transaction| {
            RoomRequest::Destroy {
                room,
                permanent: false,
                admin_key: self.settings.admin_key.as_ref().map(Secret::expose),
                transaction,
            }
            .body()
        };
        match (in_video, in_text) {
            (Some(0), Some(0)) => {
                let mut left = created;
                if created.video {
                    match video
                        .message("destroy the VideoRoom", destroy(None), None)
                        .await
                    {
                        Ok(_) | Err(JanusError::Plugin { code: 426, .. }) => left.video = false,
                        Err(e) => warn!("cannot destroy the VideoRoom this box created: {e}"),
                    }
                }
                if created.text {
                    match text
                        .message("destroy the TextRoom", destroy(Some("destroy")), None)
                        .await
                    {
                        Ok(_) | Err(JanusError::Plugin { code: 417, .. }) => left.text = false,
                        Err(e) => warn!("cannot destroy the TextRoom this box created: {e}"),
                    }
                }
                if left != created {
                    info!("destroyed the room this box created and left last");
                }
                if let Ok(mut all) = self.created.lock() {
                    if left == Created::default() {
                        all.remove(&self.room);
                    } else {
                        all.insert(self.room.clone(), left);
                    }
                }
            }
            (video_count, text_count) => debug!(
                ?video_count,
                ?text_count,
                "the room this box created is not empty (or cannot be listed): kept"
            ),
        }
        let _ = video.detach().await;
        let _ = text.detach().await;
    }

    /// Leaves the room on Janus and releases every handle; `polite` sends the leave
    /// requests first (not when the session is already gone).
    pub(super) async fn teardown(&self, mut j: Joined, polite: bool) {
        for (_, task) in j.publishers.drain().chain(j.players.drain()) {
            task.stop().await;
        }
        if polite {
            let transaction = next_transaction(&mut j);
            let leave = TextRequest::Leave {
                transaction: &transaction,
                room: self.room.as_str(),
            };
            if let Ok(text) = serde_json::to_string(&leave) {
                let _ = j.channel.send(&text);
            }
            let _ = j
                .presence
                .message("leave the VideoRoom", RoomRequest::Leave.body(), None)
                .await;
            let _ = j.presence.detach().await;
            let _ = j.text.detach().await;
        }
        j.channel.close();
        for (_, pending) in j.text_pending.drain() {
            let _ = pending.send(Err(BackendError::new(
                ErrorCode::SFU_UNREACHABLE,
                "left the room",
            )));
        }
        info!("left the room on Janus");
    }

    /// The room's connection broke: release what is left and tell the engine.
    ///
    /// When only one of the room's handles failed, the session is still there, and so
    /// are our other handles in the room: they are detached (bounded by the request
    /// timeout), or the TextRoom would still hold our username and refuse every rejoin
    /// with 420 for as long as the session lives.
    pub(super) async fn lose(&self, joined: &mut Option<Joined>, lost: Lost) {
        let Some(j) = joined.take() else {
            return;
        };
        warn!("room lost: {}", lost.reason);
        if lost.session_alive {
            let timeout = self.client.request_timeout();
            if tokio::time::timeout(timeout, self.teardown(j, true))
                .await
                .is_err()
            {
                warn!("releasing the room's other handles took longer than {timeout:?}");
            }
        } else {
            self.teardown(j, false).await;
        }
        self.emit(BackendEvent::RoomLost {
            room: self.room.clone(),
            reason: lost.reason,
        })
        .await;
    }

    pub(super) async fn kicked(&self, joined: &mut Option<Joined>, reason: &str) {
        let Some(j) = joined.take() else {
            return;
        };
        warn!("removed from the room by Janus: {reason}");
        self.teardown(j, true).await;
        self.emit(BackendEvent::KickedOut {
            room: self.room.clone(),
            error: BackendError::new(
                ErrorCode::SFU_REFUSED,
                format!("removed from room `{}`: {reason}", self.room),
            ),
        })
        .await;
    }
}
