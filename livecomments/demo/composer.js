// The post form: send, explain refusals inline (too long, rate limited, slow mode, banned, bad token).

import { $, showPostError, state } from "./page.js";
import { apiError, authHeaders, idempotencyKey } from "./api.js";
import { addComment, scrollToBottom } from "./comments.js";

function describePostError(status, error, retryAfter) {
  const wait = retryAfter ? ` Try again in ${retryAfter} s.` : "";
  switch (error.code) {
    case "rate_limited":
      return `You are posting too fast.${wait}`;
    case "slow_mode":
      return `Slow mode is on for this video.${wait}`;
    case "banned":
      return "You are banned from commenting on this video.";
    case "unauthorized":
      return `Your token was not accepted: ${error.message}`;
    default:
      return error.message || `Could not post (${status}).`;
  }
}

function holdSendButton(seconds) {
  clearTimeout(state.retryAfterTimer);
  $("send").dataset.waiting = "1";
  updateSendButton();
  state.retryAfterTimer = setTimeout(releaseSendButton, seconds * 1000);
}

// A Retry-After is for one user on one video: another token or another video may post at once.
export function releaseSendButton() {
  clearTimeout(state.retryAfterTimer);
  delete $("send").dataset.waiting;
  updateSendButton();
}

export function updateSendButton() {
  const text = $("text-input").value;
  const length = Array.from(text.trim()).length;
  const counter = $("counter");
  const max = state.config.max_text;
  counter.textContent = length > max * 0.8 ? `${length} / ${max}` : "";
  counter.classList.toggle("over", length > max);
  $("send").disabled = !state.video || length === 0 || $("send").dataset.waiting === "1";
}

export async function postComment(event) {
  event.preventDefault();
  if (!state.video) return;
  const textInput = $("text-input");
  const author = $("name-input").value.trim() || "guest";
  const body = { text: textInput.value, author };
  const headers = { "Content-Type": "application/json", "Idempotency-Key": idempotencyKey(), ...authHeaders() };
  $("send").disabled = true;
  let response;
  try {
    response = await fetch(`/v1/videos/${state.video}/comments`, { method: "POST", headers, body: JSON.stringify(body) });
  } catch { // only the network fails here: fetch rejects on no answer, not on an error status
    showPostError("Could not reach the server. Check your connection and try again.");
    updateSendButton();
    return;
  }
  if (response.ok) {
    const comment = await response.json();
    if (textInput.value === body.text) textInput.value = ""; // keep what was typed meanwhile
    autoGrow();
    showPostError("");
    localStorage.setItem("livecomments.name", author);
    addComment(comment); // shown at once; the stream's copy of it is then ignored
    scrollToBottom();
  } else {
    if (response.status === 401) revealTokenField();
    const retryAfter = Number(response.headers.get("Retry-After")) || 0;
    showPostError(describePostError(response.status, await apiError(response), retryAfter));
    if (retryAfter) holdSendButton(retryAfter);
  }
  updateSendButton();
}

export function revealTokenField() {
  $("token-row").hidden = false;
  $("name-row").hidden = true; // with tokens the author is the token's name, never a typed one
}

export function autoGrow() {
  const area = $("text-input");
  area.style.height = "auto";
  area.style.height = `${Math.min(area.scrollHeight, 160)}px`;
}
