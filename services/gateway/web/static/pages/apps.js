// The apps list: every app at once, then each row's dynos and last release as they arrive
// (requests in parallel: with 50 apps the first rows are readable long before the last).

import { api, roles, seg } from "../api.js";
import { ago, busy, clear, h, outLink, section, table } from "../dom.js";

function dynoSummary(dynos) {
  const up = dynos.filter((d) => d.state === "up").length;
  const crashed = dynos.filter((d) => d.state === "crashed").length;
  const other = dynos.length - up - crashed;
  return h(
    "span",
    { class: "dyno-summary" },
    h("span", { class: `badge ${up ? "ok" : "off"}` }, `${up} up`),
    crashed ? h("span", { class: "badge bad" }, `${crashed} crashed`) : null,
    other ? h("span", { class: "badge wait" }, `${other} starting`) : null,
  );
}

async function fill(app, cells, signal) {
  const base = `/apps/${seg(app.name)}`;
  const [dynos, releases] = await Promise.allSettled([
    api("GET", `${base}/dynos`, undefined, { signal }),
    api("GET", `${base}/releases`, undefined, { signal, range: "version ..; order=desc, max=1" }),
  ]);
  cells.dynos.replaceChildren(
    dynos.status === "fulfilled" ? dynoSummary(dynos.value) : h("span", { class: "muted" }, "?"),
  );
  const last = releases.status === "fulfilled" ? releases.value[0] : null;
  cells.release.replaceChildren(
    last ? `v${last.version} · ${ago(last.created_at)}` : h("span", { class: "muted" }, "none"),
  );
}

function createForm(teamNames, onCreated) {
  const name = h("input", {
    id: "new-app-name",
    name: "name",
    required: true,
    placeholder: "my-app",
    pattern: "[a-z][a-z0-9-]{2,29}",
    autocomplete: "off",
  });
  const team = h(
    "select",
    { id: "new-app-team", name: "team" },
    teamNames.map((t) => h("option", { value: t }, t)),
  );
  const submit = h("button", { type: "submit", id: "create-app" }, "Create app");
  const errors = h("div", { class: "errors" });
  const form = h(
    "form",
    { class: "inline", id: "create-form" },
    h("label", { for: "new-app-name" }, "Name"),
    name,
    teamNames.length > 1 ? [h("label", { for: "new-app-team" }, "Team"), team] : null,
    submit,
    errors,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(
      submit,
      async () => {
        const body = { name: name.value.trim() };
        if (teamNames.length > 1) body.team = team.value;
        const created = await api("POST", "/apps", body);
        clear(errors);
        onCreated(created);
      },
      errors,
    );
  });
  return form;
}

export async function render(main, ctx) {
  const [list, teamRoles] = await Promise.all([
    api("GET", "/apps", undefined, { signal: ctx.signal }),
    roles(),
  ]);
  const deployable = [...teamRoles].filter(([, r]) => r !== "viewer").map(([n]) => n);
  const rows = list
    .slice()
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((app) => {
      const cells = {
        dynos: h("td", {}, h("span", { class: "muted" }, "…")),
        release: h("td", {}, h("span", { class: "muted" }, "…")),
      };
      fill(app, cells, ctx.signal).catch(() => {});
      return h(
        "tr",
        { "data-app": app.name },
        h("td", {}, h("a", { href: `#/apps/${seg(app.name)}`, class: "app-link" }, app.name)),
        h("td", {}, app.team ? app.team.name : ""),
        cells.dynos,
        cells.release,
        h("td", {}, outLink(app.web_url)),
      );
    });
  const content = [
    h("h1", {}, "Apps"),
    deployable.length
      ? section(
          "New app",
          createForm(deployable, (created) => (location.hash = `#/apps/${seg(created.name)}`)),
        )
      : null,
    rows.length
      ? table(["App", "Team", "Dynos", "Last release", "URL"], rows, { id: "apps" })
      : h("p", { class: "muted", id: "no-apps" }, "No apps yet."),
  ];
  clear(main).append(...content);
}

