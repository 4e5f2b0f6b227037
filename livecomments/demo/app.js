// The livecomments demo page (/demo/, /demo/?video=ID): picks a video and wires the parts together.
// Vanilla ES modules, no build step, nothing loaded from another host; the stream, posts and
// history pages go through the client library, /client/livecomments.js.

import { $, setConn, showHistoryNote, showPostError, state } from "./page.js";
import { addComment, isNearBottom, loadEarlier, loadPage, refreshDeleteButtons, scrollToBottom, updateEmpty, updateNewMarker } from "./comments.js";
import { closeStream, openStream, pollViewers } from "./stream.js";
import { autoGrow, postComment, releaseSendButton, revealTokenField, updateSendButton } from "./composer.js";

const VIDEO_ID = /^[A-Za-z0-9_-]{1,64}$/;

function rememberVideo(videoId) {
  const recent = JSON.parse(localStorage.getItem("livecomments.recent") || "[]").filter((v) => v !== videoId);
  recent.unshift(videoId);
  localStorage.setItem("livecomments.recent", JSON.stringify(recent.slice(0, 5)));
}

function showRecent() {
  const recent = JSON.parse(localStorage.getItem("livecomments.recent") || "[]")
    .filter((v) => VIDEO_ID.test(v) && v !== state.video);
  const list = $("recent-list");
  list.replaceChildren();
  for (const videoId of recent) {
    const link = document.createElement("a");
    link.className = "chip";
    link.href = `/demo/?video=${encodeURIComponent(videoId)}`;
    link.textContent = videoId;
    link.addEventListener("click", (e) => {
      e.preventDefault();
      openVideo(videoId);
    });
    list.append(link);
  }
  $("recent").hidden = recent.length === 0;
}

// Next to the input, not in the connection pill: the video being watched (if any) goes on.
function showVideoError(text) {
  const box = $("video-error");
  box.textContent = text;
  box.hidden = !text;
  $("video-input").setAttribute("aria-invalid", text ? "true" : "false");
}

async function openVideo(videoId) {
  if (!VIDEO_ID.test(videoId)) {
    $("video-input").value = videoId; // kept as typed, to be corrected
    showVideoError("A video id is 1-64 letters, digits, _ or -");
    $("video-input").focus();
    return;
  }
  showVideoError("");
  state.generation += 1;
  const generation = state.generation;
  closeStream();
  clearInterval(state.viewersTimer);
  Object.assign(state, { video: videoId, streamSeq: 0, nextCursor: null, unseen: 0, viewersFromStream: false });
  state.rendered.clear();
  $("comments").replaceChildren();
  showHistoryNote("");
  showPostError("");
  releaseSendButton();
  updateNewMarker();
  $("video-input").value = videoId;
  $("player-title").textContent = videoId;
  document.title = `${videoId} · livecomments`;
  const url = new URL(location.href);
  url.searchParams.set("video", videoId); // ?transport= stays as it was
  history.replaceState(null, "", url);
  rememberVideo(videoId);
  showRecent();
  updateSendButton();
  setConn("connecting", "Connecting…");

  let page;
  try {
    page = await loadPage(null);
  } catch (error) {
    if (generation !== state.generation) return;
    setConn("error", `Could not load comments: ${error.message}`);
    if (error.code === "unauthorized" || error.code === "token_expired") revealTokenField();
    return;
  }
  if (generation !== state.generation) return;
  for (const comment of page.comments) addComment(comment);
  state.nextCursor = page.next;
  $("load-earlier").hidden = !page.next;
  updateEmpty();
  scrollToBottom();
  // Resume right after the newest comment the page shows: nothing between the two is missed.
  state.streamSeq = page.comments.length ? page.comments[0].seq : 0;
  openStream(state.streamSeq);
  pollViewers();
}

async function loadConfig() {
  try {
    const response = await fetch("/demo/config.json");
    if (response.ok) Object.assign(state.config, await response.json());
  } catch {
    // keep the defaults: a 401 on posting still reveals the token field
  }
}

async function main() {
  await loadConfig();
  if (state.config.auth) revealTokenField();
  $("name-input").maxLength = state.config.max_author;
  $("name-input").value = localStorage.getItem("livecomments.name") || "";
  $("token-input").value = sessionStorage.getItem("livecomments.token") || "";
  refreshDeleteButtons();

  $("picker").addEventListener("submit", (e) => {
    e.preventDefault();
    openVideo($("video-input").value.trim());
  });
  $("post").addEventListener("submit", postComment);
  $("text-input").addEventListener("input", () => {
    autoGrow();
    updateSendButton();
  });
  $("text-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("post").requestSubmit();
    }
  });
  $("token-input").addEventListener("input", () => {
    sessionStorage.setItem("livecomments.token", $("token-input").value.trim());
    refreshDeleteButtons();
    releaseSendButton();
  });
  $("token-input").addEventListener("change", () => {
    // With auth_streams a video opened without a token was refused: open it again with this one.
    if (state.video && $("conn").dataset.state === "error") openVideo(state.video);
    // a WebSocket's poster is the upgrade's token: reconnect (from where it was) as the new one
    else if (state.video && state.transport === "ws") openStream(state.streamSeq);
  });
  $("load-earlier").addEventListener("click", loadEarlier);
  $("new-marker").addEventListener("click", scrollToBottom);
  $("scroller").addEventListener("scroll", () => {
    if (state.unseen && isNearBottom()) {
      state.unseen = 0;
      updateNewMarker();
    }
  });

  const query = new URLSearchParams(location.search);
  if (query.get("transport") === "ws") state.transport = "ws";
  const requested = query.get("video");
  if (requested) {
    openVideo(requested);
  } else {
    showRecent();
    updateEmpty();
    $("video-input").focus();
  }
}

main();
