// Shared by the demo's modules: the page's state and the few elements every part writes to.

export const $ = (id) => document.getElementById(id);

export const state = {
  config: { auth: false, auth_streams: false, max_text: 2000, max_author: 64, page_limit: 50 },
  video: null,
  transport: "sse", // ?transport=ws: the stream and the posts over one WebSocket
  sub: null, // the livecomments.js Subscription
  streamSeq: 0, // last seq the stream delivered
  rendered: new Map(), // seq -> <li>, so a comment shows once whatever path brought it
  nextCursor: null, // history cursor for "load earlier"
  unseen: 0, // comments arrived while scrolled up
  catchUpTarget: 0,
  catchUpTimer: 0,
  viewersFromStream: false,
  viewersTimer: 0,
  retryAfterTimer: 0,
  generation: 0, // bumped per opened video: late answers for a previous video are dropped
};

// The connection state, and what must not outlive it: the LIVE badge and the viewer count are
// shown only while the stream is up, never stale while the server cannot be reached.
export function setConn(kind, text) {
  $("conn").dataset.state = kind;
  $("conn-text").textContent = text;
  const connected = kind === "live" || kind === "catching-up";
  $("live-badge").hidden = !connected;
  if (!connected) {
    $("viewers").hidden = true;
    $("viewer-count").textContent = "";
  }
}

export function showPostError(text) {
  const box = $("post-error");
  box.textContent = text;
  box.hidden = !text;
}

export function showHistoryNote(text) {
  const note = $("history-note");
  note.textContent = text;
  note.hidden = !text;
}
