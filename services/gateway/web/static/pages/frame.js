// What every page of one app shares: its name, URL, team and the caller's role, and tabs.

import { api, canDeploy, roles, seg } from "../api.js";
import { clear, h, outLink } from "../dom.js";

const TABS = [
  ["", "Overview"],
  ["/releases", "Releases"],
  ["/config", "Config"],
  ["/activity", "Activity"],
  ["/logs", "Logs"],
  ["/metrics", "Metrics"],
];

/** Load the app and the caller's role; draw its header and tabs; the page's own body. */
export async function appFrame(main, name, ctx, active) {
  const [app, teamRoles] = await Promise.all([
    api("GET", `/apps/${seg(name)}`, undefined, { signal: ctx.signal }),
    roles(),
  ]);
  const role = (app.team && teamRoles.get(app.team.name)) || null;
  const base = `#/apps/${seg(app.name)}`;
  const body = h("div", { class: "page-body" });
  clear(main).append(
    h(
      "div",
      { class: "app-head" },
      h("h1", { id: "app-name" }, app.name),
      h(
        "p",
        { class: "meta" },
        outLink(app.web_url),
        " · team ",
        app.team ? h("a", { href: `#/teams/${seg(app.team.name)}` }, app.team.name) : "–",
        " · ",
        h("span", { id: "role", class: "role" }, role ? `you are ${role}` : "read only"),
      ),
    ),
    h(
      "nav",
      { class: "tabs", "aria-label": "app" },
      TABS.map(([path, title]) =>
        h("a", { href: base + path, class: path === active ? "active" : null }, title),
      ),
    ),
    body,
  );
  return { app, role, deploy: canDeploy(role), body, path: `/apps/${seg(app.name)}` };
}

/** Call `work` every `seconds` until the page goes away; errors wait for the next round. */
export function every(seconds, ctx, work) {
  const timer = setInterval(() => {
    if (!document.hidden) work().catch(() => {});
  }, seconds * 1000);
  ctx.signal.addEventListener("abort", () => clearInterval(timer));
}
