// Releases, newest first, with a rollback button for each earlier release that has an image
// (a release made before the first push has none: the API refuses to roll back to it).

import { api } from "../api.js";
import { ago, busy, h, section, table } from "../dom.js";
import { appFrame } from "./frame.js";

export async function render(main, ctx, name) {
  const frame = await appFrame(main, name, ctx, "/releases");
  const errors = h("div", { class: "errors" });
  const holder = h("div", { id: "releases" });
  frame.body.append(section("Releases", errors, holder));

  async function load() {
    const releases = await api("GET", `${frame.path}/releases`, undefined, {
      signal: ctx.signal,
      range: "version ..; order=desc, max=50",
    });
    const rows = releases.map((r) => {
      let action = null;
      if (frame.deploy && !r.current && r.image && r.status === "succeeded") {
        const button = h(
          "button",
          { type: "button", class: "small rollback", "data-version": r.version },
          `Roll back to v${r.version}`,
        );
        button.addEventListener("click", () =>
          busy(
            button,
            async () => {
              await api("POST", `${frame.path}/releases`, { release: r.id });
              errors.replaceChildren();
              await load();
            },
            errors,
          ),
        );
        action = button;
      }
      return h(
        "tr",
        { "data-version": r.version, class: r.current ? "current" : null },
        h("td", {}, `v${r.version}`),
        h("td", {}, r.description),
        h(
          "td",
          {},
          h("span", { class: `badge ${r.status === "succeeded" ? "ok" : "wait"}` }, r.status),
          r.current ? h("span", { class: "badge ok" }, "current") : null,
        ),
        h("td", {}, r.user ? r.user.email : ""),
        h("td", {}, ago(r.created_at)),
        h("td", {}, action),
      );
    });
    holder.replaceChildren(
      table(["Version", "Description", "Status", "By", "When", ""], rows, { id: "release-table" }),
    );
  }
  await load();
}
