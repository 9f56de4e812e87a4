// sse-client.js: Server-Sent Events for pages, one connection per stream per browser.
//
//   import { subscribe } from "/static/sse-client.js";
//
//   const subscription = subscribe("/channels/lobby/events", {
//     message: (event) => show(event.data),       // event: { type, id, data }
//     reset: (event) => warn(event.data),         // any event name the server sends
//   }, {
//     onState: (state, role) => badge(state),    // see STATES
//     renew: async () => { await fetch("/token", { method: "POST" }); },
//   });
//   subscription.close();
//
// Why: a browser opens at most six HTTP/1.1 connections per origin, and every open
// EventSource holds one, so the seventh tab of a page waits for ever. Here the tabs of one
// origin that subscribe to the same URL share ONE connection: one tab holds it (the
// leader, elected with the Web Locks API) and sends every event to the others over a
// BroadcastChannel. When the leader tab closes (its lock is released) or freezes (it stops
// answering pings; its lock is stolen), another tab opens the stream again and resumes
// from the last id it has seen, so no event is lost. Every tab drops an event it already
// has, so none is shown twice. A tab that joins gets the events the stream has delivered
// so far (the last `keep` of them) before the live ones, so every tab shows the same.
// Without those APIs (older browsers; Web Locks needs a secure context: HTTPS or
// localhost) or with `share: false`, each tab opens its own connection.
//
// Resuming: EventSource reconnects by itself and sends Last-Event-ID. A new EventSource
// cannot send that header, so the module passes the last id as `?last_event_id=` when it
// opens one (after a refused reconnect, a token renewal, or in a new leader tab).
//
// Events the module acts on, after handing them to the handlers:
//   end            the stream is over: close, state "closed", no reconnect.
//   token-expired  close, await options.renew(), open again where it stopped (at the URL
//                  renew() returns, if it returns one); without `renew`, close for good.
// A refused connection (state "failed") is tried again later; with `renew`, renew() is
// awaited first: EventSource does not tell a 401 (a token that expired while the stream
// was down, a cookie the browser dropped) from any other refusal, so every one renews.
// With sharing, the tab that holds the connection renews; the others hear the events.

/** The states `onState` reports. */
export const STATES = Object.freeze({
  connecting: "connecting", // not open yet (or waiting for the tab that holds the stream)
  open: "open", // events flow
  reconnecting: "reconnecting", // dropped; EventSource or a new leader tab is resuming
  failed: "failed", // refused (e.g. a 502, 503, 401, or 204); retried with backoff
  closed: "closed", // over for good: `end`, close(), or no way to renew a token
});

const ALWAYS_HEARD = ["message", "end", "reset", "token-expired"];
const DEFAULTS = {
  share: true, // share one connection between the tabs of this origin
  keep: 256, // events kept for dedupe and for tabs that join
  takeoverMs: 3000, // how long a silent leader tab is given before another takes over
  withCredentials: false, // EventSource's own option, for a stream on another origin
  lastEventId: "", // where the first connection resumes
  // async () => void | string: get a fresh token before resuming after token-expired or
  // a refusal; a string returned is the URL to resume from (a token in the query string).
  renew: null,
};
const LOCK_PREFIX = "sse-client:";
const END_GRACE_MS = 500;

// One Stream per URL in this tab, shared by every subscribe() of that URL.
const streams = new Map();

/**
 * Subscribe to the event stream at `url`.
 *
 * `handlers` maps event names to functions called with `{ type, id, data }`; `message` is
 * the unnamed event. `options.onState(state, role)` hears every change of state (STATES)
 * and role ("leader" holds the connection, "follower" hears it from the leader, "solo"
 * holds its own, "waiting" not yet either). The other options (DEFAULTS) belong to the
 * connection: the first subscription to a URL in a tab sets them.
 *
 * Returns `{ close(), state, role, lastEventId }`.
 */
export function subscribe(url, handlers = {}, options = {}) {
  const href = new URL(url, location.href).href;
  const settings = { ...DEFAULTS, ...options };
  const shared = settings.share && canShare();
  const key = `${shared ? "shared" : "solo"} ${href}`;
  let stream = streams.get(key);
  if (!stream) {
    stream = new Stream(href, settings, shared, () => streams.delete(key));
    streams.set(key, stream);
  }
  return stream.add(handlers, options.onState);
}

/** Whether this browser can share a connection between tabs. */
export function canShare() {
  return typeof BroadcastChannel === "function" && Boolean(globalThis.navigator?.locks);
}

class Stream {
  constructor(url, settings, shared, forget) {
    this.url = url; // who the stream is: the key, the lock's and the BroadcastChannel's name
    this.target = url; // where it is read from: another URL after a renewal may return one
    this.settings = settings;
    this.forget = forget;
    this.subscribers = new Set();
    this.names = new Set(ALWAYS_HEARD);
    this.lastEventId = settings.lastEventId || "";
    this.log = []; // the last `keep` events, oldest first
    this.seen = new Set(); // dedupe keys of the events in `log`
    this.state = STATES.connecting;
    this.role = shared ? "waiting" : "solo";
    this.source = null;
    this.refusals = 0;
    this.retryTimer = 0;
    this.closed = false;
    this.tab = crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2);
    this.onEvent = (event) => this.receive({ type: event.type, id: event.lastEventId, data: event.data });
    if (shared) {
      this.startSharing();
    } else {
      queueMicrotask(() => this.connect());
    }
  }

  add(handlers, onState) {
    const subscriber = { handlers, onState };
    this.subscribers.add(subscriber);
    for (const name of Object.keys(handlers)) this.hear(name);
    if (this.role === "waiting" || this.role === "follower") this.hello();
    // A second subscription in this tab gets what the first already has, as a tab would.
    const earlier = this.log.map(({ event }) => event);
    queueMicrotask(() => {
      onState?.(this.state, this.role);
      for (const event of earlier) call(handlers, event);
    });
    const stream = this;
    return {
      close() {
        if (stream.subscribers.delete(subscriber) && stream.subscribers.size === 0) stream.shutdown();
      },
      get state() { return stream.state; },
      get role() { return stream.role; },
      get lastEventId() { return stream.lastEventId; },
    };
  }

  // --- events -----------------------------------------------------------------------

  hear(name) {
    if (this.names.has(name)) return;
    this.names.add(name);
    this.source?.addEventListener(name, this.onEvent);
  }

  // An event from the network (leader, solo) or from the leader tab (follower).
  receive(event) {
    if (this.closed || !this.remember(event)) return;
    if (this.role === "leader") this.post({ kind: "event", event });
    for (const { handlers } of [...this.subscribers]) call(handlers, event);
    if (event.type === "end") {
      this.shutdown({ ended: true });
    } else if (event.type === "token-expired" && this.source) {
      this.expired();
    }
  }

  // Keeps the event for dedupe and for tabs that join; false if it is a duplicate. An
  // event's lastEventId carries over from the last event that had an id, so the key also
  // holds its name and data: a replayed event matches, an `end` after message 5 does not.
  remember(event) {
    const key = event.id ? `${event.id}\n${event.type}\n${event.data}` : null;
    if (key !== null) {
      if (this.seen.has(key)) return false;
      this.seen.add(key);
      this.lastEventId = event.id;
    }
    this.log.push({ key, event });
    while (this.log.length > this.settings.keep) {
      const { key: old } = this.log.shift();
      if (old !== null) this.seen.delete(old);
    }
    return true;
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    // Followers learn the end from the `end` event; "closed" here only means this tab left.
    if (this.role === "leader" && state !== STATES.closed) this.post({ kind: "state", state });
    this.announce();
  }

  setRole(role) {
    this.role = role;
    this.announce();
  }

  announce() {
    for (const { onState } of [...this.subscribers]) onState?.(this.state, this.role);
  }

  // --- the connection (leader and solo tabs) -------------------------------------------

  connect() {
    if (this.closed) return;
    clearTimeout(this.retryTimer);
    this.source?.close();
    let url = this.target;
    if (this.lastEventId) {
      url += `${url.includes("?") ? "&" : "?"}last_event_id=${encodeURIComponent(this.lastEventId)}`;
    }
    const source = new EventSource(url, { withCredentials: this.settings.withCredentials });
    this.source = source;
    for (const name of this.names) source.addEventListener(name, this.onEvent);
    source.onopen = () => {
      this.refusals = 0;
      this.setState(STATES.open);
    };
    source.onerror = () => {
      if (source !== this.source) return;
      if (source.readyState === EventSource.CONNECTING) {
        this.setState(STATES.reconnecting);
        return;
      }
      // EventSource gives up for good on any answer but a 200 stream: a proxy's 502
      // while the app restarts, a full worker's 503, or a 204 ("nothing more"; a handler
      // that knows the stream is over calls close()). Try again later, backing off with
      // jitter (2-4 s, 4-8 s, ... up to 1-2 min) so that refused tabs do not come back
      // all at once.
      this.disconnect();
      this.setState(STATES.failed);
      const delay = Math.min(60000, 2000 * 2 ** this.refusals) * (1 + Math.random());
      this.refusals += 1;
      const retry = () => (this.settings.renew ? this.renewThenConnect() : this.connect());
      if (!this.closed && this.source === null) this.retryTimer = setTimeout(retry, delay);
    };
  }

  disconnect() {
    clearTimeout(this.retryTimer);
    this.source?.close();
    this.source = null;
  }

  // The server said the stream's token expired: it will not take this one again.
  expired() {
    this.disconnect();
    if (!this.settings.renew) {
      this.shutdown();
      return;
    }
    this.setState(STATES.reconnecting);
    this.renewThenConnect();
  }

  // A fresh token first (options.renew), then the stream again from the last id.
  async renewThenConnect() {
    try {
      const next = await this.settings.renew();
      if (typeof next === "string") this.target = new URL(next, location.href).href;
    } catch (error) {
      reportError(error);
    }
    if (!this.closed && (this.role === "leader" || this.role === "solo")) this.connect();
  }

  shutdown({ ended = false } = {}) {
    if (this.closed) return;
    // The next tab in the lock's queue takes over; until it says so, the others wait.
    if (this.role === "leader") this.post({ kind: "bye" });
    this.disconnect();
    this.setState(STATES.closed);
    this.closed = true;
    this.forget();
    clearInterval(this.watchTimer);
    this.election?.abort();
    // After `end`, hold the lock a moment: the other tabs hear the end and leave the
    // lock's queue, instead of one of them taking over a stream that is over.
    if (ended && this.releaseLock) setTimeout(this.releaseLock, END_GRACE_MS);
    else this.releaseLock?.();
    this.channel?.close();
  }

  // --- sharing between tabs --------------------------------------------------------------

  startSharing() {
    this.channel = new BroadcastChannel(LOCK_PREFIX + this.url);
    this.channel.onmessage = ({ data }) => this.hearTab(data);
    this.joining = []; // live events held back until the leader's replay has arrived
    this.awaitingReplay = true;
    this.ping = null; // when this follower's unanswered ping was sent
    this.elect(false);
    // A follower checks that the leader still answers. Pings and pongs are messages, not
    // timers, so a background leader answers at once even while its timers are throttled.
    this.stealing = false;
    this.watchTimer = setInterval(() => this.watch(), this.settings.takeoverMs / 4);
  }

  post(message) {
    if (!this.closed) this.channel?.postMessage({ ...message, from: this.tab });
  }

  // Queue for the lock; the tab holds the stream while its callback's promise pends.
  elect(steal) {
    this.election?.abort();
    const election = new AbortController();
    this.election = election;
    const options = steal ? { steal: true } : { signal: election.signal };
    navigator.locks
      .request(LOCK_PREFIX + this.url, options, () => this.lead())
      .catch(() => {
        // Aborted (closed, or re-queued to steal), or stolen from this tab because it
        // stopped answering (it was frozen): another tab holds the stream now.
        if (this.election !== election) return;
        if (this.role === "leader") {
          this.releaseLock?.();
          this.disconnect();
          // Also after the end: a hung tab may read its whole stream before it hears this.
          if (this.closed) this.setRole("follower");
          else this.follow();
        }
        if (!this.closed) this.elect(false);
      });
  }

  lead() {
    if (this.closed) return undefined;
    this.setRole("leader");
    // Events the old leader sent before it went: show them now, in order.
    this.flushJoining();
    this.post({ kind: "leader", state: this.state });
    this.connect();
    return new Promise((resolve) => {
      this.releaseLock = resolve;
    });
  }

  follow() {
    this.setRole("follower");
    this.hello();
  }

  // Ask the leader for the events after ours, and hold its live ones back until they came.
  hello() {
    this.awaitingReplay = true;
    this.post({ kind: "hello", lastEventId: this.lastEventId, names: [...this.names] });
  }

  hearTab(message) {
    if (this.closed) return;
    const { kind } = message;
    if (this.role === "leader") {
      if (kind === "hello") {
        for (const name of message.names) this.hear(name);
        const events = this.after(message.lastEventId);
        this.post({ kind: "replay", to: message.from, events, state: this.state });
      } else if (kind === "ping") {
        this.post({ kind: "pong", to: message.from });
      }
      return;
    }
    if (kind === "hello" || kind === "ping" || (message.to && message.to !== this.tab)) return;
    this.ping = null; // the leader answers: it is alive
    if (kind === "leader") {
      // A new leader resumes from its own last id: ask it for what it has beyond ours.
      if (this.role !== "follower") this.setRole("follower");
      this.setState(message.state);
      this.hello();
    } else if (kind === "bye") {
      this.setState(STATES.reconnecting);
    } else if (kind === "replay") {
      if (this.role === "waiting") this.setRole("follower");
      for (const event of message.events) this.receive(event);
      this.flushJoining();
      if (!this.closed) this.setState(message.state);
    } else if (kind === "event") {
      if (this.awaitingReplay) this.joining.push(message.event);
      else this.receive(message.event);
    } else if (kind === "state") {
      this.setState(message.state);
    }
  }

  flushJoining() {
    this.awaitingReplay = false;
    const held = this.joining;
    this.joining = [];
    for (const event of held) this.receive(event);
  }

  // The events after `lastEventId`: all of them for a tab that has none, none if this
  // tab does not have that id (the other tab is ahead; what it lacks comes by resuming).
  // From the first event with that id: an `end` carries the id of the message before it,
  // and the other tab drops what it already has.
  after(lastEventId) {
    const events = this.log.map(({ event }) => event);
    if (!lastEventId) return events;
    const index = events.findIndex((event) => event.id === lastEventId);
    return index < 0 ? [] : events.slice(index + 1);
  }

  watch() {
    if (this.role === "leader" || this.role === "solo" || this.closed || this.stealing) return;
    const now = performance.now();
    if (this.ping === null) {
      this.ping = now;
      this.post({ kind: "ping" });
      return;
    }
    if (now - this.ping < this.settings.takeoverMs * 0.75) return;
    // Nobody answered for most of a takeover delay: the leader is frozen or hung without
    // releasing its lock. Take the stream over, after a random moment in which another
    // tab may do so first (its "leader" message answers the ping).
    const asked = this.ping;
    this.stealing = true;
    setTimeout(() => {
      this.stealing = false;
      if (this.ping !== asked || this.closed || this.role === "leader") return;
      this.ping = null;
      this.elect(true);
    }, (Math.random() * this.settings.takeoverMs) / 4);
  }
}

function call(handlers, event) {
  const handler = handlers[event.type];
  if (!handler) return;
  try {
    handler(event);
  } catch (error) {
    reportError(error); // one broken handler must not stop the others
  }
}

function reportError(error) {
  // Reported like an uncaught error (console, window.onerror), without stopping the caller.
  setTimeout(() => {
    throw error;
  });
}
