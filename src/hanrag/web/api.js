// The API client: tokens, refresh on 401 (once), Korean errors from problem+json or the
// jobs' envelope, SSE over fetch, uploads with progress, authenticated downloads.
//
// Tokens: the access token lives in memory only (it is gone when the tab closes or
// reloads). The refresh token is kept in sessionStorage, so that a reload of the tab does
// not sign the user out; sessionStorage is per tab, never sent with requests by the
// browser (no CSRF) and dropped when the tab closes. A script injected into the page
// could read it, which the strict Content-Security-Policy (no inline or foreign scripts)
// and the app's no-HTML rendering are there to prevent; refresh tokens rotate (each one
// works once) and logout revokes it.

import { errorMessage } from "./i18n.js";

const REFRESH_KEY = "hanrag.refresh";
const BASE = "/api/v1";

export class ApiError extends Error {
  constructor(status, code, detail, extra = {}) {
    super(errorMessage(code, status));
    this.name = "ApiError";
    this.status = status;
    this.code = code || null;
    this.detail = detail || "";
    this.field = extra.field || null;
    this.body = extra.body || null;
  }
}

export const session = {
  mode: null, // "none" | "token" (from /auth/me)
  access: null,
  me: null,
};

const authListeners = new Set();
/** Called when the server wants a sign-in (refresh failed or none): show the login form. */
export function onAuthRequired(listener) {
  authListeners.add(listener);
  return () => authListeners.delete(listener);
}
function authRequired() {
  session.access = null;
  for (const listener of authListeners) listener();
}

function storedRefresh() {
  try {
    return sessionStorage.getItem(REFRESH_KEY);
  } catch {
    return null;
  }
}
function storeRefresh(token) {
  try {
    if (token) sessionStorage.setItem(REFRESH_KEY, token);
    else sessionStorage.removeItem(REFRESH_KEY);
  } catch {
    /* storage disabled: the refresh token is then lost on reload */
  }
}

function keepTokens(tokens) {
  session.access = tokens.access_token;
  storeRefresh(tokens.refresh_token);
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (body && typeof body === "object") {
    // problem+json: {code, detail, field}; the jobs' envelope: {status, message, data: {code}}
    const data = body.data && typeof body.data === "object" ? body.data : {};
    const code = body.code || data.code || (body.error && body.error.code) || null;
    const detail = body.detail || body.message || "";
    return new ApiError(response.status, code, detail, { field: body.field || data.field, body });
  }
  return new ApiError(response.status, null, response.statusText);
}

let refreshing = null;
/** New tokens for the stored refresh token (one request at a time); false when refused. */
export function refreshTokens() {
  const token = storedRefresh();
  if (!token) return Promise.resolve(false);
  if (!refreshing) {
    refreshing = fetch(`${BASE}/auth/refresh`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refresh_token: token }),
    })
      .then(async (response) => {
        if (!response.ok) {
          if (response.status === 401 || response.status === 400) storeRefresh(null);
          return false;
        }
        keepTokens(await response.json());
        return true;
      })
      .catch(() => false)
      .finally(() => {
        refreshing = null;
      });
  }
  return refreshing;
}

function url(path, query) {
  const full = path.startsWith("/") && !path.startsWith(BASE) && !path.startsWith("/v1") ? BASE + path : path;
  if (!query) return full;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== null && value !== undefined && value !== "") params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${full}?${text}` : full;
}

function headers(extra) {
  const all = { ...(extra || {}) };
  if (session.access) all.authorization = `Bearer ${session.access}`;
  return all;
}

/** fetch() with the access token; one refresh and retry on 401. Returns the Response. */
async function send(method, target, init) {
  const make = () => fetch(target, { ...init, method, headers: headers(init.headers) });
  let response;
  try {
    response = await make();
  } catch (error) {
    if (error && error.name === "AbortError") throw error;
    throw new ApiError(0, "network", String(error));
  }
  if (response.status === 401 && session.mode === "token") {
    if (await refreshTokens()) {
      try {
        response = await make();
      } catch (error) {
        if (error && error.name === "AbortError") throw error;
        throw new ApiError(0, "network", String(error));
      }
    }
    if (response.status === 401) {
      const error = await errorFrom(response);
      authRequired();
      throw error;
    }
  }
  return response;
}

/**
 * A JSON API call: request("GET", "/documents", {query}) or request("POST", "/x", {json}).
 * Throws ApiError (Korean message) on anything but 2xx.
 */
export async function request(method, path, options = {}) {
  const init = { signal: options.signal, headers: {} };
  if (options.json !== undefined) {
    init.body = JSON.stringify(options.json);
    init.headers["content-type"] = "application/json";
  } else if (options.body !== undefined) init.body = options.body;
  const response = await send(method, url(path, options.query), init);
  if (!response.ok) throw await errorFrom(response);
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  // The jobs' envelope: {status, message, data}
  if (options.envelope && body && typeof body === "object" && "data" in body) return body.data;
  return body;
}

export const api = {
  get: (path, query, options = {}) => request("GET", path, { ...options, query }),
  post: (path, json, options = {}) => request("POST", path, { ...options, json }),
  put: (path, json) => request("PUT", path, { json }),
  patch: (path, json) => request("PATCH", path, { json }),
  del: (path) => request("DELETE", path),
};

/** Who is signed in; sets session.mode. Null when a sign-in is needed. */
export async function loadMe() {
  if (!session.access && storedRefresh()) await refreshTokens();
  let response;
  try {
    response = await fetch(`${BASE}/auth/me`, { headers: headers() });
  } catch (error) {
    throw new ApiError(0, "network", String(error));
  }
  if (response.status === 401) {
    session.mode = "token";
    session.me = null;
    return null;
  }
  if (!response.ok) throw await errorFrom(response);
  const me = await response.json();
  session.me = me;
  session.mode = me.via === "none" ? "none" : "token";
  return me;
}

export async function login(username, password) {
  const response = await fetch(`${BASE}/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password }),
  }).catch((error) => {
    throw new ApiError(0, "network", String(error));
  });
  if (!response.ok) throw await errorFrom(response);
  keepTokens(await response.json());
  return loadMe();
}

export async function logout() {
  const refresh = storedRefresh();
  try {
    await fetch(`${BASE}/auth/logout`, {
      method: "POST",
      headers: headers({ "content-type": "application/json" }),
      body: JSON.stringify({ refresh_token: refresh }),
    });
  } catch {
    /* signed out locally anyway */
  }
  storeRefresh(null);
  session.access = null;
  session.me = null;
}

/**
 * POST /api/v1/ask as Server-Sent Events over fetch. onEvent(name, data, arrivedAt) for
 * each event; onChunk() after each network chunk's events (to render once per chunk).
 * Resolves when `done` or `error` arrived; a stream that ends before either (a dropped
 * connection) rejects with ApiError code "stream_cut" after delivering what arrived.
 */
export async function streamAsk(body, { onEvent, onChunk, signal }) {
  const response = await send("POST", `${BASE}/ask`, {
    signal,
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: JSON.stringify({ ...body, stream: true }),
  });
  if (!response.ok) throw await errorFrom(response);
  if (!response.body) throw new ApiError(0, "stream_cut", "no body");
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let finished = false;
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (error) {
      if (error && error.name === "AbortError") throw error;
      if (signal && signal.aborted) throw new DOMException("aborted", "AbortError");
      throw new ApiError(0, "stream_cut", String(error));
    }
    const arrivedAt = performance.now();
    if (chunk.done) break;
    buffer += decoder.decode(chunk.value, { stream: true });
    let boundary;
    while ((boundary = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, boundary);
      buffer = buffer.slice(boundary).replace(/^\r?\n\r?\n/, "");
      const event = parseEvent(block);
      if (!event) continue;
      if (event.name === "done" || event.name === "error") finished = true;
      onEvent(event.name, event.data, arrivedAt);
    }
    if (onChunk) onChunk(arrivedAt);
  }
  if (!finished) throw new ApiError(0, "stream_cut", "the stream ended early");
}

function parseEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const key = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (key === "event") name = value;
    else if (key === "data") data.push(value);
  }
  if (!data.length) return null;
  try {
    return { name, data: JSON.parse(data.join("\n")) };
  } catch {
    return null;
  }
}

/**
 * A multipart upload with progress (XMLHttpRequest: fetch has no upload progress).
 * onProgress(fraction 0..1). Resolves with the JSON answer; rejects with ApiError.
 */
export function upload(path, form, onProgress, retried = false) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url(path));
    if (session.access) xhr.setRequestHeader("authorization", `Bearer ${session.access}`);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable && onProgress) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "network", "upload failed")));
    xhr.addEventListener("load", async () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status === 401 && session.mode === "token" && !retried) {
        if (await refreshTokens()) {
          upload(path, form, onProgress, true).then(resolve, reject);
          return;
        }
        authRequired();
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(body && typeof body === "object" && "data" in body && "status" in body ? body.data : body);
        return;
      }
      const data = body && body.data && typeof body.data === "object" ? body.data : {};
      const code = (body && body.code) || data.code || null;
      reject(new ApiError(xhr.status, code, (body && (body.detail || body.message)) || "", { body }));
    });
    xhr.send(form);
  });
}

function fileNameOf(response, fallback) {
  const disposition = response.headers.get("content-disposition") || "";
  const star = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(disposition);
  if (star) {
    try {
      return decodeURIComponent(star[1].trim());
    } catch {
      /* fall through */
    }
  }
  const plain = /filename\s*=\s*"?([^";]+)"?/i.exec(disposition);
  return plain ? plain[1] : fallback;
}

/** Download a file the API serves (with the access token) under its own name. */
export async function download(path, fallbackName) {
  const response = await send("GET", url(path), {});
  if (!response.ok) throw await errorFrom(response);
  const blob = await response.blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = fileNameOf(response, fallbackName || "download");
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

/** Open an HTML page the API serves (with the access token) in a new tab, from a blob URL. */
export async function openHtml(path) {
  const response = await send("GET", url(path), {});
  if (!response.ok) throw await errorFrom(response);
  const blob = new Blob([await response.blob()], { type: "text/html" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.target = "_blank";
  link.rel = "noopener";
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
}
