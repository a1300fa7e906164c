// An app's overview: formation (with scale controls for those who may deploy), its dynos
// with state, CPU and memory (GET /apps/{app}/metrics), and its domains.

import { api, seg } from "../api.js";
import { ago, busy, clear, fmt, h, section, table } from "../dom.js";
import { appFrame, every } from "./frame.js";
import { uptimePanel } from "./uptime.js";

function formationRows(frame, formation, errors, refresh) {
  return formation.map((f) => {
    let control = h("span", {}, String(f.quantity));
    if (frame.deploy) {
      const quantity = h("input", {
        type: "number",
        min: 0,
        max: 100,
        value: f.quantity,
        class: "qty",
        name: `quantity-${f.type}`,
        "aria-label": `${f.type} dynos`,
      });
      const scale = h("button", { type: "submit", class: "small" }, "Scale");
      control = h("form", { class: "inline scale", "data-type": f.type }, quantity, scale);
      control.addEventListener("submit", (event) => {
        event.preventDefault();
        busy(
          scale,
          async () => {
            const wanted = Number(quantity.value);
            await api("PATCH", `${frame.path}/formation/${seg(f.type)}`, { quantity: wanted });
            clear(errors);
            await refresh();
          },
          errors,
        );
      });
    }
    return h(
      "tr",
      { "data-type": f.type },
      h("td", {}, f.type),
      h("td", { class: "quantity" }, control),
      h("td", {}, f.size),
      h("td", {}, h("code", {}, f.command)),
    );
  });
}

function dynoRows(dynos, samples) {
  const byName = new Map(samples.map((sample) => [sample.dyno, sample]));
  return dynos
    .slice()
    .sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }))
    .map((d) => {
      const sample = byName.get(d.name);
      const memory = sample
        ? `${fmt(sample.memory_total_mb, 0)} / ${fmt(sample.memory_quota_mb, 0)} MB`
        : "–";
      return h(
        "tr",
        { "data-dyno": d.name, "data-state": d.state },
        h("td", {}, d.name),
        h("td", {}, h("span", { class: `badge ${stateClass(d.state)}` }, d.state)),
        h("td", {}, d.release ? `v${d.release.version}` : ""),
        h("td", { class: "num" }, sample ? `${fmt(sample.cpu_percent)} %` : "–"),
        h("td", { class: "num" }, memory),
        h("td", { class: "num" }, String(d.restart_count ?? 0)),
        h("td", {}, ago(d.updated_at)),
      );
    });
}

function stateClass(state) {
  if (state === "up") return "ok";
  if (state === "crashed") return "bad";
  return "wait";
}

export async function render(main, ctx, name) {
  const frame = await appFrame(main, name, ctx, "");
  const signal = ctx.signal;
  const errors = h("div", { class: "errors" });
  const formationBody = h("div", { id: "formation" });
  const dynosBody = h("div", { id: "dynos" });
  const domainsBody = h("div", { id: "domains" });
  const uptime = uptimePanel(frame.path, signal);

  async function loadDynos() {
    const [dynos, metrics] = await Promise.all([
      api("GET", `${frame.path}/dynos`, undefined, { signal }),
      api("GET", `${frame.path}/metrics`, undefined, { signal }).catch(() => ({ dynos: [] })),
    ]);
    dynosBody.replaceChildren(
      dynos.length
        ? table(
            ["Dyno", "State", "Release", "CPU", "Memory", "Restarts", "Since"],
            dynoRows(dynos, metrics.dynos || []),
            { id: "dyno-table" },
          )
        : h("p", { class: "muted" }, "No dynos running."),
    );
  }

  async function loadFormation() {
    const formation = await api("GET", `${frame.path}/formation`, undefined, { signal });
    formationBody.replaceChildren(
      formation.length
        ? table(
            ["Type", "Dynos", "Size", "Command"],
            formationRows(frame, formation, errors, async () => {
              await loadFormation();
              await loadDynos();
            }),
            { id: "formation-table" },
          )
        : h("p", { class: "muted" }, "No process types yet: push code to make a release."),
    );
  }

  async function loadDomains() {
    const domains = await api("GET", `${frame.path}/domains`, undefined, { signal });
    domainsBody.replaceChildren(
      table(
        ["Hostname", "Kind", "Status"],
        domains.map((d) =>
          h("tr", {}, h("td", {}, d.hostname), h("td", {}, d.kind), h("td", {}, d.status)),
        ),
      ),
    );
  }

  frame.body.append(
    section("Formation", errors, formationBody),
    section("Dynos", dynosBody),
    section("Domains", domainsBody),
    section("Uptime", uptime.body),
  );
  // Uptime is network-wirer's: the page renders without it when it does not answer.
  uptime.load().catch(() => {});
  await Promise.all([loadFormation(), loadDynos(), loadDomains().catch(() => {})]);
  // bench/dashboard.py times the first render from the navigation's start to this mark.
  performance.mark("overview-rendered");
  // Every 5 s: dynos change state within seconds; two requests a round stay well inside the
  // API rate limit (the page stops when the person idles out or leaves).
  every(5, ctx, loadDynos);
  // Probes come every 30 s: a refresh at that pace shows each round without a burst of reads.
  every(30, ctx, uptime.load);
}
