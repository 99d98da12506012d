//! Each published or played stream negotiates on its own VideoRoom handle, in its own
//! task, so a slow negotiation never holds up the room.

use super::*;

impl RoomActor {
    pub(super) fn spawn_stream(
        &self,
        j: &Joined,
        stream: StreamId,
        peer: PeerHandle,
        reply: Reply<()>,
        direction: Direction,
    ) -> StreamTask {
        let cancel = CancellationToken::new();
        let context = StreamContext {
            client: self.client.clone(),
            room: self.room.clone(),
            stream: stream.clone(),
            display: display_of(&j.user),
            pin: j.pin.clone(),
            direction,
            events: self.events.clone(),
        };
        let span = info_span!("stream", stream = %stream, %direction);
        let task = tokio::spawn(run_stream(context, peer, reply, cancel.clone()).instrument(span));
        StreamTask { cancel, task }
    }
}

pub(in crate::rooms::janus) struct StreamContext {
    pub(in crate::rooms::janus) client: JanusClient,
    pub(in crate::rooms::janus) room: RoomId,
    pub(in crate::rooms::janus) stream: StreamId,
    pub(in crate::rooms::janus) display: String,
    pub(in crate::rooms::janus) pin: Option<Secret>,
    pub(in crate::rooms::janus) direction: Direction,
    pub(in crate::rooms::janus) events: mpsc::Sender<BackendEvent>,
}

/// Negotiates one stream on its own handle, then watches the handle until the stream
/// is stopped (detaching it) or Janus hangs it up (reporting StreamLost).
pub(super) async fn run_stream(
    cx: StreamContext,
    peer: PeerHandle,
    reply: Reply<()>,
    cancel: CancellationToken,
) {
    let attached = tokio::select! {
        _ = cancel.cancelled() => return,
        attached = cx.client.attach(VIDEOROOM) => attached,
    };
    let (handle, mut events) = match attached {
        Ok(attached) => attached,
        Err(e) => {
            let _ = reply.send(Err(errors::map(e, cx.direction.verb())));
            return;
        }
    };
    let timeout = negotiation_timeout(cx.client.request_timeout());
    let negotiated = tokio::select! {
        _ = cancel.cancelled() => {
            let _ = handle.detach().await;
            return;
        }
        result = tokio::time::timeout(timeout, negotiate(&cx, &handle, &mut events, &peer)) => result.unwrap_or_else(|_| {
            Err(BackendError::new(
                webrtc_code(cx.direction),
                format!("the WebRTC connection to Janus was not up within {timeout:?}"),
            ))
        }),
    };
    if let Err(e) = negotiated {
        let _ = handle.detach().await;
        let _ = reply.send(Err(e));
        return;
    }
    info!("stream up on Janus");
    let _ = reply.send(Ok(()));
    let lost = loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = handle.detach().await;
                return;
            }
            event = events.recv() => match event {
                // The session ended: the room reports it, the stream need not.
                None => return,
                Some(HandleEvent::Hangup { reason }) => break format!("Janus hung up: {reason}"),
                Some(HandleEvent::Detached) => break "Janus detached the handle".to_owned(),
                Some(HandleEvent::Trickle(candidate)) => {
                    if let Some(candidate) = ice_candidate(&candidate) {
                        let _ = peer.add_remote_candidate(&candidate);
                    }
                }
                Some(_) => {}
            },
        }
    };
    warn!("stream lost: {lost}");
    let _ = handle.detach().await;
    let _ = cx
        .events
        .send(BackendEvent::StreamLost {
            room: cx.room,
            stream: cx.stream,
            direction: cx.direction,
            reason: lost,
        })
        .await;
}

/// Negotiates `peer` on `handle` until Janus says it is up; a publisher's SDP offer is
/// returned (server fan-out describes the streams it relays from it).
pub(in crate::rooms::janus) async fn negotiate(
    cx: &StreamContext,
    handle: &Handle,
    events: &mut HandleEvents,
    peer: &PeerHandle,
) -> Result<Option<String>, BackendError> {
    let room = cx.room.as_str();
    let context = cx.direction.verb();
    let pin = cx.pin.as_ref().map(Secret::expose);
    let mut offered = None;
    if cx.direction == Direction::Publish {
        let join = RoomRequest::Join {
            room,
            role: JoinAs::Publisher {
                id: Some(cx.stream.as_str()),
                display: &cx.display,
            },
            pin,
        };
        handle
            .message("join as publisher", join.body(), None)
            .await
            .map_err(|e| errors::map(e, context))?;
        let offer = peer.create_offer().await?;
        offered = Some(offer.clone());
        let answer = handle
            .message(
                "publish",
                RoomRequest::Publish.body(),
                Some(Jsep {
                    kind: JsepType::Offer,
                    sdp: offer,
                }),
            )
            .await
            .map_err(|e| errors::map(e, context))?;
        let answer = answer.jsep.ok_or_else(|| {
            BackendError::new(
                ErrorCode::PUBLISH_WEBRTC_FAILED,
                "Janus answered the publish without SDP",
            )
        })?;
        peer.apply_answer(&answer.sdp).await?;
    } else {
        let join = RoomRequest::Join {
            room,
            role: JoinAs::Subscriber {
                streams: [Feed {
                    feed: cx.stream.as_str(),
                }],
            },
            pin,
        };
        let attached = handle
            .message("subscribe", join.body(), None)
            .await
            .map_err(|e| errors::map(e, context))?;
        let offer = attached.jsep.ok_or_else(|| {
            BackendError::new(
                ErrorCode::PLAY_WEBRTC_FAILED,
                "Janus offered the subscription without SDP",
            )
        })?;
        let answer = peer.answer_offer(&offer.sdp).await?;
        handle
            .message(
                "start",
                RoomRequest::Start.body(),
                Some(Jsep {
                    kind: JsepType::Answer,
                    sdp: answer,
                }),
            )
            .await
            .map_err(|e| errors::map(e, context))?;
    }
    if let Some(candidates) = peer.take_local_candidates() {
        tokio::spawn(trickle(handle.clone(), candidates));
    }
    // Up when Janus says DTLS is done.
    let mut state = peer.state();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(HandleEvent::WebrtcUp) => return Ok(offered),
                Some(HandleEvent::Trickle(candidate)) => {
                    if let Some(candidate) = ice_candidate(&candidate) {
                        let _ = peer.add_remote_candidate(&candidate);
                    }
                }
                Some(HandleEvent::Hangup { reason }) => {
                    return Err(BackendError::new(webrtc_code(cx.direction), format!("Janus hung up during negotiation: {reason}")));
                }
                Some(_) => {}
                None => return Err(BackendError::new(ErrorCode::SFU_UNREACHABLE, "the Janus session ended during negotiation")),
            },
            changed = state.changed() => {
                if changed.is_err() {
                    return Err(BackendError::new(webrtc_code(cx.direction), "the peer closed during negotiation"));
                }
                let failure = match &*state.borrow() {
                    PeerState::MediaFailed(reason) if cx.direction == Direction::Publish => Some((ErrorCode::PUBLISH_MEDIA_FAILED, reason.clone())),
                    other => other.failure().map(|reason| (webrtc_code(cx.direction), reason.to_owned())),
                };
                if let Some((code, reason)) = failure {
                    return Err(BackendError::new(code, reason));
                }
            }
        }
    }
}

pub(super) fn webrtc_code(direction: Direction) -> ErrorCode {
    match direction {
        Direction::Publish => ErrorCode::PUBLISH_WEBRTC_FAILED,
        Direction::Play => ErrorCode::PLAY_WEBRTC_FAILED,
    }
}

/// Forwards our ICE candidates to Janus, then tells it gathering is complete.
pub(super) async fn trickle(handle: Handle, mut candidates: mpsc::UnboundedReceiver<IceCandidate>) {
    while let Some(candidate) = candidates.recv().await {
        let c = TrickleCandidate::Candidate {
            candidate: candidate.candidate,
            sdp_m_line_index: candidate.sdp_m_line_index,
            sdp_mid: None,
        };
        if handle.trickle(c).await.is_err() {
            return;
        }
    }
    let _ = handle
        .trickle(TrickleCandidate::Completed { completed: true })
        .await;
}

pub(in crate::rooms::janus) fn ice_candidate(candidate: &TrickleCandidate) -> Option<IceCandidate> {
    match candidate {
        TrickleCandidate::Candidate {
            candidate,
            sdp_m_line_index,
            ..
        } => Some(IceCandidate {
            sdp_m_line_index: *sdp_m_line_index,
            candidate: candidate.clone(),
        }),
        TrickleCandidate::Completed { .. } => None,
    }
}

/// Time allowed for a negotiation up to connected media.
pub(in crate::rooms::janus) fn negotiation_timeout(request_timeout: Duration) -> Duration {
    (request_timeout * 2).max(Duration::from_secs(10))
}
