// Config vars: names shown, values hidden until "Reveal"; add, edit and remove through
// PATCH /apps/{app}/config-vars (null unsets). A viewer may not read them at all (the API
// answers 403), so the page says so and asks for nothing.

import { api } from "../api.js";
import { busy, clear, h, section, table } from "../dom.js";
import { appFrame } from "./frame.js";

const HIDDEN = "••••••••";

export async function render(main, ctx, name) {
  const frame = await appFrame(main, name, ctx, "/config");
  const errors = h("div", { class: "errors" });
  const holder = h("div", { id: "config" });
  frame.body.append(section("Config vars", errors, holder));

  async function change(patch) {
    await api("PATCH", `${frame.path}/config-vars`, patch);
    clear(errors);
    await load();
  }

  function row(key, value) {
    const shown = h("span", { class: "value hidden", "data-key": key }, HIDDEN);
    const actions = h("td", { class: "actions" });
    if (frame.deploy) {
      let revealed = false;
      const reveal = h("button", { type: "button", class: "small reveal" }, "Reveal");
      reveal.addEventListener("click", () => {
        revealed = !revealed;
        shown.textContent = revealed ? value : HIDDEN;
        shown.classList.toggle("hidden", !revealed);
        reveal.textContent = revealed ? "Hide" : "Reveal";
      });
      const edit = h("button", { type: "button", class: "small edit" }, "Edit");
      edit.addEventListener("click", () => {
        const input = h("textarea", { rows: 2, class: "edit-value", "aria-label": key });
        input.value = value;
        const save = h("button", { type: "submit", class: "small" }, "Save");
        const cancel = h("button", { type: "button", class: "small secondary" }, "Cancel");
        const form = h("form", { class: "inline" }, input, save, cancel);
        cancel.addEventListener("click", () => load());
        form.addEventListener("submit", (event) => {
          event.preventDefault();
          busy(save, () => change({ [key]: input.value }), errors);
        });
        shown.replaceWith(form);
        input.focus();
      });
      const remove = h("button", { type: "button", class: "small danger remove" }, "Remove");
      remove.addEventListener("click", () => {
        if (remove.dataset.armed !== "yes") {
          remove.dataset.armed = "yes"; // a second click confirms: no modal dialogs
          remove.textContent = `Remove ${key}?`;
          return;
        }
        busy(remove, () => change({ [key]: null }), errors);
      });
      actions.append(reveal, edit, remove);
    }
    return h("tr", { "data-key": key }, h("td", {}, h("code", {}, key)), h("td", {}, shown), actions);
  }

  function addForm() {
    const key = h("input", {
      id: "config-key",
      name: "key",
      required: true,
      placeholder: "KEY",
      autocomplete: "off",
      pattern: "[A-Za-z_][A-Za-z0-9_]*",
    });
    const value = h("input", {
      id: "config-value",
      name: "value",
      placeholder: "value",
      autocomplete: "off",
    });
    const add = h("button", { type: "submit", id: "config-add" }, "Add");
    const form = h("form", { class: "inline", id: "config-form" }, key, value, add);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      busy(add, () => change({ [key.value.trim()]: value.value }), errors);
    });
    return form;
  }

  async function load() {
    if (!frame.deploy) {
      const role = frame.role || "no role";
      holder.replaceChildren(
        h("p", { class: "muted", id: "config-refused" },
          `Config vars hold this app's secrets: your role in its team (${role}) cannot read them.`),
      );
      return;
    }
    const vars = await api("GET", `${frame.path}/config-vars`, undefined, { signal: ctx.signal });
    const keys = Object.keys(vars).sort();
    holder.replaceChildren(
      ...[
        keys.length
        ? table(
            ["Name", "Value", ""],
            keys.map((k) => row(k, String(vars[k]))),
            { id: "config-table" },
          )
          : h("p", { class: "muted" }, "No config vars."),
        frame.deploy ? addForm() : null,
      ].filter(Boolean),
    );
  }
  await load();
}
