// Talking to the API: tokens, error bodies, history pages.

import { $, state } from "./page.js";

export function authHeaders() {
  const token = $("token-input").value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export function withAccessToken(url) {
  // EventSource cannot send headers: the token rides in the query when streams need one.
  const token = $("token-input").value.trim();
  if (!state.config.auth_streams || !token) return url;
  return url + (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token);
}

function tokenClaims() {
  const token = $("token-input").value.trim();
  const part = token.split(".")[1];
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

export function idempotencyKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes); // randomUUID needs a secure context; this works on any address
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function apiError(response) {
  // The API answers errors as {"error": {"code", "message"}}; a proxy may answer something else.
  try {
    const body = await response.json();
    if (body && body.error) return { code: body.error.code, message: body.error.message };
  } catch {
    // not JSON: fall through
  }
  return { code: `http_${response.status}`, message: `${response.status} ${response.statusText}` };
}

export async function loadPage(before) {
  const params = new URLSearchParams({ limit: String(state.config.page_limit) });
  if (before) params.set("before", before);
  const url = `/v1/videos/${state.video}/comments?${params}`;
  const response = await fetch(withAccessToken(url), { headers: authHeaders() });
  if (!response.ok) throw await apiError(response);
  return response.json();
}
