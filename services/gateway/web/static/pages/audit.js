// A team's audit log and its verification, computed here in the browser from the entries,
// the signed checkpoints and the platform's public keys (auditchain.js), not taken on trust.

import { api, seg } from "../api.js";
import { verifyChain } from "../auditchain.js";
import { clear, h, section, table } from "../dom.js";

function details(value) {
  if (!value || typeof value !== "object") return "";
  return Object.entries(value)
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
}

/** The verdict as a person reads it. */
export function verdictText(verdict) {
  if (verdict.ok) {
    return `Verified through entry ${verdict.entries} (${verdict.checkpoints} signed checkpoints).`;
  }
  return `Broken at entry ${verdict.broken_at}: ${verdict.reason}.`;
}

export async function render(main, ctx, name) {
  const [log, keys] = await Promise.all([
    api("GET", `/teams/${seg(name)}/audit`, undefined, { signal: ctx.signal }),
    api("GET", "/audit/keys", undefined, { signal: ctx.signal }),
  ]);
  const status = h("p", { id: "audit-status", class: "verdict", role: "status" }, "Verifying…");
  const rows = log.entries
    .slice()
    .reverse()
    .map((e) =>
      h(
        "tr",
        { "data-seq": e.seq },
        h("td", { class: "num" }, String(e.seq)),
        h("td", { class: "when" }, e.at),
        h("td", {}, e.actor),
        h("td", {}, h("code", {}, e.action)),
        h("td", {}, e.app || ""),
        h("td", {}, e.source_ip || ""),
        h("td", { class: "details" }, details(e.details)),
      ),
    );
  clear(main).append(
    h("h1", {}, `${name}: audit log`),
    h("nav", { class: "tabs" }, h("a", { href: `#/teams/${seg(name)}` }, "Members"), h("a", { href: `#/teams/${seg(name)}/audit`, class: "active" }, "Audit log")),
    section(
      "Verification",
      status,
      h("p", { class: "hint" }, "Recomputed in this browser: every entry's SHA-256 chain hash and every checkpoint's Ed25519 signature, with the keys of GET /audit/keys."),
    ),
    section("Entries", table(["#", "At", "Actor", "Action", "App", "From", "Details"], rows, { id: "audit-table" })),
  );
  try {
    const verdict = await verifyChain(log.entries, log.checkpoints, keys);
    status.textContent = verdictText(verdict);
    status.classList.add(verdict.ok ? "ok" : "bad");
    status.dataset.ok = String(verdict.ok);
    if (!verdict.ok) {
      const bad = main.querySelector(`tr[data-seq="${Number(verdict.broken_at)}"]`);
      if (bad) bad.classList.add("broken");
    }
  } catch (error) {
    status.textContent = `Not verified: ${error.message}`;
    status.classList.add("bad");
    status.dataset.ok = "false";
  }
}
