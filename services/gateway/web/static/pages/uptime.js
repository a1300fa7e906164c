// The uptime panel of an app's overview: availability over 24 h / 7 d / 30 d from the
// router's probes and the newest incidents (GET /apps/{app}/uptime; network-wirer probes
// every app every 30 s, so the panel refreshes with the dynos' round, not faster).

import { api } from "../api.js";
import { ago, h, table } from "../dom.js";

const SHOWN = 5; // incidents on the overview; `slipway apps:uptime` lists more

// Rounded down, as availability should be: 99.996 shows 99.99 %, never 100.00 %.
function percent(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "–";
  return `${(Math.floor(value * 100) / 100).toFixed(2)} %`;
}

function level(value) {
  if (typeof value !== "number") return "off";
  if (value >= 99.9) return "ok";
  if (value >= 99) return "wait";
  return "bad";
}

function seconds(n) {
  if (n >= 86400) return `${Math.floor(n / 86400)} d`;
  if (n >= 3600) return `${Math.floor(n / 3600)} h`;
  if (n >= 60) return `${Math.floor(n / 60)} min`;
  return `${n} s`;
}

function figures(windows) {
  return h(
    "div",
    { class: "uptime-figures" },
    windows.map((w) =>
      h(
        "div",
        { class: "uptime-figure", "data-period": w.period },
        h("span", { class: `badge ${level(w.availability)}` }, percent(w.availability)),
        h("span", { class: "muted" }, ` ${w.period} · ${w.probes} probes`),
      ),
    ),
  );
}

function incidents(list) {
  if (!list.length) return h("p", { class: "muted" }, "No incidents in the last 30 days.");
  return table(
    ["Started", "Ended", "Lasted", "Codes"],
    list.map((i) =>
      h(
        "tr",
        { "data-open": i.ended_at ? "false" : "true" },
        h("td", {}, ago(i.started_at)),
        h("td", {}, i.ended_at ? ago(i.ended_at) : h("span", { class: "badge bad" }, "ongoing")),
        h("td", {}, seconds(i.duration)),
        h("td", {}, (i.codes || []).join(", ")),
      ),
    ),
    { id: "incident-table" },
  );
}

/** The panel's body and its loader: `load()` fetches and redraws (its errors are the caller's). */
export function uptimePanel(path, signal) {
  const body = h("div", { id: "uptime" });
  async function load() {
    const uptime = await api("GET", `${path}/uptime?incidents=${SHOWN}`, undefined, { signal });
    const note = uptime.probe_interval
      ? `One probe every ${uptime.probe_interval} s through the router.`
      : "Probes are off on this platform.";
    body.replaceChildren(
      figures(uptime.windows || []),
      h("p", { class: "hint" }, note),
      incidents(uptime.incidents || []),
    );
  }
  return { body, load };
}
