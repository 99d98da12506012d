// roomcast console page (docs/console.md). Plain JavaScript, no framework.
//
// The console sends the whole fleet first (`fleet` event), then one `update` per change
// (a box, or the console's own link to the broker). Each box is a tile: its view is
// redrawn from the box's data on every update; its action form is built once, so what a
// person is typing survives the updates.
//
// Everything shown comes from outside (box ids, room ids, user names, messages): it is
// only ever put into the page as text (textContent, option values, dataset), never as
// markup.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const boxes = new Map(); // device id -> box view (as the console sent it)
  const tiles = new Map(); // device id -> {root, view, reply}
  let broker = null;
  let janusUrl = null;
  let roomShown = null;
  const previews = new Map(); // stream id -> {janus, handle}

  // An element with text; `cls` and `attrs` optional. Text only: never markup.
  function el(tag, cls, text, attrs) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }

  function ago(ms) {
    if (!ms) return '';
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    return new Date(ms).toLocaleString();
  }

  function roomsOf(box) {
    const rooms = (box.state && Array.isArray(box.state.rooms)) ? box.state.rooms : [];
    return rooms.filter((r) => r && typeof r.room_id === 'string');
  }

  function streamsOf(box) {
    const out = [];
    const st = box.state || {};
    for (const [list, kind] of [['publishing', 'publish'], ['playing', 'play']]) {
      for (const s of (Array.isArray(st[list]) ? st[list] : [])) {
        if (s && typeof s.stream_id === 'string') out.push({ ...s, kind });
      }
    }
    return out;
  }

  // A box is failing when it is offline or one of its rooms or streams has an error.
  function failing(box) {
    return box.status === 'offline' || Object.keys(box.errors || {}).length > 0;
  }

  function inRoom(box, room) {
    return roomsOf(box).some((r) => r.room_id === room);
  }

  // ---- the summary and the filter -----------------------------------------------------

  function drawSummary() {
    const all = [...boxes.values()];
    const online = all.filter((b) => b.status === 'online');
    const rooms = new Set();
    let streams = 0;
    for (const b of online) {
      for (const r of roomsOf(b)) rooms.add(r.room_id);
      streams += streamsOf(b).length;
    }
    $('sum-online').textContent = `${online.length} of ${all.length}`;
    $('sum-rooms').textContent = String(rooms.size);
    $('sum-streams').textContent = String(streams);
    const bad = all.filter(failing).length;
    $('sum-failing').textContent = String(bad);
    $('sum-failing').parentElement.classList.toggle('bad', bad > 0);
    $('empty').hidden = all.length > 0;

    // Every room any box is in, for the filter.
    const known = new Set();
    for (const b of all) for (const r of roomsOf(b)) known.add(r.room_id);
    const select = $('room-filter');
    const chosen = select.value;
    if (chosen) known.add(chosen);
    const wanted = ['', ...[...known].sort()];
    const have = [...select.options].map((o) => o.value);
    if (wanted.join('\u0000') !== have.join('\u0000')) {
      select.replaceChildren(...wanted.map((room) => {
        const o = el('option', null, room || 'every room');
        o.value = room;
        return o;
      }));
      select.value = chosen;
    }
    applyFilter();
  }

  function applyFilter() {
    const room = $('room-filter').value;
    for (const [id, tile] of tiles) {
      const box = boxes.get(id);
      tile.root.hidden = !!room && !(box && inRoom(box, room));
    }
  }

  function drawLink() {
    const link = $('link');
    if (!broker) return;
    link.textContent = broker.connected
      ? `broker ${broker.url}: connected`
      : `broker ${broker.url}: not connected${broker.error ? ' (' + broker.error + ')' : ''}`;
    link.classList.toggle('bad', !broker.connected);
  }

  // ---- one tile per box -------------------------------------------------------------

  function tileFor(id) {
    let tile = tiles.get(id);
    if (tile) return tile;
    const root = el('article', 'tile');
    root.dataset.device = id;
    const view = el('div', 'view');
    const reply = el('p', 'reply', '', { role: 'status' });
    root.append(view, actions(id), reply);
    tile = { root, view, reply };
    tiles.set(id, tile);
    // Keep the tiles in device id order.
    const after = [...tiles.keys()].sort().find((other) => other > id);
    const next = after && tiles.get(after).root.parentElement ? tiles.get(after).root : null;
    $('tiles').insertBefore(root, next);
    return tile;
  }

  function figure(quality, stream) {
    const q = quality || stream.quality || {};
    const parts = [];
    const kbps = q.kbps_sent ?? q.kbps_received;
    if (kbps !== undefined) parts.push(`${kbps} kbit/s`);
    if (q.estimate_kbps !== undefined) parts.push(`est. ${q.estimate_kbps}`);
    const fps = q.fps ?? q.fps_decoded;
    if (fps !== undefined) parts.push(`${Number(fps).toFixed(0)} fps`);
    if (q.loss_percent !== undefined) parts.push(`loss ${Number(q.loss_percent).toFixed(1)} %`);
    if (q.rtt_ms !== undefined) parts.push(`rtt ${Number(q.rtt_ms).toFixed(0)} ms`);
    if (q.jitter_ms !== undefined) parts.push(`jitter ${Number(q.jitter_ms).toFixed(1)} ms`);
    if (stream.stats && stream.stats.transport) parts.push(stream.stats.transport);
    return parts.join(' · ');
  }

  function errorLine(note) {
    return `error ${note.code}: ${note.message || '(no message)'}${note.what ? ' (' + note.what + ')' : ''}`;
  }

  function drawBox(box) {
    const tile = tileFor(box.device_id);
    const root = tile.root;
    root.classList.toggle('offline', box.status === 'offline');
    root.classList.toggle('failing', failing(box));
    const st = box.state || {};
    const parts = [];

    const head = el('header', 'tile-head');
    head.append(el('h2', 'device', box.device_id));
    const status = el('span', `status ${box.status}`, box.status);
    if (box.status_at_ms) status.title = `since ${new Date(box.status_at_ms).toLocaleString()}`;
    head.append(status);
    parts.push(head);
    const who = st.user && typeof st.user === 'object'
      ? `${st.user.user_name || ''} (${st.user.user_id || ''})` : null;
    const meta = [];
    if (who) meta.push(who);
    if (st.room_mode) meta.push(`${st.room_mode}-room, up to ${st.max_rooms ?? '?'}`);
    if (st.encoder) meta.push(st.encoder);
    if (st.version) meta.push(`v${st.version}`);
    if (meta.length) parts.push(el('p', 'meta', meta.join(' · ')));
    for (const s of (Array.isArray(st.sources) ? st.sources : [])) {
      const running = s.running ? 'running' : 'stopped';
      parts.push(el('p', 'meta source',
        `source ${s.channel}: ${running}${s.bitrate_kbps ? ', ' + s.bitrate_kbps + ' kbit/s' : ''}`));
    }

    // Rooms.
    const rooms = roomsOf(box);
    const roomList = el('ul', 'rooms');
    for (const r of rooms) {
      const li = el('li', 'room');
      li.dataset.room = r.room_id;
      const open = el('button', 'room-id linkish', r.room_id, { type: 'button' });
      open.title = 'open the room view';
      open.addEventListener('click', () => showRoom(r.room_id));
      li.append(open, el('span', `state ${r.state}`, r.state));
      const users = Array.isArray(r.users) ? r.users : [];
      if (users.length) {
        li.append(el('span', 'users',
          users.map((u) => u && (u.user_name || u.user_id)).filter(Boolean).join(', ')));
      }
      const err = (box.errors || {})['room:' + r.room_id];
      if (err) li.append(el('span', 'error', errorLine(err)));
      roomList.append(li);
    }
    // Rooms that failed and are not in the state any more (a refused login).
    for (const [key, err] of Object.entries(box.errors || {})) {
      if (!key.startsWith('room:')) continue;
      const room = key.slice(5);
      if (rooms.some((r) => r.room_id === room)) continue;
      const li = el('li', 'room failed');
      li.dataset.room = room;
      li.append(el('span', 'room-id', room), el('span', 'state', err.what || 'failed'),
        el('span', 'error', errorLine(err)));
      roomList.append(li);
    }
    if (!roomList.children.length) roomList.append(el('li', 'none', 'in no room'));
    parts.push(roomList);

    // Streams.
    const streams = streamsOf(box);
    if (streams.length) {
      const table = el('table', 'streams');
      const headRow = el('tr');
      for (const h of ['stream', 'room', '', 'state', 'quality']) headRow.append(el('th', null, h));
      table.append(headRow);
      for (const s of streams) {
        const row = el('tr', 'stream');
        row.dataset.stream = s.stream_id;
        row.append(el('td', 'stream-id', s.stream_id), el('td', null, s.room_id || ''),
          el('td', 'kind', s.kind === 'publish' ? '↑' : '↓', { title: s.kind }),
          el('td', `state ${s.state}`, s.state),
          el('td', 'quality', figure((box.quality || {})[s.stream_id], s)));
        table.append(row);
        const err = (box.errors || {})[s.stream_id];
        if (err) {
          const errRow = el('tr', 'stream-error');
          const cell = el('td', 'error', errorLine(err), { colspan: '5' });
          errRow.append(cell);
          table.append(errRow);
        }
      }
      parts.push(table);
    }
    // Errors of streams the state no longer lists.
    for (const [key, err] of Object.entries(box.errors || {})) {
      if (key.startsWith('room:') || streams.some((s) => s.stream_id === key)) continue;
      parts.push(el('p', 'error', `${key}: ${errorLine(err)}`));
    }
    if (box.status === 'offline') {
      parts.push(el('p', 'note', `offline ${ago(box.status_at_ms)}; the last state it sent is shown`));
    }
    tile.view.replaceChildren(...parts);
    // A new reply only: an update while a command waits keeps the "waiting" line.
    const newest = box.replies && box.replies[0];
    if (newest && newest.id !== tile.shownReply) drawReply(tile, newest);
  }

  function drawReply(tile, reply) {
    if (!reply) return;
    const r = tile.reply;
    const args = reply.args && typeof reply.args === 'object'
      ? Object.values(reply.args).filter((v) => typeof v === 'string').join(' ') : '';
    tile.shownReply = reply.id;
    r.dataset.id = reply.id || '';
    r.classList.toggle('ok', !!reply.ok);
    r.classList.toggle('bad', !reply.ok);
    r.textContent = reply.ok
      ? `✓ ${reply.op} ${args}: done`
      : `✗ ${reply.op} ${args}: ${reply.message || 'failed'} (code ${reply.code ?? '?'})`;
  }

  // ---- actions ------------------------------------------------------------------------

  function field(name, placeholder) {
    const input = el('input', null, null, { name, placeholder, autocomplete: 'off' });
    input.type = 'text';
    return input;
  }

  function actions(id) {
    const form = el('form', 'actions');
    form.addEventListener('submit', (e) => e.preventDefault());
    const room = field('room_id', 'room id, e.g. group-3');
    const stream = field('stream_id', 'stream id, e.g. box-17-main');
    const message = field('message', 'message to the room');
    const command = field('command', 'custom command, e.g. mute');
    const toUsers = field('to_users', 'to users (comma-separated; empty: everyone)');
    const button = (label, name, build) => {
      const b = el('button', null, label, { type: 'button', 'data-action': name });
      b.addEventListener('click', () => {
        const built = build();
        if (built) send(id, built[0], built[1]);
      });
      return b;
    };
    const need = (input, what) => {
      const v = input.value.trim();
      if (!v) {
        showLocal(id, false, `type ${what} first`);
        input.focus();
        return null;
      }
      return v;
    };
    const withRoom = (args) => {
      const r = room.value.trim();
      if (r) args.room_id = r;
      return args;
    };
    const rows = [
      [room,
        button('Log in', 'login', () => { const r = need(room, 'a room id'); return r && ['login_room', { room_id: r }]; }),
        button('Log out', 'logout', () => { const r = need(room, 'a room id'); return r && ['logout_room', { room_id: r }]; }),
        button('Log out of all', 'logout-all', () => ['logout_room', {}])],
      [stream,
        button('Publish', 'publish', () => { const s = need(stream, 'a stream id'); return s && ['start_publishing', withRoom({ stream_id: s })]; }),
        button('Stop publishing', 'unpublish', () => { const s = need(stream, 'a stream id'); return s && ['stop_publishing', { stream_id: s }]; }),
        button('Play', 'play', () => { const s = need(stream, 'a stream id'); return s && ['start_playing', withRoom({ stream_id: s })]; }),
        button('Stop playing', 'unplay', () => { const s = need(stream, 'a stream id'); return s && ['stop_playing', { stream_id: s }]; })],
      [message,
        button('Send to the room', 'message', () => {
          const r = need(room, 'a room id');
          const m = r && need(message, 'a message');
          return m && ['send_broadcast_message', { room_id: r, message: m }];
        })],
      [command, toUsers,
        button('Send the command', 'custom', () => {
          const r = need(room, 'a room id');
          const c = r && need(command, 'a command');
          if (!c) return null;
          const to = toUsers.value.split(',').map((u) => u.trim()).filter((u) => u);
          const args = { room_id: r, command: c };
          if (to.length) args.to_users = to;
          return ['send_custom_command', args];
        })],
    ];
    for (const row of rows) {
      const div = el('div', 'row');
      div.append(...row);
      form.append(div);
    }
    return form;
  }

  function showLocal(id, ok, text) {
    const tile = tiles.get(id);
    if (!tile) return;
    tile.reply.classList.toggle('ok', ok);
    tile.reply.classList.toggle('bad', !ok);
    tile.reply.textContent = text;
  }

  async function send(id, op, args) {
    showLocal(id, true, `… ${op} sent, waiting for the box`);
    tiles.get(id).reply.classList.remove('ok');
    let response;
    let body;
    try {
      response = await fetch('/api/command', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ device_id: id, op, args }),
      });
      body = await response.json();
    } catch (e) {
      showLocal(id, false, `✗ ${op}: the console did not answer (${e.message || e})`);
      return;
    }
    if (!response.ok) {
      showLocal(id, false, `✗ ${op}: ${body.error || response.status}`);
      return;
    }
    // The reply also comes with the box's next update (to every open console page);
    // show it now in case this page's stream is slower.
    drawReply(tiles.get(id), body);
  }

  // ---- the room view (with --janus: live previews) ------------------------------------

  function showRoom(room) {
    roomShown = room;
    location.hash = 'room=' + encodeURIComponent(room);
    drawRoom();
  }

  function closeRoom() {
    roomShown = null;
    for (const id of [...previews.keys()]) stopPreview(id);
    history.replaceState(null, '', location.pathname + location.search);
    $('room-view').hidden = true;
  }

  function drawRoom() {
    const view = $('room-view');
    if (roomShown === null) {
      view.hidden = true;
      return;
    }
    view.hidden = false;
    $('room-name').textContent = roomShown;
    const list = $('room-boxes');
    const keep = new Map();
    for (const fig of list.querySelectorAll('figure[data-stream]')) keep.set(fig.dataset.stream, fig);
    const parts = [];
    const here = [...boxes.values()].filter((b) => inRoom(b, roomShown));
    $('room-note').textContent = here.length
      ? `${here.length} box${here.length > 1 ? 'es' : ''} in this room` +
        (janusUrl ? '' : ' (start the console with --janus to see previews)')
      : 'no box is in this room';
    for (const box of here) {
      const room = roomsOf(box).find((r) => r.room_id === roomShown);
      const card = el('div', 'room-box');
      card.dataset.device = box.device_id;
      card.append(el('h3', null, box.device_id), el('span', `status ${box.status}`, box.status),
        el('span', `state ${room.state}`, room.state));
      for (const s of streamsOf(box).filter((s) => s.room_id === roomShown && s.kind === 'publish')) {
        let fig = keep.get(s.stream_id);
        if (!fig) {
          fig = el('figure', 'preview');
          fig.dataset.stream = s.stream_id;
          const video = el('video', null, null, { playsinline: '', muted: '' });
          video.muted = true;
          video.autoplay = true;
          const caption = el('figcaption', null, '');
          fig.append(video, caption);
          if (janusUrl) {
            const b = el('button', null, 'Preview', { type: 'button' });
            b.addEventListener('click', () => togglePreview(s.stream_id, roomShown, fig, b));
            fig.append(b);
          }
        }
        fig.querySelector('figcaption').textContent = `${s.stream_id}: ${s.state}`;
        card.append(fig);
      }
      parts.push(card);
    }
    list.replaceChildren(...parts);
  }

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const s = document.createElement('script');
      s.src = src;
      s.onload = resolve;
      s.onerror = () => reject(new Error(`cannot load ${src}`));
      document.head.append(s);
    });
  }

  let janusReady = null;
  function janusLibrary() {
    if (!janusReady) {
      janusReady = loadScript('/javascript/webrtc-adapter/adapter.js')
        .then(() => loadScript('/javascript/janus-gateway/janus.js'))
        .then(() => new Promise((resolve) => {
          window.Janus.init({ debug: ['error'], dependencies: window.Janus.useDefaultDependencies(), callback: resolve });
        }));
    }
    return janusReady;
  }

  // Whether this browser can receive what the boxes send (H.264). Firefox needs Cisco's
  // OpenH264 plugin for it, which it downloads on first use.
  function decodesH264() {
    const caps = window.RTCRtpReceiver && RTCRtpReceiver.getCapabilities
      ? RTCRtpReceiver.getCapabilities('video') : null;
    return !!caps && caps.codecs.some((c) => c.mimeType.toLowerCase() === 'video/h264');
  }

  function stopPreview(id) {
    const p = previews.get(id);
    if (!p) return;
    previews.delete(id);
    try { p.janus.destroy(); } catch (e) { /* already gone */ }
  }

  // Subscribes to one published stream of the room, as the room page does: string room
  // ids, the stream's feed id is its stream id.
  async function togglePreview(id, room, fig, button) {
    if (previews.has(id)) {
      stopPreview(id);
      button.textContent = 'Preview';
      return;
    }
    const caption = fig.querySelector('figcaption');
    const video = fig.querySelector('video');
    if (!decodesH264()) {
      caption.textContent = `${id}: this browser cannot decode H.264 in WebRTC, which the boxes send. ` +
        'In Firefox, enable "OpenH264 Video Codec provided by Cisco Systems" under Add-ons → Plugins ' +
        '(Firefox downloads it on first use, so it needs the internet once).';
      fig.classList.add('unsupported');
      return;
    }
    try {
      await janusLibrary();
    } catch (e) {
      caption.textContent = `${id}: ${e.message}`;
      return;
    }
    button.textContent = 'Stop preview';
    const media = new MediaStream();
    const entry = {};
    previews.set(id, entry);
    entry.janus = new window.Janus({
      server: janusUrl,
      iceServers: [],
      success: () => entry.janus.attach({
        plugin: 'janus.plugin.videoroom',
        success: (handle) => {
          entry.handle = handle;
          handle.send({ message: { request: 'join', room, ptype: 'subscriber', streams: [{ feed: id }] } });
        },
        error: (e) => { caption.textContent = `${id}: ${e}`; },
        onmessage: (msg, jsep) => {
          if (msg.error) caption.textContent = `${id}: ${msg.error}`;
          if (jsep) {
            entry.handle.createAnswer({
              jsep,
              tracks: [],
              success: (answer) => entry.handle.send({ message: { request: 'start', room }, jsep: answer }),
              error: (e) => { caption.textContent = `${id}: ${e}`; },
            });
          }
        },
        onremotetrack: (track, mid, on) => {
          if (on && !media.getTracks().includes(track)) media.addTrack(track);
          if (video.srcObject !== media) video.srcObject = media;
          video.play().catch(() => {});
        },
      }),
      error: (e) => { caption.textContent = `${id}: Janus: ${e}`; },
    });
  }

  // ---- the live stream from the console -----------------------------------------------

  function applyFleet(fleet) {
    broker = fleet.broker;
    const seen = new Set();
    for (const box of fleet.boxes) {
      boxes.set(box.device_id, box);
      seen.add(box.device_id);
      drawBox(box);
    }
    for (const id of [...boxes.keys()]) {
      if (!seen.has(id)) {
        boxes.delete(id);
        const tile = tiles.get(id);
        if (tile) tile.root.remove();
        tiles.delete(id);
      }
    }
    drawLink();
    drawSummary();
    drawRoom();
  }

  function applyUpdate(update) {
    if (update.kind === 'broker') {
      broker = update;
      drawLink();
      return;
    }
    if (update.kind === 'box') {
      boxes.set(update.device_id, update);
      drawBox(update);
      drawSummary();
      if (roomShown !== null) drawRoom();
    }
  }

  function connect() {
    const source = new EventSource('/api/live');
    source.addEventListener('fleet', (e) => applyFleet(JSON.parse(e.data)));
    source.addEventListener('update', (e) => applyUpdate(JSON.parse(e.data)));
    source.onerror = () => {
      $('link').textContent = 'the console is not reachable; retrying…';
      $('link').classList.add('bad');
    };
  }

  // What a test (or a curious person in the developer tools) can read.
  window.roomcastConsole = {
    boxes: () => Object.fromEntries(boxes),
    broker: () => broker,
  };

  $('room-filter').addEventListener('change', applyFilter);
  $('room-close').addEventListener('click', closeRoom);
  setInterval(() => { for (const b of boxes.values()) if (b.status === 'offline') drawBox(b); }, 10000);
  fetch('/api/config').then((r) => r.json()).then((c) => {
    janusUrl = c.janus || null;
    const m = /^#room=(.*)$/.exec(location.hash);
    if (m) { roomShown = decodeURIComponent(m[1]); drawRoom(); }
  }).catch(() => {});
  connect();
})();
