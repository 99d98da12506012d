// roomcast room page (see index.html for the URL parameters, README "The web page").
//
// It follows the conventions of roomcast's own Janus client (src/rooms/janus/room/),
// so that the box and the people in a room see each other the same way:
// - rooms are string ids (Janus `string_ids = true`), one VideoRoom and one TextRoom each;
//   the page never creates a room (the box does, H.264 + Opus): it waits until it exists;
// - a VideoRoom participant's `display` is JSON {"user_id", "user_name"};
// - a published stream joins the VideoRoom with id = its stream id;
// - in the TextRoom, username = user id and display = user name; a message whose text is
//   {"custom_command": "..."} is a custom command, anything else a broadcast message.
//
// Everything a test needs is on `window.roomcast`: `snapshot()` (JSON: status, users,
// messages, and per feed its video frames and size), `send(text)`, `startPublishing()`.
'use strict';

(function () {
  const params = new URLSearchParams(location.search);
  const user = params.get('user') || 'guest-' + Math.random().toString(36).slice(2, 8);
  const config = {
    room: params.get('room') || 'bigclass',
    user,
    name: params.get('name') || user,
    stream: params.get('stream') || user.replace(/[^A-Za-z0-9_-]/g, '_') + '-cam',
    publish: params.get('publish') === '1',
    pin: params.get('pin') || undefined,
    janus: params.get('janus') ||
      (location.protocol === 'https:' ? 'wss://' : 'ws://') +
      (location.hostname || '127.0.0.1') + ':8188/',
  };
  const display = JSON.stringify({ user_id: config.user, user_name: config.name });
  const RETRY_MS = 2000;

  const $ = (id) => document.getElementById(id);
  const state = {
    config,
    status: 'starting', // starting | connecting | waiting-room | joined | error | closed
    chat: 'starting', // the TextRoom: starting | waiting-room | joined | error
    error: null,
    publishing: 'off', // off | requesting | publishing | error
    publishError: null,
    users: {}, // user id -> user name: the others in the TextRoom
    messages: [], // {kind, from, from_name, text, date, whisper}
    feeds: {}, // stream id -> {id, user_id, user_name, state, video, tile, handle}
    log: [],
  };
  let janus = null;
  let presence = null; // VideoRoom handle: who publishes what
  let privateId = null;
  let publisher = null; // VideoRoom handle publishing our camera
  let localStream = null;
  let text = null; // TextRoom handle
  const pending = new Map(); // TextRoom transaction -> {resolve, reject}

  // ---- what the page shows ----------------------------------------------------------

  function log(line) {
    const entry = new Date().toISOString().slice(11, 23) + ' ' + line;
    state.log.push(entry);
    if (state.log.length > 500) state.log.shift();
    const pre = $('log');
    pre.textContent += entry + '\n';
    pre.scrollTop = pre.scrollHeight;
  }

  function setStatus(status, error) {
    state.status = status;
    if (error !== undefined) state.error = error;
    const badge = $('status');
    badge.textContent = error ? status + ': ' + error : status;
    badge.className = 'badge ' + (status === 'joined' ? 'joined' :
      status === 'error' ? 'error' : status === 'waiting-room' ? 'waiting' : '');
    log('status ' + badge.textContent);
  }

  function fail(what, error) {
    const message = what + ': ' + (error && error.message ? error.message : JSON.stringify(error));
    setStatus('error', message);
  }

  function addMessage(message) {
    state.messages.push(message);
    const li = document.createElement('li');
    li.className = message.kind;
    const time = document.createElement('time');
    const date = message.date ? new Date(message.date) : new Date();
    time.textContent = isNaN(date) ? '' : date.toTimeString().slice(0, 8);
    li.append(time);
    if (message.from_name) {
      const from = document.createElement('span');
      from.className = 'from';
      from.textContent = message.from_name + (message.whisper ? ' (to you)' : '') +
        (message.kind === 'custom_command' ? ' ⚙' : '') + ':';
      li.append(from);
    }
    li.append(document.createTextNode(message.text));
    $('messages').append(li);
    li.scrollIntoView({ block: 'end' });
  }

  function systemMessage(text) {
    addMessage({ kind: 'system', text, date: Date.now() });
  }

  function tile(id, caption, local) {
    const figure = document.createElement('figure');
    figure.className = 'tile' + (local ? ' local' : '');
    figure.dataset.stream = id;
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    video.muted = !!local; // never play our own microphone back
    const figcaption = document.createElement('figcaption');
    figcaption.textContent = caption;
    figure.append(video, figcaption);
    $('videos').append(figure);
    return { figure, video, figcaption };
  }

  // Browsers refuse to autoplay sound without a click on the page: then play muted and
  // offer a button that turns the sound on.
  function play(video) {
    video.play().catch((e) => {
      if (e.name !== 'NotAllowedError') return;
      video.muted = true;
      video.play().catch(() => {});
      $('unmute').hidden = false;
    });
  }

  function videoStats(video) {
    const quality = video && video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
    return {
      frames: quality ? quality.totalVideoFrames : 0,
      dropped: quality ? quality.droppedVideoFrames : 0,
      width: video ? video.videoWidth : 0,
      height: video ? video.videoHeight : 0,
    };
  }

  function refreshCaptions() {
    for (const feed of Object.values(state.feeds)) {
      const s = videoStats(feed.video);
      const size = s.width ? ` · ${s.width}×${s.height}` : '';
      const what = feed.state === 'gone' ? ' · ended' : feed.state === 'playing' ? '' : ' · ' + feed.state;
      feed.tile.figcaption.textContent =
        `${feed.user_name} (${feed.user_id}) · ${feed.id}${size} · ${s.frames} frames${what}`;
    }
  }

  // Audio actually played out, from the receiver's statistics (samples and energy rise
  // only while decoded sound reaches the output).
  function pollAudio() {
    for (const feed of Object.values(state.feeds)) {
      const pc = feed.handle && feed.handle.webrtcStuff ? feed.handle.webrtcStuff.pc : null;
      if (!pc || feed.state === 'gone') continue;
      pc.getStats().then((report) => {
        report.forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'audio') {
            feed.audioSamples = s.totalSamplesReceived || 0;
            feed.audioEnergy = s.totalAudioEnergy || 0;
          }
        });
      }).catch(() => {});
    }
  }

  // ---- Janus session ----------------------------------------------------------------

  function start() {
    $('room').textContent = config.room;
    $('who').textContent = `${config.name} (${config.user})`;
    log(`room ${config.room} as ${config.user}, Janus at ${config.janus}`);
    Janus.init({
      debug: ['warn', 'error'],
      dependencies: Janus.useDefaultDependencies(),
      callback: connect,
    });
    setInterval(refreshCaptions, 500);
    setInterval(pollAudio, 1000);
    $('chat').addEventListener('submit', (event) => {
      event.preventDefault();
      const input = $('message');
      const value = input.value.trim();
      if (!value) return;
      input.value = '';
      send(value).catch((e) => log('send failed: ' + (e.message || e)));
    });
    $('publish').addEventListener('click', () => {
      if (state.publishing === 'off' || state.publishing === 'error') startPublishing();
      else stopPublishing();
    });
    $('unmute').addEventListener('click', () => {
      for (const feed of Object.values(state.feeds)) {
        feed.video.muted = false;
        play(feed.video);
      }
      $('unmute').hidden = true;
    });
  }

  function connect() {
    if (!Janus.isWebrtcSupported()) {
      setStatus('error', 'this browser has no WebRTC');
      return;
    }
    setStatus('connecting');
    janus = new Janus({
      server: config.janus,
      iceServers: [], // no STUN: the box, Janus and the browsers share a network
      success: () => {
        attachPresence();
        attachText();
      },
      error: (e) => fail('Janus', e),
      destroyed: () => setStatus('closed'),
    });
  }

  // ---- VideoRoom: who publishes, and watching them ----------------------------------

  function attachPresence() {
    janus.attach({
      plugin: 'janus.plugin.videoroom',
      success: (handle) => {
        presence = handle;
        joinVideoRoom();
      },
      error: (e) => fail('attach the VideoRoom', e),
      onmessage: onPresenceMessage,
    });
  }

  function joinVideoRoom() {
    const join = { request: 'join', room: config.room, ptype: 'publisher', display };
    if (config.pin) join.pin = config.pin;
    presence.send({ message: join, error: (e) => fail('join the VideoRoom', e) });
  }

  function onPresenceMessage(msg) {
    const event = msg.videoroom;
    if (event === 'joined') {
      privateId = msg.private_id;
      setStatus('joined', null);
      $('publish').disabled = false;
      (msg.publishers || []).forEach(subscribe);
      if (config.publish) startPublishing();
    } else if (event === 'event') {
      if (msg.error_code === 426) {
        // No such room (yet): the box creates it when it logs in.
        setStatus('waiting-room', `room ${config.room} does not exist yet`);
        setTimeout(joinVideoRoom, RETRY_MS);
        return;
      }
      if (msg.error) {
        fail('VideoRoom', msg.error);
        return;
      }
      (msg.publishers || []).forEach(subscribe);
      if (msg.unpublished && msg.unpublished !== 'ok') feedGone(msg.unpublished);
      if (msg.leaving && msg.leaving !== 'ok') feedGone(msg.leaving);
    } else if (event === 'destroyed') {
      setStatus('error', `room ${config.room} was destroyed`);
    }
  }

  function userOf(publisher) {
    try {
      const who = JSON.parse(publisher.display);
      if (who && typeof who.user_id === 'string') {
        return { user_id: who.user_id, user_name: who.user_name || who.user_id };
      }
    } catch (e) { /* a plain display name */ }
    const name = publisher.display || publisher.id;
    return { user_id: name, user_name: name };
  }

  function subscribe(publisher) {
    const id = String(publisher.id);
    if (id === config.stream) return; // our own camera: shown as the local preview
    const old = state.feeds[id];
    if (old && old.state !== 'gone') return;
    if (old) old.tile.figure.remove();
    const who = userOf(publisher);
    const feed = {
      id, ...who, state: 'subscribing', stream: new MediaStream(), handle: null,
      tile: tile(id, `${who.user_name} (${who.user_id}) · ${id}`, false),
    };
    feed.video = feed.tile.video;
    state.feeds[id] = feed;
    log(`feed ${id} from ${who.user_id}: subscribing`);
    janus.attach({
      plugin: 'janus.plugin.videoroom',
      success: (handle) => {
        feed.handle = handle;
        const join = {
          request: 'join', room: config.room, ptype: 'subscriber', streams: [{ feed: id }],
        };
        if (privateId) join.private_id = privateId;
        if (config.pin) join.pin = config.pin;
        handle.send({ message: join, error: (e) => log(`feed ${id}: join failed: ${e}`) });
      },
      error: (e) => log(`feed ${id}: attach failed: ${e}`),
      onmessage: (msg, jsep) => {
        if (msg.error) {
          log(`feed ${id}: ${msg.error}`);
          return;
        }
        if (jsep) {
          feed.handle.createAnswer({
            jsep,
            tracks: [], // receive only
            success: (answer) => feed.handle.send({
              message: { request: 'start', room: config.room }, jsep: answer,
            }),
            error: (e) => log(`feed ${id}: answer failed: ${e}`),
          });
        }
      },
      onremotetrack: (track, mid, on) => {
        if (on) {
          if (!feed.stream.getTracks().includes(track)) feed.stream.addTrack(track);
          if (feed.video.srcObject !== feed.stream) feed.video.srcObject = feed.stream;
          play(feed.video);
        } else if (track.readyState === 'ended') {
          feed.stream.removeTrack(track);
        }
      },
      webrtcState: (up) => {
        if (feed.state === 'gone') return;
        feed.state = up ? 'playing' : 'disconnected';
        log(`feed ${id}: ${feed.state}`);
      },
    });
  }

  function feedGone(id) {
    const feed = state.feeds[String(id)];
    if (!feed || feed.state === 'gone') return;
    feed.state = 'gone';
    feed.tile.figure.classList.add('gone');
    log(`feed ${id}: gone`);
    if (feed.handle) feed.handle.detach();
  }

  // ---- publishing this browser's camera and microphone ------------------------------

  function setPublishing(value, error) {
    state.publishing = value;
    state.publishError = error || null;
    const button = $('publish');
    button.textContent = value === 'off' || value === 'error' ? 'Start camera' : 'Stop camera';
    log('publishing ' + value + (error ? ': ' + error : ''));
  }

  function startPublishing() {
    if (!window.isSecureContext || !navigator.mediaDevices) {
      setPublishing('error', 'the camera needs https or http://localhost');
      return;
    }
    if (publisher) return;
    setPublishing('requesting');
    janus.attach({
      plugin: 'janus.plugin.videoroom',
      success: (handle) => {
        publisher = handle;
        const join = {
          request: 'join', room: config.room, ptype: 'publisher', id: config.stream, display,
        };
        if (config.pin) join.pin = config.pin;
        handle.send({ message: join });
      },
      error: (e) => setPublishing('error', String(e)),
      onmessage: (msg, jsep) => {
        if (msg.error) {
          setPublishing('error', msg.error);
          stopPublishing(true);
          return;
        }
        if (msg.videoroom === 'joined') {
          publisher.createOffer({
            tracks: [
              { type: 'audio', capture: true, recv: false },
              { type: 'video', capture: true, recv: false },
            ],
            success: (offer) => publisher.send({
              message: { request: 'publish', audio: true, video: true }, jsep: offer,
            }),
            error: (e) => {
              setPublishing('error', e.message || String(e));
              stopPublishing(true);
            },
          });
        }
        if (jsep) publisher.handleRemoteJsep({ jsep });
      },
      onlocaltrack: (track, on) => {
        if (!localStream) {
          localStream = new MediaStream();
          const local = tile(config.stream, `You (${config.user}) · ${config.stream}`, true);
          local.video.srcObject = localStream;
        }
        if (on) localStream.addTrack(track);
        else localStream.removeTrack(track);
      },
      webrtcState: (up) => {
        if (publisher) setPublishing(up ? 'publishing' : 'requesting');
      },
    });
  }

  function stopPublishing(keepState) {
    if (publisher) {
      const handle = publisher;
      publisher = null;
      handle.detach();
    }
    if (localStream) {
      localStream.getTracks().forEach((t) => t.stop());
      localStream = null;
    }
    const preview = document.querySelector('figure.tile.local');
    if (preview) preview.remove();
    if (!keepState) setPublishing('off');
  }

  // ---- TextRoom: messages -------------------------------------------------------------

  function attachText() {
    janus.attach({
      plugin: 'janus.plugin.textroom',
      success: (handle) => {
        text = handle;
        text.send({ message: { request: 'setup' } });
      },
      error: (e) => fail('attach the TextRoom', e),
      onmessage: (msg, jsep) => {
        if (msg.error) {
          fail('TextRoom', msg.error);
          return;
        }
        if (jsep) {
          text.createAnswer({
            jsep,
            tracks: [{ type: 'data' }],
            success: (answer) => text.send({ message: { request: 'ack' }, jsep: answer }),
            error: (e) => fail('TextRoom answer', e),
          });
        }
      },
      ondataopen: joinTextRoom,
      ondata: (data) => {
        try {
          onTextData(JSON.parse(data));
        } catch (e) {
          log('TextRoom: unreadable ' + data);
        }
      },
    });
  }

  function textRequest(request) {
    request.transaction = Janus.randomString(12);
    return new Promise((resolve, reject) => {
      pending.set(request.transaction, { resolve, reject });
      text.data({
        text: JSON.stringify(request),
        error: (e) => {
          pending.delete(request.transaction);
          reject(new Error(String(e)));
        },
      });
    });
  }

  function joinTextRoom() {
    const join = {
      textroom: 'join', room: config.room, username: config.user, display: config.name,
      history: true,
    };
    if (config.pin) join.pin = config.pin;
    textRequest(join).then((answer) => {
      state.chat = 'joined';
      for (const p of answer.participants || []) state.users[p.username] = p.display || p.username;
      $('message').disabled = false;
      $('send').disabled = false;
      const others = Object.keys(state.users).map(nameOf);
      systemMessage(others.length ? 'In the room: ' + others.join(', ') : 'Nobody else is here yet');
      log('TextRoom joined; others: ' + Object.keys(state.users).join(', '));
    }).catch((e) => {
      if (e.code === 417) {
        // No such room (yet).
        state.chat = 'waiting-room';
        setTimeout(joinTextRoom, RETRY_MS);
      } else {
        state.chat = 'error';
        fail('join the TextRoom', e);
      }
    });
  }

  function nameOf(userId) {
    if (userId === config.user) return config.name;
    return state.users[userId] || userId;
  }

  function onTextData(data) {
    const kind = data.textroom;
    if (kind === 'success' || kind === 'error') {
      const waiter = pending.get(data.transaction);
      if (!waiter) return;
      pending.delete(data.transaction);
      if (kind === 'success') waiter.resolve(data);
      else waiter.reject(Object.assign(new Error(data.error), { code: data.error_code }));
      return;
    }
    if (data.room !== undefined && data.room !== config.room) return;
    if (kind === 'message') {
      let custom = null;
      try {
        const parsed = JSON.parse(data.text);
        if (parsed && Object.keys(parsed).length === 1 && typeof parsed.custom_command === 'string') {
          custom = parsed.custom_command;
        }
      } catch (e) { /* a plain message */ }
      addMessage({
        kind: custom === null ? 'message' : 'custom_command',
        from: data.from,
        from_name: nameOf(data.from),
        text: custom === null ? data.text : custom,
        date: data.date,
        whisper: !!data.whisper,
      });
    } else if (kind === 'announcement') {
      addMessage({ kind: 'announcement', text: data.text, date: data.date });
    } else if (kind === 'join') {
      if (data.username === config.user) return; // our own join
      state.users[data.username] = data.display || data.username;
      systemMessage(`${nameOf(data.username)} joined`);
    } else if (kind === 'leave') {
      systemMessage(`${nameOf(data.username)} left`);
      delete state.users[data.username];
    } else if (kind === 'kicked') {
      systemMessage(`${nameOf(data.username)} was removed`);
    } else if (kind === 'destroyed') {
      systemMessage('the room was closed');
    }
  }

  // Sends a public message to the room; resolves once the TextRoom accepted it.
  function send(message) {
    if (state.chat !== 'joined') return Promise.reject(new Error('not in the room yet'));
    return textRequest({ textroom: 'message', room: config.room, text: message });
  }

  // ---- for tests ----------------------------------------------------------------------

  function snapshot() {
    const feeds = {};
    for (const feed of Object.values(state.feeds)) {
      const audio = feed.stream.getAudioTracks().length > 0;
      feeds[feed.id] = {
        user_id: feed.user_id, user_name: feed.user_name, state: feed.state, audio,
        muted: feed.video.muted, audio_samples: feed.audioSamples || 0,
        audio_energy: feed.audioEnergy || 0, ...videoStats(feed.video),
      };
    }
    return {
      room: config.room, user: config.user, stream: config.stream,
      status: state.status, error: state.error, chat: state.chat,
      publishing: state.publishing, publish_error: state.publishError,
      users: { ...state.users }, messages: state.messages.slice(), feeds,
    };
  }

  window.roomcast = {
    state, snapshot, send, startPublishing, stopPublishing,
    log: () => state.log.join('\n'),
  };
  start();
})();
