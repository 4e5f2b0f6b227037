// The comment list: rendering (textContent only: user text is never parsed as HTML), ordering,
// autoscroll with a "n new" marker, earlier pages, moderators' delete (asked twice: a click is easy to slip).

import { history } from "/client/livecomments.js";
import { $, showHistoryNote, showPostError, state } from "./page.js";
import { deleteRequest, isModerator, token } from "./api.js";

const NEAR_BOTTOM_PX = 48; // closer than this to the bottom counts as "reading the newest"
const CONFIRM_MS = 4000; // a delete not confirmed within this goes back to "Delete"

function colorFor(name) {
  let h = 2166136261; // FNV-1a: an author keeps one colour on every page and every visit
  for (const ch of name) h = Math.imul(h ^ ch.codePointAt(0), 16777619);
  h = Math.imul(h ^ (h >>> 15), 2246822507); // final mix: the last letter moves every bit
  return `hsl(${((h ^ (h >>> 13)) >>> 0) % 360} 55% 42%)`;
}

function initials(name) {
  const words = name.trim().split(/\s+/).filter(Boolean);
  const letters = words.length > 1 ? [words[0], words[words.length - 1]] : [words[0] || "?"];
  return letters.map((w) => Array.from(w)[0]).join("").toUpperCase();
}

function formatTime(epochSeconds) {
  const date = new Date(epochSeconds * 1000);
  const now = new Date();
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (date.toDateString() === now.toDateString()) return time;
  return `${date.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

export function isNearBottom() {
  const s = $("scroller");
  return s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM_PX;
}

export function scrollToBottom() {
  const s = $("scroller");
  s.scrollTop = s.scrollHeight;
  state.unseen = 0;
  updateNewMarker();
}

export function updateNewMarker() {
  const marker = $("new-marker");
  marker.hidden = state.unseen === 0;
  marker.textContent = state.unseen === 1 ? "1 new comment ↓" : `${state.unseen} new comments ↓`;
}

export function updateEmpty() {
  const empty = $("empty");
  empty.hidden = state.rendered.size > 0;
  empty.textContent = state.video ? "No comments yet. Say something!" : "Choose a video above to see its comments.";
}

function buildComment(comment) {
  const li = $("comment-template").content.firstElementChild.cloneNode(true);
  li.dataset.seq = String(comment.seq);
  const avatar = li.querySelector(".avatar");
  avatar.textContent = initials(comment.author);
  avatar.style.backgroundColor = colorFor(comment.author); // CSSOM: allowed by the page's CSP
  li.querySelector(".author").textContent = comment.author;
  const time = li.querySelector(".time");
  time.textContent = formatTime(comment.created_at);
  time.dateTime = new Date(comment.created_at * 1000).toISOString();
  time.title = new Date(comment.created_at * 1000).toLocaleString();
  li.querySelector(".text").textContent = comment.text;
  const del = li.querySelector(".delete");
  del.hidden = !isModerator();
  del.addEventListener("click", () => deleteComment(comment.seq, del));
  return li;
}

// Insert in seq order; a seq already shown is ignored (stream, post answer and history may overlap).
export function addComment(comment) {
  if (state.rendered.has(comment.seq)) return false;
  const li = buildComment(comment);
  const list = $("comments");
  let before = null;
  for (let node = list.lastElementChild; node; node = node.previousElementSibling) {
    if (Number(node.dataset.seq) < comment.seq) break;
    before = node;
  }
  list.insertBefore(li, before);
  state.rendered.set(comment.seq, li);
  updateEmpty();
  return true;
}

export function showLive(comment) {
  const follow = isNearBottom();
  if (!addComment(comment)) return;
  if (follow) {
    scrollToBottom();
  } else {
    state.unseen += 1;
    updateNewMarker();
  }
}

export function removeComment(seq) {
  const li = state.rendered.get(seq);
  if (!li) return;
  state.rendered.delete(seq);
  li.remove();
  updateEmpty();
}

export function refreshDeleteButtons() {
  const moderator = isModerator();
  for (const li of state.rendered.values()) li.querySelector(".delete").hidden = !moderator;
}

// The first click asks ("Really delete?"), the second deletes; left alone it goes back.
async function deleteComment(seq, button) {
  if (button.dataset.confirming !== "1") {
    button.dataset.confirming = "1";
    button.textContent = "Really delete?";
    button.timer = setTimeout(() => resetDeleteButton(button), CONFIRM_MS);
    return;
  }
  resetDeleteButton(button);
  button.disabled = true;
  const error = await deleteRequest(seq);
  button.disabled = false;
  if (error) showPostError(`Could not delete: ${error.message}`);
  else removeComment(seq);
}

function resetDeleteButton(button) {
  clearTimeout(button.timer);
  delete button.dataset.confirming;
  button.textContent = "Delete";
}

export function loadPage(cursor) {
  return history(state.video, { limit: state.config.page_limit, cursor, getToken: token });
}

export async function loadEarlier() {
  const button = $("load-earlier");
  const generation = state.generation;
  button.disabled = true;
  try {
    const scroller = $("scroller");
    const fromBottom = scroller.scrollHeight - scroller.scrollTop;
    const page = await loadPage(state.nextCursor);
    if (generation !== state.generation) return;
    for (const comment of page.comments) addComment(comment);
    state.nextCursor = page.next;
    button.hidden = !page.next;
    showHistoryNote(page.next ? "" : "This is the beginning of the conversation.");
    scroller.scrollTop = scroller.scrollHeight - fromBottom; // keep what the reader was looking at in place
  } catch (error) {
    showHistoryNote(`Could not load earlier comments: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}
