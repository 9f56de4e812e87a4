// Shows the demo counter, a channel and (with SSE_DEMO_LOGIN) a private channel as they
// arrive, with the connection's state.
//
// One stream carries all of it: GET /channels/events with the channels shown and
// `demo=true`, which adds the demo counter (events typed `demo`, then `demo:end`). It goes
// through sse-client.js: the tabs of this page share that one connection (one tab holds
// it, the others hear it from that tab), a dropped stream resumes after the last id shown,
// a refused one is tried again later, and an expired token is renewed first. Joining
// another channel or signing in changes what the stream carries: the page opens a new
// one, live from then on. Add `?share=off` to the page's address to give each tab its
// own connection (as on a browser without the APIs the sharing needs).
import { subscribe } from "./sse-client.js";

const SHARE = new URLSearchParams(location.search).get("share") !== "off";

function setState(element, state) {
  if (element.dataset.state === state) return; // the role changed, not the state
  element.dataset.state = state;
  element.textContent = state;
}

function show(list, text, kind, id) {
  const item = document.createElement("li");
  item.textContent = text; // text, never HTML: a message cannot inject markup
  item.className = kind;
  if (id) item.dataset.id = id;
  list.appendChild(item);
}

// The demo's position is the last part of the stream's cursor: `0-<number in base 36>`.
function demoNumber(id) {
  return parseInt(id.slice(id.lastIndexOf("-") + 1), 36);
}

function startPage(demoPanel, channelPanel, privatePanel) {
  const panels = [demoPanel, channelPanel, privatePanel].filter(Boolean);
  const demo = demoPanel.querySelector("#messages");
  const received = demoPanel.querySelector("#demo-received");
  const demoState = demoPanel.querySelector("#demo-state");
  const channelList = channelPanel.querySelector("#channel-messages");
  const channelState = channelPanel.querySelector("#channel-state");
  const nameInput = channelPanel.querySelector("#channel-name");
  let channel = nameInput.value;
  let demoDone = false;
  let subscription = null;
  // Set by the private panel once signed in.
  const signedIn = { channel: "", list: null, state: null, renew: null };

  // Every event the stream may carry, by type: a channel's messages are typed by its name.
  function handlers() {
    const on = {};
    const add = (type, handler) => {
      const before = on[type];
      on[type] = before ? (event) => (before(event), handler(event)) : handler;
    };
    add("demo", (event) => {
      // A new stream (after Join or Sign in) starts the demo over: show each number once.
      const number = demoNumber(event.id);
      if (number <= demo.children.length) return;
      show(demo, event.data, "message", String(number));
      received.textContent = String(demo.children.length);
    });
    add("demo:end", () => {
      demoDone = true; // nothing more comes for the demo; the channels go on
      setState(demoState, "done");
    });
    add(channel, (event) => show(channelList, event.data, "message", event.id));
    if (signedIn.channel) {
      add(signedIn.channel, (event) => show(signedIn.list, event.data, "message", event.id));
      add("token-expired", () => {
        setState(signedIn.state, "renewing");
        show(signedIn.list, "Token expired: signing in again, then resuming", "notice");
      });
    }
    // A resume from an id too old for a channel's history: shown, not hidden.
    add("reset", (event) => {
      const list = signedIn.channel && event.data.startsWith(`${signedIn.channel}: `)
        ? signedIn.list
        : channelList;
      show(list, `Some messages were missed: ${event.data}`, "reset", event.id);
    });
    return on;
  }

  function connect() {
    subscription?.close();
    const channels = [...new Set([channel, signedIn.channel].filter(Boolean))];
    const query = channels.map((name) => `channel=${encodeURIComponent(name)}`).join("&");
    subscription = subscribe(`/channels/events?${query}&demo=true`, handlers(), {
      share: SHARE,
      // Only a private channel's token expires; sse-client.js then calls this and resumes.
      renew: signedIn.renew,
      onState(state, role) {
        // "failed": refused (a proxy's 502 while the app restarts, a full worker's 503);
        // sse-client.js tries again later.
        if (!demoDone) setState(demoState, state);
        setState(channelState, state);
        if (signedIn.state) setState(signedIn.state, state);
        // data-role says which tab holds the connection (leader, follower, solo).
        for (const panel of panels) panel.dataset.role = role;
      },
    });
  }

  channelPanel.querySelector("#channel-form").addEventListener("submit", (event) => {
    event.preventDefault();
    channel = nameInput.value;
    channelPanel.querySelector("#channel-label").textContent = channel;
    channelList.replaceChildren();
    connect();
  });
  startPublishing(channelPanel, () => channel);
  if (privatePanel) startPrivate(privatePanel, signedIn, connect);
  connect();
}

// The channel panel's form: publish to the channel shown, from any tab or worker.
function startPublishing(panel, currentChannel) {
  const status = panel.querySelector("#publish-status");
  panel.querySelector("#publish-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const headers = { "Content-Type": "application/json" };
    if (form.token.value) headers.Authorization = `Bearer ${form.token.value}`;
    try {
      const response = await fetch(`/channels/${encodeURIComponent(currentChannel())}/messages`, {
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
}

// The private panel (only with SSE_DEMO_LOGIN): the channel user.<name>, readable only
// with that name's token. The token is an HttpOnly cookie the page never sees; the
// browser sends it with every stream request. When it expires the server ends the
// stream with a `token-expired` event: sse-client.js calls `renew`, which signs in
// again (a real app would refresh its session instead), and resumes after the last id
// it has, so nothing is missed and nothing shown twice, on any channel of the stream.
function startPrivate(panel, signedIn, connect) {
  const status = panel.querySelector("#private-status");
  const loginForm = panel.querySelector("#login-form");

  async function signIn(name) {
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

  loginForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = loginForm.name.value;
    status.textContent = "";
    let body;
    try {
      body = await signIn(name);
    } catch (error) {
      status.textContent = String(error.message || error);
      return;
    }
    signedIn.channel = body.channel;
    signedIn.list = panel.querySelector("#private-messages");
    signedIn.state = panel.querySelector("#private-state");
    signedIn.renew = async () => {
      try {
        await signIn(name);
        status.textContent = "";
      } catch (error) {
        status.textContent = String(error.message || error);
        throw error; // sse-client.js reports it, and the refused stream is retried later
      }
    };
    signedIn.list.replaceChildren();
    panel.querySelector("#private-label").textContent = body.channel;
    connect();
  });

  panel.querySelector("#private-publish-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    if (!signedIn.channel) {
      status.textContent = "Sign in first";
      return;
    }
    const response = await fetch(`/channels/${encodeURIComponent(signedIn.channel)}/messages`, {
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
  startPage(
    document.getElementById("demo"),
    document.getElementById("channel"),
    document.getElementById("private"),
  );
});
