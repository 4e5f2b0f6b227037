// livecomments.js: a dependency-free ES module for the livecomments HTTP API (docs/client.md).
// Served by every writer at /client/livecomments.js; the demo page (/demo/) is built on it.
//
//   import { subscribe, post, history } from "/client/livecomments.js";
//   const sub = subscribe("launch", { comment: (c) => show(c), state: (s) => badge(s) });
//   await post("launch", { text: "hi", author: "ana" });
//   const { comments, next } = await history("launch", { limit: 50 });

const BACKOFF_MIN_MS = 1000; // the first wait of the client's own reconnects...
const BACKOFF_MAX_MS = 30000; // ...doubling up to this, with equal jitter (half fixed, half random)
const POST_TIMEOUT_MS = 10000; // a post over the socket that has no answer by then is refused

/** An error from the API, as its JSON error shape `{"error": {"code", "message"}}` says it. */
export class LivecommentsError extends Error {
  /**
   * @param {string} code stable machine code (`text_too_long`, `rate_limited`, `network`, ...)
   * @param {string} message what to show a person
   * @param {number} [status] the HTTP status (0 when there was no answer)
   * @param {number} [retryAfter] seconds the server asked to wait (Retry-After), 0 when it did not say
   */
  constructor(code, message, status = 0, retryAfter = 0) {
    super(message);
    this.name = "LivecommentsError";
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/**
 * The wait before reconnect attempt `attempt` (0-based): doubling from 1 s to 30 s, equal jitter,
 * so clients cut off together (a restart) do not come back together.
 * @param {number} attempt
 * @returns {number} milliseconds
 */
export function backoffMs(attempt) {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(attempt, 16));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/**
 * A fresh Idempotency-Key: crypto.randomUUID where the page is a secure context, else the same
 * 122 random bits from getRandomValues (randomUUID is missing on plain http to a LAN address).
 * @returns {string}
 */
export function newKey() {
  if (globalThis.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function tokenOf(getToken) {
  return getToken ? (await getToken()) || "" : "";
}

function apiUrl(baseUrl, path, params) {
  const url = new URL((baseUrl || "") + path, globalThis.location ? location.href : undefined);
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, String(value));
  }
  return url;
}

async function errorOf(response) {
  const retryAfter = Number(response.headers.get("Retry-After")) || 0;
  try {
    const body = await response.json();
    if (body && body.error) return new LivecommentsError(body.error.code, body.error.message, response.status, retryAfter);
  } catch {
    // not JSON (a proxy's page): described by its status below
  }
  return new LivecommentsError(`http_${response.status}`, `${response.status} ${response.statusText}`.trim(),
    response.status, retryAfter);
}

// One HTTP call with the retries every call shares: no answer at all, or a 503/429 whose
// Retry-After is short enough. `init` is sent as is each time, so a post's Idempotency-Key
// is the same on every attempt and the server stores the comment once.
async function request(url, init, { getToken, retries = 2, maxRetryAfter = 5 } = {}) {
  for (let attempt = 0; ; attempt++) {
    const token = await tokenOf(getToken);
    const headers = { ...init.headers, ...(token ? { Authorization: `Bearer ${token}` } : {}) };
    let response;
    try {
      response = await fetch(url, { ...init, headers });
    } catch {
      if (attempt >= retries) throw new LivecommentsError("network", "Could not reach the server.");
      await sleep(backoffMs(attempt));
      continue;
    }
    if (response.ok) return response.status === 204 ? null : response.json();
    const error = await errorOf(response);
    const transient = response.status === 503 || response.status === 429;
    if (!transient || attempt >= retries || error.retryAfter > maxRetryAfter) throw error;
    await sleep(error.retryAfter ? error.retryAfter * 1000 : backoffMs(attempt));
  }
}

/**
 * Post a comment: `POST /v1/videos/{id}/comments` with an Idempotency-Key made here and reused on
 * this call's own retries (no answer, or 503/429 with a Retry-After up to `maxRetryAfter`), so a
 * retried post is stored once.
 * @param {string} videoId
 * @param {{text: string, author?: string}} comment `author` is ignored when a token names the poster
 * @param {{getToken?: () => (string|Promise<string>), baseUrl?: string, retries?: number,
 *          maxRetryAfter?: number, key?: string}} [options]
 * @returns {Promise<{video_id: string, seq: number, author: string, text: string, created_at: number}>}
 * @throws {LivecommentsError} the server's refusal (`code`, `message`, `status`, `retryAfter`)
 */
export function post(videoId, { text, author }, options = {}) {
  const key = options.key || newKey();
  const init = {
    method: "POST",
    headers: { "Content-Type": "application/json", "Idempotency-Key": key },
    body: JSON.stringify(author === undefined ? { text } : { text, author }),
  };
  return request(apiUrl(options.baseUrl, `/v1/videos/${encodeURIComponent(videoId)}/comments`), init, options);
}

/**
 * One page of a video's comments, newest first: `GET /v1/videos/{id}/comments`.
 * @param {string} videoId
 * @param {{limit?: number, cursor?: string|null, getToken?: () => (string|Promise<string>),
 *          baseUrl?: string}} [options] `cursor`: the previous page's `next`
 * @returns {Promise<{comments: object[], next: string|null}>} `next` is null on the last page
 * @throws {LivecommentsError}
 */
export function history(videoId, options = {}) {
  const params = { limit: options.limit, before: options.cursor };
  return request(apiUrl(options.baseUrl, `/v1/videos/${encodeURIComponent(videoId)}/comments`, params),
    { method: "GET" }, options);
}

/**
 * Watch a video's comments live, over SSE (EventSource, the default) or a WebSocket
 * (`transport: "ws"`). Every comment once, in seq order, across reconnects: a new connection
 * resumes after the last seq seen (EventSource's own retries send Last-Event-ID; the client's
 * own reconnects and the WebSocket send `?since=`).
 *
 * Handlers (all optional): `comment(c)`; `delete({video_id, seq})` (seq: the comment removed);
 * `viewers({video_id, viewers})`; `reset({oldest_seq})` (the resume point is no longer kept);
 * `error({code, message})` (the server's in-band refusal, e.g. too_many_streams);
 * `state(s)`: "connecting" | "live" | "reconnecting" | "offline" (that many attempts failed in a row).
 *
 * @param {string} videoId
 * @param {{comment?: Function, delete?: Function, viewers?: Function, reset?: Function,
 *          error?: Function, state?: Function}} handlers
 * @param {{transport?: "sse"|"ws", since?: number, getToken?: () => (string|Promise<string>),
 *          baseUrl?: string, offlineAfter?: number}} [options] `since`: resume after this seq;
 *          `getToken` is called for every connection and again on `token_expired`;
 *          `offlineAfter`: failed attempts in a row before the state is "offline" (3)
 * @returns {Subscription}
 */
export function subscribe(videoId, handlers, options = {}) {
  return new Subscription(videoId, handlers || {}, options);
}

/** A live subscription (made by subscribe()). `lastSeq` is where the next connection resumes. */
export class Subscription {
  constructor(videoId, handlers, options) {
    this.videoId = videoId;
    this.handlers = handlers;
    this.options = { transport: "sse", offlineAfter: 3, ...options };
    this.lastSeq = options.since ?? null;
    this.state = "";
    this.closed = false;
    this.failures = 0; // attempts in a row that never opened
    this.paced = false; // the server refused in band: its `retry:` paces EventSource, not our backoff
    this.pending = new Map(); // id -> post over the socket waiting for its ack
    this.conn = null;
    this.timer = 0;
    this.attempt = 0; // bumped per connect(): a token that arrives for an older attempt is dropped
    this.connect();
  }

  /** Stop: close the connection, cancel any reconnect, refuse the posts still waiting. */
  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.drop();
    for (const id of [...this.pending.keys()]) this.settle(id, new LivecommentsError("closed", "The subscription was closed."));
  }

  /**
   * Post over the WebSocket (`transport: "ws"` only): `{"type":"post"}` answered by an ack or an
   * error naming its id. The id is the Idempotency-Key and is sent again after a reconnect, so
   * the comment is stored once. Resolves with `{id, seq}`.
   * @param {{text: string, author?: string}} comment
   * @returns {Promise<{id: string, seq: number}>}
   */
  post({ text, author }) {
    if (this.options.transport !== "ws") return Promise.reject(new LivecommentsError("not_ws", "post() on a subscription needs transport: \"ws\"."));
    const id = newKey();
    const message = JSON.stringify({ type: "post", text, author, id });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.settle(id, new LivecommentsError("timeout", "The server did not answer the post.")), POST_TIMEOUT_MS);
      this.pending.set(id, { message, resolve, reject, timer });
      if (this.conn instanceof WebSocket && this.conn.readyState === WebSocket.OPEN) this.conn.send(message);
    });
  }

  settle(id, error, seq) {
    const waiting = this.pending.get(id);
    if (!waiting) return;
    this.pending.delete(id);
    clearTimeout(waiting.timer);
    if (error) waiting.reject(error);
    else waiting.resolve({ id, seq });
  }

  setState(state) {
    if (state === this.state || this.closed) return;
    this.state = state;
    this.handlers.state?.(state);
  }

  drop() {
    const conn = this.conn;
    this.conn = null;
    if (conn) conn.close();
  }

  async connect() {
    if (this.closed) return;
    const attempt = ++this.attempt;
    this.setState(this.state === "" ? "connecting" : this.failures >= this.options.offlineAfter ? "offline" : "reconnecting");
    let token = "";
    try {
      token = await tokenOf(this.options.getToken);
    } catch {
      if (attempt === this.attempt) this.retry(); // the app could not give a token now: try again later
      return;
    }
    if (this.closed || attempt !== this.attempt) return;
    const path = `/v1/videos/${encodeURIComponent(this.videoId)}/${this.options.transport === "ws" ? "ws" : "stream"}`;
    const url = apiUrl(this.options.baseUrl, path, { since: this.lastSeq, access_token: token });
    if (this.options.transport === "ws") this.openSocket(url);
    else this.openEventSource(url);
  }

  // The client's own reconnect, after a backoff: a failed attempt, or a connection EventSource gave up.
  retry() {
    this.drop();
    if (this.closed) return;
    this.failures += 1;
    this.setState(this.failures >= this.options.offlineAfter ? "offline" : "reconnecting");
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), backoffMs(this.failures - 1));
  }

  // Now, not after a backoff: the token expired, a fresh one is asked for and the stream goes on.
  refresh() {
    this.drop();
    clearTimeout(this.timer);
    this.connect();
  }

  opened() {
    this.failures = 0;
    this.paced = false;
    this.setState("live");
  }

  // A log entry (comment or delete) moves the resume point; `entrySeq` is its own place in the log.
  entry(entrySeq, kind, body) {
    if (this.lastSeq !== null && entrySeq <= this.lastSeq) return; // a duplicate at a seam: never shown twice
    this.lastSeq = entrySeq;
    this.handlers[kind]?.(body);
  }

  inBandError(error) {
    if (error.code === "token_expired") {
      this.refresh();
      return;
    }
    this.paced = true;
    this.handlers.error?.(error);
  }

  openEventSource(url) {
    const source = new EventSource(String(url));
    this.conn = source;
    const mine = (handler) => (event) => {
      if (this.conn === source) handler(event);
    };
    source.addEventListener("open", mine(() => this.opened()));
    source.addEventListener("comment", mine((e) => {
      const comment = JSON.parse(e.data);
      this.entry(comment.seq, "comment", comment);
    }));
    source.addEventListener("delete", mine((e) => this.entry(Number(e.lastEventId), "delete", JSON.parse(e.data))));
    source.addEventListener("viewers", mine((e) => this.handlers.viewers?.(JSON.parse(e.data))));
    source.addEventListener("reset", mine((e) => this.handlers.reset?.(JSON.parse(e.data))));
    source.addEventListener("error", mine((e) => {
      if (e.data) { // `event: error` from the server: in band, then the stream ends
        let body = {};
        try { body = JSON.parse(e.data); } catch { /* raw text: shown as the message */ }
        this.inBandError(body.error || { code: "stream_error", message: String(e.data) });
        return;
      }
      // The stream was lost (it was live), or the server refused in band: EventSource's own
      // retry follows the server's `retry:` and sends Last-Event-ID. CLOSED (EventSource gave up:
      // a 401, a proxy's 502), or an attempt that failed: the client's backoff takes over.
      if (source.readyState !== EventSource.CLOSED && (this.state === "live" || this.paced)) {
        this.setState("reconnecting");
      } else {
        this.retry();
      }
    }));
  }

  openSocket(url) {
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(String(url));
    this.conn = socket;
    let expired = false;
    socket.addEventListener("open", () => {
      if (this.conn !== socket) return;
      this.opened();
      for (const waiting of this.pending.values()) socket.send(waiting.message); // same id: stored once
    });
    socket.addEventListener("message", (event) => {
      if (this.conn !== socket) return;
      const msg = JSON.parse(event.data);
      if (msg.type === "comment") {
        const { type, ...comment } = msg;
        this.entry(comment.seq, "comment", comment);
      } else if (msg.type === "delete") {
        this.entry(msg.seq, "delete", { video_id: msg.video_id, seq: msg.deletes });
      } else if (msg.type === "viewers" || msg.type === "reset") {
        const { type, ...body } = msg;
        this.handlers[type]?.(body);
      } else if (msg.type === "ack") {
        this.settle(msg.id, null, msg.seq);
      } else if (msg.type === "error" && "id" in msg) {
        this.settle(msg.id, new LivecommentsError(msg.error.code, msg.error.message));
      } else if (msg.type === "error") {
        expired = msg.error.code === "token_expired";
        if (!expired) this.inBandError(msg.error);
      }
    });
    socket.addEventListener("close", (event) => {
      if (this.conn !== socket) return;
      this.conn = null;
      if (expired || event.code === 4001) this.refresh();
      else this.retry();
    });
  }
}
