// Shows the demo stream as it arrives, with the connection's state.
//
// EventSource reconnects by itself after a dropped connection and sends the id of the
// last message it got as Last-Event-ID, so the server resumes with the next one. The
// page only has to stop it once the stream is over: on the `end` event, or when a
// reconnect is answered with 204 (EventSource then closes itself).
"use strict";

function setState(element, state) {
  element.dataset.state = state;
  element.textContent = state;
}

// Refused connections in a row; the page's own retries back off with it.
let demoRefusals = 0;

function startDemo(panel) {
  const list = panel.querySelector("#messages");
  const received = panel.querySelector("#demo-received");
  const state = panel.querySelector("#demo-state");
  // A new EventSource (the page's own retry, see onerror) cannot send Last-Event-ID:
  // the query parameter carries the last id shown, so the stream resumes after it.
  const lastId = list.lastElementChild ? list.lastElementChild.dataset.id : "";
  const url = lastId ? `${panel.dataset.url}?last_event_id=${encodeURIComponent(lastId)}` : panel.dataset.url;
  const source = new EventSource(url);
  let done = false;

  source.onopen = () => {
    demoRefusals = 0;
    setState(state, "open");
  };
  source.onmessage = (event) => {
    // Never show a message twice, whatever a server sends.
    if (event.lastEventId && Number(event.lastEventId) <= list.children.length) return;
    const item = document.createElement("li");
    item.textContent = event.data; // text, never HTML: a message cannot inject markup
    item.dataset.id = event.lastEventId;
    list.appendChild(item);
    received.textContent = String(list.children.length);
  };
  source.addEventListener("end", () => {
    done = true;
    source.close();
    setState(state, "done");
  });
  source.onerror = () => {
    if (done) return;
    if (source.readyState !== EventSource.CLOSED) {
      setState(state, "reconnecting");
    } else if (list.children.length >= Number(panel.dataset.count)) {
      // A reconnect after the last message was answered with 204: nothing more comes.
      done = true;
      setState(state, "done");
    } else {
      // EventSource gives up for good on any answer but 200 or 204, e.g. a proxy's 502
      // while the app restarts or a full worker's 503. Messages are missing: say so
      // rather than "done", and try again later, backing off with jitter (2-4 s, 4-8 s,
      // ... up to 1-2 min) so that refused tabs do not come back all at once.
      setState(state, "failed");
      const delay = Math.min(60000, 2000 * 2 ** demoRefusals) * (1 + Math.random());
      demoRefusals += 1;
      setTimeout(() => startDemo(panel), delay);
    }
  };
}

// The channel panel: every message published to the channel, from any tab or worker.
// A reconnect resumes after the last id; if that id is too old for the channel's
// history the server sends a `reset` event instead, which is shown, not hidden.
function startChannel(panel) {
  const list = panel.querySelector("#channel-messages");
  const state = panel.querySelector("#channel-state");
  const label = panel.querySelector("#channel-label");
  const nameInput = panel.querySelector("#channel-name");
  const status = panel.querySelector("#publish-status");
  let source = null;
  let channel = nameInput.value;
  let lastId = "";
  let retryTimer = 0;

  function show(text, kind, id) {
    const item = document.createElement("li");
    item.textContent = text; // text, never HTML
    item.className = kind;
    item.dataset.id = id;
    list.appendChild(item);
  }

  function connect() {
    if (source) source.close();
    clearTimeout(retryTimer);
    let url = `/channels/${encodeURIComponent(channel)}/events`;
    // A new EventSource cannot send Last-Event-ID itself; the query parameter carries it.
    if (lastId) url += `?last_event_id=${encodeURIComponent(lastId)}`;
    source = new EventSource(url);
    source.onopen = () => setState(state, "open");
    source.onmessage = (event) => {
      lastId = event.lastEventId;
      show(event.data, "message", event.lastEventId);
    };
    source.addEventListener("reset", (event) => {
      lastId = event.lastEventId;
      show(`Some messages were missed: ${event.data}`, "reset", event.lastEventId);
    });
    source.onerror = () => {
      setState(state, "reconnecting");
      if (source.readyState === EventSource.CLOSED) {
        // Refused (503 while the broker is away, a proxy's 502): EventSource gives up,
        // so the page tries again itself, after a random 2-4 s so tabs do not stampede.
        retryTimer = setTimeout(connect, 2000 + Math.random() * 2000);
      }
    };
  }

  panel.querySelector("#channel-form").addEventListener("submit", (event) => {
    event.preventDefault();
    channel = nameInput.value;
    label.textContent = channel;
    lastId = "";
    list.replaceChildren();
    connect();
  });

  panel.querySelector("#publish-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const headers = { "Content-Type": "application/json" };
    if (form.token.value) headers.Authorization = `Bearer ${form.token.value}`;
    try {
      const response = await fetch(`/channels/${encodeURIComponent(channel)}/messages`, {
        method: "POST",
        headers,
        body: JSON.stringify({ data: form.data.value }),
      });
      const body = await response.json().catch(() => ({}));
      if (response.ok) {
        status.textContent = `Published as ${body.id}`;
        form.data.value = "";
      } else {
        const detail = typeof body.detail === "string" ? body.detail : response.statusText;
        status.textContent = `Not published (${response.status}): ${detail}`;
      }
    } catch (error) {
      status.textContent = `Not published: ${error}`;
    }
  });

  label.textContent = channel;
  connect();
}

// The private panel (only with SSE_DEMO_LOGIN): the channel user.<name>, readable only
// with that name's token. The token is an HttpOnly cookie the page never sees; the
// browser sends it with every stream request. When it expires the server ends the
// stream with a `token-expired` event: the page signs in again (a real app would
// refresh its session instead) and resumes after the last id it has, so nothing is
// missed and nothing shown twice.
function startPrivate(panel) {
  const list = panel.querySelector("#private-messages");
  const state = panel.querySelector("#private-state");
  const label = panel.querySelector("#private-label");
  const status = panel.querySelector("#private-status");
  const loginForm = panel.querySelector("#login-form");
  let source = null;
  let name = "";
  let channel = "";
  let lastId = "";
  let retryTimer = 0;

  function show(text, kind, id) {
    const item = document.createElement("li");
    item.textContent = text; // text, never HTML
    item.className = kind;
    if (id) item.dataset.id = id;
    list.appendChild(item);
  }

  async function signIn() {
    const response = await fetch("/demo/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const detail = typeof body.detail === "string" ? body.detail : response.statusText;
      throw new Error(`sign-in refused (${response.status}): ${detail}`);
    }
    return body;
  }

  // Sign in (again), then open the stream, resuming after lastId; on failure, retry later.
  async function renewAndConnect() {
    if (source) source.close();
    clearTimeout(retryTimer);
    try {
      const body = await signIn();
      channel = body.channel;
      label.textContent = channel;
    } catch (error) {
      setState(state, "failed");
      status.textContent = String(error.message || error);
      retryTimer = setTimeout(renewAndConnect, 2000 + Math.random() * 2000);
      return;
    }
    let url = `/channels/${encodeURIComponent(channel)}/events`;
    if (lastId) url += `?last_event_id=${encodeURIComponent(lastId)}`;
    source = new EventSource(url);
    source.onopen = () => setState(state, "open");
    source.onmessage = (event) => {
      lastId = event.lastEventId;
      show(event.data, "message", event.lastEventId);
    };
    source.addEventListener("reset", (event) => {
      lastId = event.lastEventId;
      show(`Some messages were missed: ${event.data}`, "reset", event.lastEventId);
    });
    source.addEventListener("token-expired", () => {
      source.close();
      setState(state, "renewing");
      show("Token expired: signing in again, then resuming", "notice", "");
      renewAndConnect();
    });
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) {
        setState(state, "reconnecting");
        return;
      }
      // Refused: a 401 (the cookie is gone or expired) or 403 reads here as an error
      // like any other; signing in again answers the first, and backs off for the rest.
      setState(state, "failed");
      retryTimer = setTimeout(renewAndConnect, 2000 + Math.random() * 2000);
    };
  }

  loginForm.addEventListener("submit", (event) => {
    event.preventDefault();
    name = loginForm.name.value;
    lastId = "";
    list.replaceChildren();
    status.textContent = "";
    renewAndConnect();
  });

  panel.querySelector("#private-publish-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    if (!channel) {
      status.textContent = "Sign in first";
      return;
    }
    const response = await fetch(`/channels/${encodeURIComponent(channel)}/messages`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ data: form.data.value }),
    }).catch((error) => error);
    if (response instanceof Response && response.ok) {
      form.data.value = "";
      status.textContent = "";
    } else {
      const why = response instanceof Response ? response.status : response;
      status.textContent = `Not published: ${why}`;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  startDemo(document.getElementById("demo"));
  startChannel(document.getElementById("channel"));
  const privatePanel = document.getElementById("private");
  if (privatePanel) startPrivate(privatePanel);
});
