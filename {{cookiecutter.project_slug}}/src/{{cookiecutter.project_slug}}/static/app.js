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

function startDemo(panel) {
  const list = panel.querySelector("#messages");
  const received = panel.querySelector("#demo-received");
  const state = panel.querySelector("#demo-state");
  const source = new EventSource(panel.dataset.url);
  let done = false;

  source.onopen = () => setState(state, "open");
  source.onmessage = (event) => {
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
      // while the app restarts. Messages are missing: say so rather than "done".
      setState(state, "failed");
    }
  };
}

document.addEventListener("DOMContentLoaded", () => {
  startDemo(document.getElementById("demo"));
});
