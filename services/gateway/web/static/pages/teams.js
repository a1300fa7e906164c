// Teams: the caller's teams with their role, and each team's members and roles.

import { api, seg } from "../api.js";
import { ago, clear, h, section, table } from "../dom.js";

export async function list(main, ctx) {
  const teams = await api("GET", "/teams", undefined, { signal: ctx.signal });
  clear(main).append(
    h("h1", {}, "Teams"),
    table(
      ["Team", "Your role", ""],
      teams.map((t) =>
        h(
          "tr",
          { "data-team": t.name },
          h("td", {}, h("a", { href: `#/teams/${seg(t.name)}` }, t.name)),
          h("td", {}, t.role || "–"),
          h("td", {}, h("a", { href: `#/teams/${seg(t.name)}/audit` }, "Audit log")),
        ),
      ),
      { id: "team-table" },
    ),
  );
}

export async function render(main, ctx, name) {
  const members = await api("GET", `/teams/${seg(name)}/members`, undefined, {
    signal: ctx.signal,
  });
  clear(main).append(
    h("h1", {}, name),
    h("nav", { class: "tabs" }, h("a", { href: `#/teams/${seg(name)}`, class: "active" }, "Members"), h("a", { href: `#/teams/${seg(name)}/audit` }, "Audit log")),
    section(
      "Members",
      table(
        ["Email", "Role", "Since"],
        members.map((m) =>
          h(
            "tr",
            { "data-email": m.email },
            h("td", {}, m.email),
            h("td", {}, h("span", { class: "role" }, m.role)),
            h("td", {}, ago(m.created_at)),
          ),
        ),
        { id: "member-table" },
      ),
    ),
  );
}
