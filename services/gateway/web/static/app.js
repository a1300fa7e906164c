// The dashboard's shell: the session, the hash router, the header, the idle timeout.
// Pages live in pages/*.js; each renders into <main> and stops its streams and polls when
// `ctx.signal` aborts (the person went to another page).

import { api, clearSession, forgetRoles, onSignedOut, session, setSession } from "./api.js";
import { h, clear } from "./dom.js";
import * as login from "./pages/login.js";
import * as apps from "./pages/apps.js";
import * as overview from "./pages/overview.js";
import * as releases from "./pages/releases.js";
import * as config from "./pages/config.js";
import * as activity from "./pages/activity.js";
import * as logs from "./pages/logs.js";
import * as metrics from "./pages/metrics.js";
import * as teams from "./pages/teams.js";
import * as audit from "./pages/audit.js";

const ROUTES = [
  [/^#\/login$/, login.signIn, true],
  [/^#\/login\/([^/]+)$/, login.signInWithLink, true],
  [/^#\/apps$/, apps.render],
  [/^#\/apps\/([^/]+)$/, overview.render],
  [/^#\/apps\/([^/]+)\/releases$/, releases.render],
  [/^#\/apps\/([^/]+)\/config$/, config.render],
  [/^#\/apps\/([^/]+)\/activity$/, activity.render],
  [/^#\/apps\/([^/]+)\/logs$/, logs.render],
  [/^#\/apps\/([^/]+)\/metrics$/, metrics.render],
  [/^#\/teams$/, teams.list],
  [/^#\/teams\/([^/]+)$/, teams.render],
  [/^#\/teams\/([^/]+)\/audit$/, audit.render],
];

const main = document.getElementById("main");
let current = null; // the AbortController of the page on screen
let notice = ""; // why the person was sent to the sign-in page
let after = "#/apps"; // where to go once signed in

function decode(part) {
  try {
    return decodeURIComponent(part);
  } catch {
    return null;
  }
}

export function signedIn() {
  return session.csrf !== null;
}

/** Go to the sign-in page, saying why. */
export function toSignIn(reason) {
  clearSession();
  forgetRoles();
  notice = reason || "";
  header();
  if (!location.hash.startsWith("#/login")) {
    after = location.hash || "#/apps";
    location.hash = "#/login";
  } else {
    route();
  }
}

export function takeNotice() {
  const said = notice;
  notice = "";
  return said;
}

/** Signed in: remember the session, go where the person was going. */
export function welcome(body) {
  setSession(body);
  header();
  location.replace(after.startsWith("#/login") ? "#/apps" : after);
}

function header() {
  const nav = clear(document.getElementById("nav"));
  const who = clear(document.getElementById("who"));
  if (!signedIn()) return;
  nav.append(h("a", { href: "#/apps" }, "Apps"), h("a", { href: "#/teams" }, "Teams"));
  const out = h("button", { type: "button", class: "link", id: "sign-out" }, "Sign out");
  const everywhere = h(
    "button",
    { type: "button", class: "link", id: "sign-out-everywhere" },
    "Sign out everywhere",
  );
  out.addEventListener("click", () => signOut("/account/web-sessions/current", "Signed out."));
  everywhere.addEventListener("click", () =>
    signOut("/account/web-sessions", "Signed out of every browser."),
  );
  who.append(h("span", { class: "email" }, session.email || ""), out, everywhere);
}

let signingOut = false; // a poll answered 401 meanwhile must not replace the reason given

async function signOut(path, said) {
  signingOut = true;
  try {
    await api("DELETE", path, undefined, { quiet: true });
  } catch {
    // already gone on the server: signed out either way
  }
  after = "#/apps";
  toSignIn(said);
  signingOut = false;
}

function route() {
  if (current) current.abort();
  current = new AbortController();
  const hash = location.hash || "#/apps";
  for (const [pattern, page, open] of ROUTES) {
    const match = pattern.exec(hash);
    if (!match) continue;
    if (!open && !signedIn()) {
      toSignIn("");
      return;
    }
    const params = match.slice(1).map(decode);
    if (params.includes(null)) break;
    clear(main);
    main.append(h("p", { class: "loading" }, "Loading…"));
    highlight(hash);
    Promise.resolve(page(main, { signal: current.signal }, ...params)).catch((error) => {
      if (error && error.name === "AbortError") return;
      if (error && error.status === 401) return; // on its way to the sign-in page
      clear(main).append(h("p", { class: "error", role: "alert" }, error.message || String(error)));
    });
    return;
  }
  clear(main).append(h("h1", {}, "Not found"), h("p", {}, "No such page."));
}

function highlight(hash) {
  for (const link of document.querySelectorAll("#nav a")) {
    const target = link.getAttribute("href");
    link.classList.toggle("active", hash === target || hash.startsWith(`${target}/`));
  }
}

// Idle timeout: the person's own input counts, not the page's polling (which would keep a
// forgotten session alive for ever). Past the session's idle time, sign out here too.
for (const kind of ["keydown", "pointerdown", "touchstart", "wheel"]) {
  window.addEventListener(kind, () => (session.lastInput = Date.now()), { passive: true });
}

export function idle() {
  return Date.now() - session.lastInput > session.idleTimeout * 1000;
}

function plural(count, unit) {
  return `${count} ${unit}${count === 1 ? "" : "s"}`;
}

setInterval(() => {
  if (signedIn() && idle()) {
    const minutes = Math.round(session.idleTimeout / 60);
    const idleFor = minutes
      ? plural(minutes, "minute")
      : plural(Math.round(session.idleTimeout), "second");
    signOut("/account/web-sessions/current", `Signed out after ${idleFor} idle.`);
  }
}, 10000);

onSignedOut((message) => {
  if (!signingOut) toSignIn(message);
});

async function boot() {
  try {
    // Bounded: a check that never answers must not leave the page on "Loading…".
    const signal = AbortSignal.timeout(10000);
    setSession(await api("GET", "/account/web-sessions/current", undefined, { quiet: true, signal }));
  } catch {
    clearSession();
  }
  header();
  window.addEventListener("hashchange", route);
  if (!location.hash) location.replace("#/apps");
  route();
}

boot();
