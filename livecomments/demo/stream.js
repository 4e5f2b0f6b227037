// The live stream through livecomments.js (SSE, or ?transport=ws a WebSocket): comments,
// deletes, viewer counts, resets, and the connection state shown to the reader
// (connecting / catching up after a resume / live / reconnecting / offline).

import { subscribe } from "/client/livecomments.js";
import { $, setConn, showHistoryNote, state } from "./page.js";
import { streamToken, videoInfo } from "./api.js";
import { removeComment, showLive } from "./comments.js";

const CATCH_UP_GRACE_MS = 2000; // a head never reached (retention removed it, the info request failed): go live anyway
const VIEWERS_POLL_MS = 10000; // until the stream sends `event: viewers` itself

export function closeStream() {
  if (state.sub) state.sub.close();
  state.sub = null;
  clearTimeout(state.catchUpTimer);
}

export function openStream(resumeFrom) {
  closeStream();
  const generation = state.generation;
  let sub = null;
  const mine = (handler) => (arg) => {
    if (state.sub === sub && generation === state.generation) handler(arg);
  };
  sub = subscribe(state.video, {
    comment: mine(onComment),
    delete: mine((entry) => {
      removeComment(entry.seq);
      checkCaughtUp();
    }),
    viewers: mine((body) => {
      state.viewersFromStream = true;
      showViewers(body.viewers);
    }),
    reset: mine((body) => showHistoryNote(`Some comments are no longer kept; the conversation continues from #${body.oldest_seq}.`)),
    error: mine((error) => setConn("error", `Stream refused: ${error.message}`)),
    state: mine(onState),
  }, { since: resumeFrom, getToken: streamToken, transport: state.transport });
  state.sub = sub;
}

function onState(kind) {
  if (kind === "live") {
    onOpen();
  } else if (kind === "reconnecting" || kind === "offline") {
    // after a refusal the reason stays on screen while the server's `retry:` runs out
    if ($("conn").dataset.state === "error") return;
    setConn("reconnecting", kind === "offline" ? "Offline: the server cannot be reached. Retrying…" : "Reconnecting…");
  }
}

function onOpen() {
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
  state.catchUpTimer = setTimeout(markLive, CATCH_UP_GRACE_MS);
}

function checkCaughtUp() {
  state.streamSeq = Math.max(state.streamSeq, state.sub?.lastSeq ?? 0);
  if ($("conn").dataset.state === "catching-up" && state.streamSeq >= state.catchUpTarget) markLive();
}

function markLive() {
  clearTimeout(state.catchUpTimer);
  if (state.sub && state.sub.state === "live" && $("conn").dataset.state === "catching-up") setConn("live", "Live");
}

function onComment(comment) {
  showLive(comment);
  checkCaughtUp();
}

async function fetchVideo() {
  const info = await videoInfo();
  if (info && !state.viewersFromStream) showViewers(info.viewers);
  return info;
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
  const connected = ["live", "catching-up"].includes($("conn").dataset.state);
  pill.hidden = typeof count !== "number" || !connected; // null: a writer-only process cannot count viewers
  if (!pill.hidden) $("viewer-count").textContent = String(count);
}
