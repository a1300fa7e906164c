// Live logs: a log session (POST /apps/{app}/log-sessions, tail) read as a stream; the
// filters (source, dyno) start a new session. Lines are text nodes, whatever they contain.

import { api, streamLines } from "../api.js";
import { busy, clear, h, section } from "../dom.js";
import { appFrame } from "./frame.js";

const KEEP = 2000; // lines kept on screen

export async function render(main, ctx, name) {
  const frame = await appFrame(main, name, ctx, "/logs");
  const source = h(
    "select",
    { id: "log-source", name: "source" },
    h("option", { value: "" }, "all sources"),
    h("option", { value: "app" }, "app"),
    h("option", { value: "heroku" }, "heroku (router, platform)"),
  );
  const dyno = h("input", {
    id: "log-dyno",
    name: "dyno",
    placeholder: "dyno (web.1, router…)",
    autocomplete: "off",
    size: 14,
  });
  const apply = h("button", { type: "submit", id: "log-apply" }, "Apply");
  const clearButton = h("button", { type: "button", class: "secondary" }, "Clear");
  const state = h("span", { id: "log-state", class: "muted" });
  const errors = h("div", { class: "errors" });
  const lines = h("div", { id: "log-lines", class: "output logs", role: "log" });
  const filters = h("form", { class: "inline", id: "log-filters" }, source, dyno, apply, clearButton, state);
  frame.body.append(section("Logs", filters, errors, lines));
  clearButton.addEventListener("click", () => clear(lines));

  let session = null;

  function addLine(text) {
    const atBottom = lines.scrollHeight - lines.scrollTop - lines.clientHeight < 40;
    lines.append(h("div", { class: "line" }, text));
    while (lines.childElementCount > KEEP) lines.firstElementChild.remove();
    if (atBottom) lines.scrollTop = lines.scrollHeight;
  }

  async function start() {
    if (session) session.abort();
    session = new AbortController();
    ctx.signal.addEventListener("abort", () => session.abort());
    const mine = session;
    const body = { tail: true, lines: 100 };
    if (source.value) body.source = source.value;
    if (dyno.value.trim()) body.dyno = dyno.value.trim();
    const made = await api("POST", `${frame.path}/log-sessions`, body, { signal: mine.signal });
    clear(errors);
    clear(lines);
    state.textContent = "live";
    state.className = "badge ok";
    streamLines(made.logplex_url, addLine, mine.signal)
      .then(() => {
        if (!mine.signal.aborted) {
          state.textContent = "ended";
          state.className = "badge off";
        }
      })
      .catch((error) => {
        if (error.name === "AbortError") return;
        state.textContent = "stopped";
        state.className = "badge bad";
        errors.replaceChildren(h("p", { class: "error" }, error.message));
      });
  }

  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(apply, start, errors);
  });
  await start();
}
