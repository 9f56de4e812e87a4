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

document.addEventListener("DOMContentLoaded", () => {
  startDemo(document.getElementById("demo"));
  startChannel(document.getElementById("channel"));
});
