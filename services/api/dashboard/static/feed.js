// The live event feed (GET /v2/fulcrum/events, text/event-stream). EventSource cannot send
// X-Auth-Token, so the stream is read with fetch() and parsed here. A dropped feed reconnects
// with Last-Event-ID (the last global_position seen), waiting longer after each failure.

import { authHeaders } from "./api.js";

const FEED_PATH = "/v2/fulcrum/events";
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 10000;

// Calls onMessage({id, event, data}) for each complete message in `buffer` (state carries a
// message split across chunks); returns the unterminated rest. Comments (": keepalive") are
// skipped.
export function parseMessages(buffer, state, onMessage) {
  const lines = buffer.split("\n");
  const rest = lines.pop();
  for (const raw of lines) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line === "") {
      if (state.data.length > 0) {
        onMessage({ id: state.id, event: state.event || "message", data: state.data.join("\n") });
      }
      state.data = [];
      state.event = "";
      continue;
    }
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") state.data.push(value);
    else if (field === "event") state.event = value;
    else if (field === "id") state.id = value;
  }
  return rest;
}

// Follows the feed until stop() is called. onEvent(envelope) gets each parsed envelope;
// onState("connecting" | "live" | "retrying" | "unauthorized") tells the connection's state;
// onOpen() runs each time a connection opens (after which no event is missed).
export function followEvents({ onEvent, onState, onOpen }) {
  const controller = new AbortController();
  let lastId = null;
  let failures = 0;
  let stopped = false;

  async function connectOnce() {
    const headers = { ...authHeaders() };
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    const response = await fetch(FEED_PATH, { headers, signal: controller.signal, cache: "no-store" });
    if (response.status === 401) {
      onState("unauthorized");
      stopped = true;
      return;
    }
    if (!response.ok || !response.body) throw new Error(`feed answered ${response.status}`);
    failures = 0;
    onState("live");
    onOpen();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const state = { id: lastId, event: "", data: [] };
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer = parseMessages(buffer + value, state, (message) => {
        if (message.id) lastId = message.id;
        let envelope;
        try {
          envelope = JSON.parse(message.data);
        } catch {
          return;
        }
        onEvent(envelope);
      });
    }
  }

  (async () => {
    while (!stopped) {
      onState("connecting");
      try {
        await connectOnce();
      } catch (error) {
        if (controller.signal.aborted) return;
      }
      if (stopped) return;
      failures += 1;
      onState("retrying");
      const wait = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** Math.min(failures - 1, 5));
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  })();

  return {
    stop() {
      stopped = true;
      controller.abort();
    },
  };
}
