// What the demo asks of the API beside livecomments.js: the token field, who is a moderator,
// the video's info (viewer count, head) and a moderator's delete.

import { $, state } from "./page.js";

export const token = () => $("token-input").value.trim();

// Streams carry the token only when the server wants one (auth_streams), or on a WebSocket
// when posting needs one (the socket's identity is the upgrade's token).
export const streamToken = () => (state.config.auth_streams || (state.transport === "ws" && state.config.auth) ? token() : "");

function authHeaders() {
  return token() ? { Authorization: `Bearer ${token()}` } : {};
}

function tokenClaims() {
  const part = token().split(".")[1];
  if (!part) return null;
  try {
    const binary = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
  } catch {
    return null;
  }
}

export function isModerator() {
  const claims = tokenClaims();
  return !!claims && Array.isArray(claims.roles) && claims.roles.includes("moderator");
}

async function apiError(response) {
  // The API answers errors as {"error": {"code", "message"}}; a proxy may answer something else.
  try {
    const body = await response.json();
    if (body && body.error) return { code: body.error.code, message: body.error.message };
  } catch {
    // not JSON: fall through
  }
  return { code: `http_${response.status}`, message: `${response.status} ${response.statusText}` };
}

export async function videoInfo() {
  try {
    const url = `/v1/videos/${state.video}` + (state.config.auth_streams && token() ? `?access_token=${encodeURIComponent(token())}` : "");
    const response = await fetch(url, { headers: authHeaders() });
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

export async function deleteRequest(seq) {
  const response = await fetch(`/v1/videos/${state.video}/comments/${seq}`, { method: "DELETE", headers: authHeaders() })
    .catch(() => null);
  if (response && (response.ok || response.status === 404)) return null;
  return response ? await apiError(response) : { message: "Could not reach the server." };
}
