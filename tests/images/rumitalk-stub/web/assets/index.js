// The stand-in's web app: what RumiTalk's client does, without a framework.
// - before login: GET /api/config and POST /api/auth/refresh with no
//   Authorization header of its own (the browser adds what it has cached);
// - login posts JSON to /api/auth/login (a `?ttl=N` on the page asks for a
//   token that expires after N seconds: a test-only knob of the stand-in);
// - then every /api/ call carries `Authorization: Bearer <token>`; on a 401
//   it refreshes once and retries;
// - a message starts a reply (POST /api/agents/chat/<endpoint>?resumable=true)
//   and the reply streams from GET /api/agents/chat/stream/<id>, read with
//   XMLHttpRequest progress events as the sse.js library does, each token
//   put on the page as it arrives;
// - logout.
// window.rumitalk.log lists every /api/ call it made (method, path, status).
(function () {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(window.location.search);
  const state = { token: null, endpoint: null, log: [] };
  window.rumitalk = state;

  const now = () => performance.timeOrigin + performance.now(); // Unix time in ms, fractional

  function status(text) {
    $('status').textContent = text;
    document.body.dataset.status = text.split(':')[0];
  }

  async function call(method, path, body, withToken) {
    const headers = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (withToken && state.token) headers.Authorization = 'Bearer ' + state.token;
    const entry = { method, path, bearer: Boolean(headers.Authorization), status: null };
    state.log.push(entry);
    const response = await fetch(path, {
      method, headers, credentials: 'include', body: body === undefined ? undefined : JSON.stringify(body),
    });
    entry.status = response.status;
    return response;
  }

  async function refresh() {
    const response = await call('POST', '/api/auth/refresh', undefined, false);
    if (!response.ok) return false;
    try {
      const data = JSON.parse(await response.text());
      if (data.token) {
        state.token = data.token;
        return true;
      }
    } catch (e) { /* "Refresh token not provided" */ }
    return false;
  }

  // an API call with the token; on a 401, one refresh and one retry
  async function api(method, path, body) {
    let response = await call(method, path, body, true);
    if (response.status === 401 && state.token && await refresh()) {
      response = await call(method, path, body, true);
    }
    return response;
  }

  function show(view) {
    $('login-form').hidden = view !== 'login';
    $('chat').hidden = view !== 'chat';
    $('logout').hidden = view !== 'chat';
  }

  function showLogin(note) {
    state.token = null;
    show('login');
    status(note || 'logged out');
    $('email').focus();
  }

  async function enter() {
    show('chat');
    status('loading');
    const user = await api('GET', '/api/user');
    if (!user.ok) return showLogin('session ended');
    $('user').textContent = (await user.json()).email;
    const endpoints = await api('GET', '/api/endpoints');
    const names = endpoints.ok ? Object.keys(await endpoints.json()) : [];
    state.endpoint = names[0] || null;
    $('endpoint').textContent = state.endpoint || 'no endpoint';
    status(state.endpoint ? 'ready' : 'no AI provider configured');
    $('message').focus();
  }

  function bubble(kind, text) {
    const div = document.createElement('div');
    div.className = 'message ' + kind;
    div.textContent = text || '';
    $('messages').appendChild(div);
    return div;
  }

  // server-sent events over XMLHttpRequest, as sse.js reads them: each
  // progress event hands over what arrived, complete events are dispatched.
  // Resolves with the HTTP status, or 0 when the connection failed; `last`
  // is the id of the last event seen, to resume after it
  function stream(id, onEvent, last) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      let seen = 0;
      let buffer = '';
      const take = () => {
        const text = xhr.responseText || '';
        buffer += text.slice(seen);
        seen = text.length;
        let end;
        while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, '');
          let name = 'message';
          let eventId = null;
          const data = [];
          for (const line of block.split(/\r?\n/)) {
            if (line.startsWith('event:')) name = line.slice(6).trim();
            else if (line.startsWith('id:')) eventId = line.slice(3).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
          }
          if (eventId !== null) state.lastEventId = eventId;
          if (data.length) onEvent(name, JSON.parse(data.join('\n')));
        }
      };
      const path = '/api/agents/chat/stream/' + encodeURIComponent(id) + (last != null ? '?resume=true' : '');
      const entry = { method: 'GET', path, bearer: true, status: null };
      state.log.push(entry);
      xhr.open('GET', path);
      xhr.setRequestHeader('Authorization', 'Bearer ' + state.token);
      xhr.setRequestHeader('Accept', 'text/event-stream');
      if (last != null) xhr.setRequestHeader('Last-Event-ID', last);
      xhr.addEventListener('readystatechange', () => { if (xhr.readyState >= 2) entry.status = xhr.status; });
      xhr.addEventListener('progress', take);
      xhr.addEventListener('load', () => { take(); resolve(xhr.status); });
      xhr.addEventListener('error', () => { entry.status = 0; resolve(0); });
      xhr.send();
    });
  }

  // a reply's stream: once more after a 401 (with a refreshed token), and
  // resumed after the last event seen when the connection breaks, as
  // RumiTalk's client resumes (?resume=true)
  async function follow(id, onEvent) {
    state.lastEventId = null;
    let code = await stream(id, onEvent, null);
    if (code === 401 && await refresh()) code = await stream(id, onEvent, null);
    for (let tries = 0; code === 0 && tries < 3; tries++) {
      code = await stream(id, onEvent, state.lastEventId === null ? '-1' : state.lastEventId);
    }
    return code;
  }

  async function send(text) {
    bubble('user', text);
    const previous = $('reply');
    if (previous) previous.removeAttribute('id');
    const reply = bubble('assistant');
    reply.id = 'reply';
    status('sending');
    const started = await api('POST', '/api/agents/chat/' + encodeURIComponent(state.endpoint) + '?resumable=true',
      { text });
    if (!started.ok) {
      const failure = await started.text();
      reply.className = 'message error';
      reply.textContent = 'Error ' + started.status + ': ' + failure;
      return status('error: ' + started.status);
    }
    const { streamId } = await started.json();
    reply.dataset.streamId = streamId;
    status('streaming');
    const onEvent = (name, data) => {
      if (name === 'error' || data.error) {
        reply.className = 'message error';
        reply.textContent = data.message || 'error';
        status('error: ' + (data.message || 'the reply failed'));
      } else if (data.final) {
        reply.dataset.final = 'true';
        if (!reply.textContent) reply.textContent = data.text;
        status('reply complete');
      } else if (typeof data.text === 'string') {
        const span = document.createElement('span');
        span.className = 'token';
        span.textContent = data.text;
        span.dataset.arrived = String(now());
        span.dataset.sent = String(data.sent);
        if (data.provider_sent != null) span.dataset.providerSent = String(data.provider_sent);
        reply.appendChild(span);
      }
    };
    const code = await follow(streamId, onEvent);
    if (code !== 200) {
      reply.className = 'message error';
      reply.textContent = 'Error ' + code + ' while streaming';
      status('error: ' + code);
    }
  }

  $('login-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = { email: $('email').value, password: $('password').value };
    if (params.get('ttl')) body.ttl = Number(params.get('ttl'));
    $('login-error').textContent = '';
    const response = await call('POST', '/api/auth/login', body, false);
    if (!response.ok) {
      let message = 'Login failed (' + response.status + ')';
      try { message = (await response.json()).message || message; } catch (e) { /* not JSON */ }
      $('login-error').textContent = message;
      return status('login failed');
    }
    state.token = (await response.json()).token;
    await enter();
  });

  $('chat-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const text = $('message').value.trim();
    if (!text || !state.endpoint) return;
    $('message').value = '';
    try {
      await send(text);
    } catch (error) {
      status('error: ' + error.message);
    }
  });

  $('logout').addEventListener('click', async () => {
    await api('POST', '/api/auth/logout');
    showLogin('logged out');
  });

  async function boot() {
    status('loading');
    try {
      await call('GET', '/api/config', undefined, false);
      if (await refresh()) return await enter();
    } catch (error) {
      return showLogin('error: ' + error.message);
    }
    showLogin('logged out');
  }

  boot();
}());
