// The live stream (EventSource): comments, deletes, viewer counts, resets, and the connection state
// shown to the reader (live / reconnecting / catching up after a resume).

import { $, setConn, showHistoryNote, state } from "./page.js";
import { authHeaders, withAccessToken } from "./api.js";
import { removeComment, showLive } from "./comments.js";

const CATCH_UP_GRACE_MS = 2000; // a head never reached (retention removed it, the info request failed): go live anyway
const VIEWERS_POLL_MS = 10000; // until the stream sends `event: viewers` itself
const MANUAL_RETRY_MS = 2000; // when EventSource gave up (a non-retryable answer), retry ourselves

export function closeStream() {
  if (state.source) state.source.close();
  state.source = null;
  clearTimeout(state.retryTimer);
  clearTimeout(state.catchUpTimer);
}

export function openStream(resumeFrom) {
  closeStream();
  // since= only for the first connection: EventSource resumes with Last-Event-ID by itself after that.
  const url = withAccessToken(`/v1/videos/${state.video}/stream?since=${resumeFrom}`);
  const source = new EventSource(url);
  state.source = source;
  const generation = state.generation;
  const mine = (handler) => (event) => {
    if (state.source === source && generation === state.generation) handler(event);
  };
  source.addEventListener("open", mine(onStreamOpen));
  source.addEventListener("comment", mine(onStreamComment));
  source.addEventListener("delete", mine(onStreamDelete));
  source.addEventListener("viewers", mine(onStreamViewers));
  source.addEventListener("reset", mine(onStreamReset));
  source.addEventListener("error", mine((event) => onStreamError(event, source)));
}

function onStreamOpen() {
  // The server sends what was missed first, then live: "catching up" until we reach the head it had.
  setConn("catching-up", "Catching up…");
  clearTimeout(state.catchUpTimer);
  state.catchUpTarget = Infinity;
  const generation = state.generation;
  fetchVideo().then((info) => {
    if (generation !== state.generation || !info) return;
    state.catchUpTarget = info.last_seq;
    checkCaughtUp();
  });
  state.catchUpTimer = setTimeout(() => markLive(), CATCH_UP_GRACE_MS);
}

function checkCaughtUp() {
  if ($("conn").dataset.state === "catching-up" && state.streamSeq >= state.catchUpTarget) markLive();
}

function markLive() {
  clearTimeout(state.catchUpTimer);
  if (state.source && state.source.readyState === EventSource.OPEN) setConn("live", "Live");
}

function onStreamComment(event) {
  const comment = JSON.parse(event.data);
  state.streamSeq = Math.max(state.streamSeq, comment.seq);
  showLive(comment);
  checkCaughtUp();
}

function onStreamDelete(event) {
  // A delete is an entry of the video's log with a seq of its own (the event id): resume after it.
  state.streamSeq = Math.max(state.streamSeq, Number(event.lastEventId) || 0);
  removeComment(JSON.parse(event.data).seq);
  checkCaughtUp();
}

function onStreamViewers(event) {
  state.viewersFromStream = true;
  clearInterval(state.viewersTimer);
  showViewers(JSON.parse(event.data).viewers);
}

function onStreamReset(event) {
  const oldest = JSON.parse(event.data).oldest_seq;
  showHistoryNote(`Some comments are no longer kept; the conversation continues from #${oldest}.`);
}

function onStreamError(event, source) {
  if (event.data) {
    // `event: error` from the server: it refused this stream (the browser retries after `retry:`).
    let message = event.data;
    try {
      const body = JSON.parse(event.data);
      message = (body.error || body).message || message;
    } catch {
      // keep the raw text
    }
    setConn("error", `Stream refused: ${message}`);
    return;
  }
  if (source.readyState === EventSource.CONNECTING) {
    // after a refusal the reason stays on screen while the browser retries
    if ($("conn").dataset.state !== "error") setConn("reconnecting", "Reconnecting…");
    return;
  }
  // CLOSED: EventSource gives up on an answer it will not retry (a proxy's 502, a 401): retry ourselves.
  setConn("reconnecting", "Reconnecting…");
  state.retryTimer = setTimeout(() => openStream(state.streamSeq), MANUAL_RETRY_MS);
}

async function fetchVideo() {
  try {
    const response = await fetch(withAccessToken(`/v1/videos/${state.video}`), { headers: authHeaders() });
    if (!response.ok) return null;
    const info = await response.json();
    if (!state.viewersFromStream) showViewers(info.viewers);
    return info;
  } catch {
    return null;
  }
}

// GET /v1/videos/{id}'s count now and then, until the stream sends `event: viewers` itself.
export function pollViewers() {
  clearInterval(state.viewersTimer);
  state.viewersTimer = setInterval(() => {
    if (!state.viewersFromStream) fetchVideo();
  }, VIEWERS_POLL_MS);
}

function showViewers(count) {
  const pill = $("viewers");
  pill.hidden = typeof count !== "number"; // null: a writer-only process cannot count viewers
  if (!pill.hidden) $("viewer-count").textContent = String(count);
}
