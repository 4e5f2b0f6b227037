// The post form: send, explain refusals inline (too long, rate limited, slow mode, banned, bad token).

import { post } from "/client/livecomments.js";
import { $, showPostError, state } from "./page.js";
import { token } from "./api.js";
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
    case "token_expired":
      return "Your token has expired: paste a fresh one.";
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

// Over HTTP the answer is the stored comment, shown at once (the stream's copy is then ignored);
// over the WebSocket the ack carries its seq and the comment itself comes on the stream.
function send(body) {
  if (state.transport === "ws" && state.sub) return state.sub.post(body);
  return post(state.video, body, { getToken: token });
}

export async function postComment(event) {
  event.preventDefault();
  if (!state.video) return;
  const textInput = $("text-input");
  const author = $("name-input").value.trim() || "guest";
  const body = { text: textInput.value, author };
  $("send").disabled = true;
  try {
    const answer = await send(body);
    if (textInput.value === body.text) textInput.value = ""; // keep what was typed meanwhile
    autoGrow();
    showPostError("");
    localStorage.setItem("livecomments.name", author);
    if (answer.text !== undefined) addComment(answer);
    scrollToBottom();
  } catch (error) {
    if (error.code === "unauthorized" || error.code === "token_expired") revealTokenField();
    showPostError(error.code === "network" ? "Could not reach the server. Check your connection and try again."
      : describePostError(error.status, error, error.retryAfter));
    if (error.retryAfter) holdSendButton(error.retryAfter);
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
