// The Platform API, called from the page with the session cookie: the same endpoints, the
// same access control and the same audit as the CLI. Changes carry the session's CSRF token.

export const ACCEPT = "application/vnd.heroku+json; version=3";
const CHANGES = new Set(["POST", "PUT", "PATCH", "DELETE"]);

export const session = {
  csrf: null,
  email: null,
  idleTimeout: 900,
  lastInput: Date.now(), // the person's last keystroke, click or touch
};

export class ApiError extends Error {
  constructor(status, id, message) {
    super(message);
    this.status = status;
    this.id = id;
  }
}

let signedOut = () => {};

/** What to do when the API says the session is gone (401). */
export function onSignedOut(handler) {
  signedOut = handler;
}

export function setSession(body) {
  session.csrf = body.csrf_token;
  session.email = body.email;
  session.idleTimeout = Number(body.idle_timeout) || 900;
  session.lastInput = Date.now();
}

export function clearSession() {
  session.csrf = null;
  session.email = null;
}

/** `app` as one path segment. */
export function seg(name) {
  return encodeURIComponent(String(name));
}

/** Call the API: the decoded JSON answer, or an ApiError with the API's own message. */
export async function api(method, path, body, options = {}) {
  const headers = { Accept: ACCEPT };
  if (CHANGES.has(method) && session.csrf) headers["X-CSRF-Token"] = session.csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (options.range) headers.Range = options.range;
  let answer;
  try {
    answer = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
      signal: options.signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "unreachable", "The API could not be reached; try again.");
  }
  const text = await answer.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!answer.ok) {
    const id = (data && data.id) || "error";
    const message = (data && data.message) || `The API answered ${answer.status}.`;
    if (answer.status === 401 && !options.quiet) signedOut(message);
    throw new ApiError(answer.status, id, message);
  }
  return data;
}

/** The URL a stream is read from, on this origin (the API may name itself by another host). */
export function sameOrigin(url) {
  const parsed = new URL(url, location.href);
  return parsed.pathname + parsed.search;
}

/**
 * Read a text stream (build output, a log session) and hand over each complete line as it
 * arrives; resolves when the stream ends, rejects on an error answer.
 */
export async function streamLines(url, onLine, signal) {
  const answer = await fetch(sameOrigin(url), {
    credentials: "same-origin",
    cache: "no-store",
    signal,
  });
  if (!answer.ok || !answer.body) {
    let message = `The stream answered ${answer.status}.`;
    try {
      message = (await answer.json()).message || message;
    } catch {
      // not JSON: the status says enough
    }
    throw new ApiError(answer.status, "stream", message);
  }
  const reader = answer.body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += decoder.decode(value, { stream: true });
    const lines = pending.split("\n");
    pending = lines.pop();
    for (const line of lines) onLine(line);
  }
  pending += decoder.decode();
  if (pending) onLine(pending);
}

/** The caller's role in each team, by team name (GET /teams). */
let rolesCache = null;
export async function roles(force = false) {
  if (!rolesCache || force) {
    const teams = await api("GET", "/teams");
    rolesCache = new Map(teams.map((team) => [team.name, team.role]));
  }
  return rolesCache;
}

export function forgetRoles() {
  rolesCache = null;
}

/** Whether a role may change apps (deploy, config, scale, roll back), as the API decides. */
export function canDeploy(role) {
  return role === "owner" || role === "admin" || role === "member";
}
