// Talking to the PetCam API: the session's token, JSON calls, uploads with progress, and errors in plain words.

const TOKEN_KEY = "petcam.token";
const USER_KEY = "petcam.username";

// An answer the API refused (or no answer at all: status 0). `lines` says why, as the API worded it.
export class ApiError extends Error {
  constructor(status, detail, retryAfter = null) {
    const lines = describe(status, detail, retryAfter);
    super(lines.join("\n"));
    this.status = status;
    this.detail = detail;
    this.retryAfter = retryAfter;
    this.lines = lines;
  }
  get retriable() {
    return this.status === 0 || this.status === 429 || this.status === 503;
  }
}

// "body","new_password" -> "New password"
function fieldName(loc) {
  const parts = (Array.isArray(loc) ? loc : [loc]).filter((p) => !["body", "query", "path", "header"].includes(p));
  if (!parts.length) return "";
  const name = String(parts.join(" ")).replace(/_/g, " ");
  return name.charAt(0).toUpperCase() + name.slice(1);
}

function seconds(s) {
  return s === 1 ? "1 second" : `${s} seconds`;
}

// The detail of a refusal as lines a person can read: a string as it is, a 422 list as one line per field.
export function describe(status, detail, retryAfter) {
  let lines;
  if (Array.isArray(detail)) {
    lines = detail.map((e) => {
      const field = fieldName(e && e.loc);
      const msg = (e && e.msg) || "is not valid";
      return field ? `${field}: ${msg}` : msg;
    });
  } else if (typeof detail === "string" && detail) {
    lines = [detail];
  } else {
    lines = [];
  }
  const wait = retryAfter != null ? ` Try again in ${seconds(retryAfter)}.` : " Try again shortly.";
  switch (status) {
    case 0:
      return ["Could not reach the server. Check your connection and try again."];
    case 413:
      return [lines[0] || "Too large: the server refused a file this big."];
    case 429:
      return [`Too many requests (${lines[0] || "rate limited"}).${wait}`];
    case 503:
      return [`The server is busy${lines[0] ? ` (${lines[0]})` : ""}.${wait}`];
    case 500:
      return [lines[0] && lines[0] !== "Internal Server Error" ? lines[0] : "Something went wrong on the server."];
    default:
      return lines.length ? lines : [`The server answered ${status}.`];
  }
}

function retryAfterOf(value) {
  const n = Number.parseInt(value || "", 10);
  return Number.isFinite(n) && n >= 0 ? n : null;
}

function parseBody(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

// The payload of a JWT (no verification: the server does that), for its `exp`.
function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return {};
  }
}

// The signed-in session: the token lives in sessionStorage (this tab only, gone when it closes), never a cookie.
// When it expires or the server stops accepting it, `onSignedOut` hears why.
export class Session {
  constructor() {
    this.holding = false;
    this.token = sessionStorage.getItem(TOKEN_KEY);
    this.username = sessionStorage.getItem(USER_KEY) || "";
    this.onSignedOut = () => {};
    this.timer = null;
    this.armExpiry();
  }

  get signedIn() {
    return Boolean(this.token);
  }

  set(token, username) {
    this.token = token;
    this.username = username;
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(USER_KEY, username);
    this.armExpiry();
  }

  clear() {
    this.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(USER_KEY);
    clearTimeout(this.timer);
  }

  // Signs out with a message for the sign-in page (once, however many calls fail together).
  end(message) {
    if (!this.token) return;
    this.clear();
    this.onSignedOut(message);
  }

  armExpiry() {
    clearTimeout(this.timer);
    if (!this.token) return;
    const exp = tokenClaims(this.token).exp;
    if (typeof exp !== "number") return;
    const ms = exp * 1000 - Date.now();
    if (ms <= 0) {
      queueMicrotask(() => this.end("Your session has expired. Please sign in again."));
      return;
    }
    // setTimeout holds at most ~24.8 days.
    this.timer = setTimeout(() => this.end("Your session has expired. Please sign in again."), Math.min(ms, 2 ** 31 - 1));
  }

  authHeaders() {
    return this.token ? { Authorization: `Bearer ${this.token}` } : {};
  }

  // A 401 on a call made with our current token (`used`): the token is no longer good. An answer to a token
  // replaced since, or one that comes while `holding` (a password change swaps the token), says nothing.
  refused(status, detail, used = this.token) {
    if (status !== 401 || !this.token || used !== this.token || this.holding) return;
    const why = detail === "Could not validate credentials" ? "Your session has ended" : detail || "Signed out";
    this.end(`${why}. Please sign in again.`);
  }
}

export const session = new Session();

// fetch() with the token; resolves to the Response when it is 2xx or 304, else throws ApiError.
export async function request(path, { method = "GET", json, form, headers = {}, signal, auth = true } = {}) {
  const used = session.token;
  const init = { method, headers: { ...(auth ? session.authHeaders() : {}), ...headers }, signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = new URLSearchParams(form);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, null);
  }
  if (response.ok || response.status === 304) return response;
  const text = await response.text().catch(() => "");
  const body = parseBody(text);
  const detail = body && "detail" in body ? body.detail : null;
  if (auth) session.refused(response.status, detail, used);
  throw new ApiError(response.status, detail, retryAfterOf(response.headers.get("Retry-After")));
}

export async function getJson(path, options) {
  return (await request(path, options)).json();
}

export async function getBlob(path, options) {
  return (await request(path, options)).blob();
}

export async function signIn(username, password) {
  const body = await getJson("/token", { method: "POST", form: { username, password }, auth: false });
  session.set(body.access_token, username);
}

export async function register(username, password) {
  await getJson("/register", { method: "POST", json: { username, password }, auth: false });
}

// A UUID v4 for Idempotency-Key (crypto.randomUUID needs a secure context; a phone on the LAN may not have one).
export function newKey() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// A multipart/form-data body built once, so that a retry sends the very same bytes (FormData would pick a new
// boundary each time, and the server compares a retried request with the first). fields: [name, string | File].
export function multipart(fields) {
  const boundary = `----petcam-${newKey()}`;
  const quote = (v) => v.replace(/"/g, "%22").replace(/\r/g, "%0D").replace(/\n/g, "%0A");
  const parts = [];
  for (const [name, value] of fields) {
    if (value instanceof Blob) {
      parts.push(`--${boundary}\r\nContent-Disposition: form-data; name="${quote(name)}"; filename="${quote(value.name || "blob")}"\r\n`);
      parts.push(`Content-Type: ${value.type || "application/octet-stream"}\r\n\r\n`, value, "\r\n");
    } else {
      parts.push(`--${boundary}\r\nContent-Disposition: form-data; name="${quote(name)}"\r\n\r\n${value}\r\n`);
    }
  }
  parts.push(`--${boundary}--\r\n`);
  return { body: new Blob(parts), contentType: `multipart/form-data; boundary=${boundary}` };
}

// POST a multipart() body with upload progress (fetch has none): onProgress(sent, total). Resolves to the JSON
// body. The same key on a retry makes the server answer the first answer again instead of storing a second photo.
export function upload(path, { body, contentType }, { onProgress = () => {}, key, signal } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const used = session.token;
    xhr.open("POST", path);
    for (const [k, v] of Object.entries(session.authHeaders())) xhr.setRequestHeader(k, v);
    xhr.setRequestHeader("Content-Type", contentType);
    if (key) xhr.setRequestHeader("Idempotency-Key", key);
    xhr.responseType = "text";
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : 0);
    xhr.onload = () => {
      const body = parseBody(xhr.responseText);
      if (xhr.status >= 200 && xhr.status < 300 && body) {
        resolve(body);
        return;
      }
      const detail = body && "detail" in body ? body.detail : null;
      session.refused(xhr.status, detail, used);
      reject(new ApiError(xhr.status, detail, retryAfterOf(xhr.getResponseHeader("Retry-After"))));
    };
    // A body far over the server's limit is cut off without an answer.
    xhr.onerror = () => reject(new ApiError(0, null));
    xhr.onabort = () => reject(new DOMException("Upload cancelled", "AbortError"));
    if (signal) signal.addEventListener("abort", () => xhr.abort(), { once: true });
    xhr.send(body);
  });
}
