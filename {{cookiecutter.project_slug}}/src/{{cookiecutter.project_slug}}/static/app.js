// Shows the demo stream and a channel as they arrive, with each connection's state.
//
// Both panels subscribe through sse-client.js: the tabs of this page share one connection
// per stream (one tab holds it, the others hear it from that tab), a dropped stream resumes
// after the last id shown, and a refused one is tried again later. Add `?share=off` to the
// page's address to give each tab its own connections (as on a browser without the APIs
// the sharing needs).
import { subscribe } from "./sse-client.js";

const SHARE = new URLSearchParams(location.search).get("share") !== "off";

function setState(element, state) {
  if (element.dataset.state === state) return; // the role changed, not the state
  element.dataset.state = state;
  element.textContent = state;
}

// The badge shows the stream's state; data-role says which tab holds the connection.
function showState(panel, element, state, role) {
  setState(element, state);
  panel.dataset.role = role;
}

function startDemo(panel) {
  const list = panel.querySelector("#messages");
  const received = panel.querySelector("#demo-received");
  const state = panel.querySelector("#demo-state");
  const count = Number(panel.dataset.count);
  const subscription = subscribe(
    panel.dataset.url,
    {
      message(event) {
        // Never show a message twice or out of place, whatever a server sends.
        if (event.id && Number(event.id) <= list.children.length) return;
        const item = document.createElement("li");
        item.textContent = event.data; // text, never HTML: a message cannot inject markup
        item.dataset.id = event.id;
        list.appendChild(item);
        received.textContent = String(list.children.length);
      },
    },
    {
      share: SHARE,
      onState(current, role) {
        if (current === "closed") {
          // After the `end` event: nothing more comes.
          showState(panel, state, "done", role);
        } else if (current === "failed" && list.children.length >= count) {
          // A reconnect after the last message was answered with 204: nothing more comes.
          subscription.close();
          showState(panel, state, "done", role);
        } else {
          // "failed" with messages missing: refused (a proxy's 502 while the app
          // restarts, a full worker's 503); sse-client.js tries again later.
          showState(panel, state, current, role);
        }
      },
    },
  );
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
  let subscription = null;
  let channel = nameInput.value;

  function show(text, kind, id) {
    const item = document.createElement("li");
    item.textContent = text; // text, never HTML
    item.className = kind;
    item.dataset.id = id;
    list.appendChild(item);
  }

  function connect() {
    subscription?.close();
    subscription = subscribe(
      `/channels/${encodeURIComponent(channel)}/events`,
      {
        message: (event) => show(event.data, "message", event.id),
        reset: (event) => show(`Some messages were missed: ${event.data}`, "reset", event.id),
      },
      { share: SHARE, onState: (current, role) => showState(panel, state, current, role) },
    );
  }

  panel.querySelector("#channel-form").addEventListener("submit", (event) => {
    event.preventDefault();
    channel = nameInput.value;
    label.textContent = channel;
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
