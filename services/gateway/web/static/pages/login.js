// Sign-in: with an API token, or with the one-time link `slipway login --web` prints
// (`#/login/<code>`), which asks for the email the link was made for.

import { api } from "../api.js";
import { busy, clear, h } from "../dom.js";
import { takeNotice, welcome } from "../app.js";

function noticeLine() {
  const said = takeNotice();
  return said ? h("p", { class: "notice", id: "notice", role: "status" }, said) : null;
}

export function signIn(main) {
  const token = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    required: true,
    placeholder: "slp_…",
  });
  const submit = h("button", { type: "submit", id: "sign-in" }, "Sign in");
  const errors = h("div", { class: "errors" });
  const form = h(
    "form",
    { class: "card narrow", id: "token-form" },
    h("h1", {}, "Sign in to Slipway"),
    noticeLine(),
    h("label", { for: "token" }, "API token"),
    token,
    submit,
    errors,
    h(
      "p",
      { class: "hint" },
      "Or run ",
      h("code", {}, "slipway login --web"),
      " and open the one-time link it prints.",
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(
      submit,
      async () => {
        const body = await api("POST", "/account/web-sessions", { token: token.value.trim() }, {
          quiet: true,
        });
        token.value = "";
        welcome(body);
      },
      errors,
    );
  });
  clear(main).append(form);
  token.focus();
}

export function signInWithLink(main, ctx, code) {
  const email = h("input", {
    id: "email",
    name: "email",
    type: "email",
    autocomplete: "username",
    required: true,
  });
  const submit = h("button", { type: "submit", id: "sign-in" }, "Sign in");
  const errors = h("div", { class: "errors" });
  const form = h(
    "form",
    { class: "card narrow", id: "link-form" },
    h("h1", {}, "Sign in with a login link"),
    noticeLine(),
    h("p", {}, "Enter the email of the account that made this link."),
    h("label", { for: "email" }, "Email"),
    email,
    submit,
    errors,
    h("p", { class: "hint" }, h("a", { href: "#/login" }, "Sign in with a token instead")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(
      submit,
      async () => {
        const body = await api(
          "POST",
          "/account/web-sessions",
          { email: email.value.trim(), code },
          { quiet: true },
        );
        welcome(body); // replaces the link's address: the used code leaves the history
      },
      errors,
    );
  });
  clear(main).append(form);
  email.focus();
}

