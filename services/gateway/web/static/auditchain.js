// The audit chain checked in the browser, exactly as `slipway.libs.auditchain.verify` does:
// canonical(entry) = JSON with keys sorted (by code point, recursively), no whitespace, every
// field present (nulls included); h_i = SHA-256(h_{i-1} || canonical(entry_i)), h_0 = 32 zero
// bytes; each checkpoint is an Ed25519 signature over
// "slipway-audit-checkpoint/v1\n{team_id}\n{seq}\n{head}"; the newest entry must be covered.

const FIELDS = {
  // name: [kind, default] — AuditEntry's fields; a missing field with no default is unreadable.
  seq: ["int", undefined],
  team_id: ["str", undefined],
  at: ["str", undefined],
  actor: ["str", undefined],
  action: ["str", undefined],
  app: ["str?", null],
  source_ip: ["str?", null],
  request_id: ["str?", null],
  details: ["dict", {}],
};

function byCodePoint(a, b) {
  // Python sorts strings by code point; JavaScript's default compares UTF-16 units.
  const x = Array.from(a);
  const y = Array.from(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

function encode(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return `[${value.map(encode).join(",")}]`;
  if (typeof value === "object") {
    const keys = Object.keys(value).sort(byCodePoint);
    return `{${keys.map((k) => `${JSON.stringify(k)}:${encode(value[k])}`).join(",")}}`;
  }
  // Strings: JSON.stringify escapes as msgspec does (\" \\ \b \f \n \r \t, \u00xx for the
  // other control characters, everything else as UTF-8). Integers print the same.
  return JSON.stringify(value);
}

/** The entry as AuditEntry reads it (extra fields dropped), or a reason it cannot be read. */
export function readEntry(raw) {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    return { error: "entry is not an object" };
  }
  const entry = {};
  for (const [name, [kind, fallback]] of Object.entries(FIELDS)) {
    let value = raw[name];
    if (value === undefined) {
      if (fallback === undefined) return { error: `missing required field \`${name}\`` };
      value = fallback;
    }
    const ok =
      (kind === "int" && Number.isSafeInteger(value)) ||
      (kind === "str" && typeof value === "string") ||
      (kind === "str?" && (value === null || typeof value === "string")) ||
      (kind === "dict" &&
        value !== null &&
        typeof value === "object" &&
        !Array.isArray(value) &&
        Object.values(value).every((v) => typeof v === "string"));
    if (!ok) return { error: `field \`${name}\` has the wrong type` };
    entry[name] = value;
  }
  return { entry };
}

export function canonical(entry) {
  return new TextEncoder().encode(encode(entry));
}

export function hex(bytes) {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

function unhex(text) {
  if (typeof text !== "string" || text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) {
    return null;
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

async function link(previous, entry) {
  const body = canonical(entry);
  const joined = new Uint8Array(previous.length + body.length);
  joined.set(previous, 0);
  joined.set(body, previous.length);
  return new Uint8Array(await crypto.subtle.digest("SHA-256", joined));
}

export function checkpointMessage(teamId, seq, head) {
  return new TextEncoder().encode(`slipway-audit-checkpoint/v1\n${teamId}\n${seq}\n${head}`);
}

async function signed(cp, publicKeys) {
  const key = unhex(publicKeys.get(cp.key_id));
  const signature = unhex(cp.signature);
  if (key === null || signature === null) return false;
  try {
    const imported = await crypto.subtle.importKey("raw", key, { name: "Ed25519" }, false, [
      "verify",
    ]);
    return await crypto.subtle.verify(
      { name: "Ed25519" },
      imported,
      signature,
      checkpointMessage(cp.team_id, cp.seq, cp.head),
    );
  } catch {
    return false; // a key of the wrong length or shape: as Python's ValueError
  }
}

function readCheckpoint(raw) {
  if (raw === null || typeof raw !== "object") return null;
  const strings = ["team_id", "head", "at", "key_id", "signature"];
  if (!Number.isSafeInteger(raw.seq) || !strings.every((k) => typeof raw[k] === "string")) {
    return null;
  }
  return raw;
}

/**
 * Verify a team's chain: `entries` as GET /teams/{team}/audit answers them (each with its
 * `hash`), its `checkpoints`, and `keys` as GET /audit/keys answers them. Returns
 * {ok, entries, checkpoints, broken_at, reason}, the fields of auditchain.Verdict.
 */
export async function verifyChain(entries, checkpoints, keys) {
  if (!globalThis.crypto || !crypto.subtle) {
    throw new Error("This browser offers no WebCrypto here (it needs HTTPS or localhost).");
  }
  const verdict = (ok, brokenAt = null, reason = "") => ({
    ok,
    entries: entries.length,
    checkpoints: checkpoints.length,
    broken_at: brokenAt,
    reason,
  });
  const publicKeys = new Map(keys.map((k) => [k.key_id, k.public_key]));
  const heads = new Map();
  let previous = new Uint8Array(32);
  let expected = 1;
  const read = [];
  for (const raw of entries) {
    const { entry, error } = readEntry(raw);
    if (error) return verdict(false, Number(raw && raw.seq) || 0, `entry cannot be read (${error})`);
    read.push([entry, String(raw.hash)]);
  }
  for (const [entry, stored] of read) {
    if (entry.seq !== expected) return verdict(false, expected, `entry ${expected} is missing`);
    const current = await link(previous, entry);
    if (hex(current) !== stored) return verdict(false, entry.seq, "hash does not match its content");
    heads.set(entry.seq, stored);
    previous = current;
    expected += 1;
  }
  const cps = checkpoints.map(readCheckpoint);
  if (cps.some((cp) => cp === null)) throw new Error("A checkpoint cannot be read.");
  for (const cp of cps) {
    if (!publicKeys.has(cp.key_id)) {
      return verdict(false, cp.seq, `checkpoint signed by unknown key ${cp.key_id}`);
    }
    if (!(await signed(cp, publicKeys))) {
      return verdict(false, cp.seq, "checkpoint signature is invalid");
    }
    if (cp.seq > entries.length) {
      return verdict(
        false,
        entries.length + 1,
        `entries after ${entries.length} were removed (a checkpoint covers ${cp.seq})`,
      );
    }
    if (heads.get(cp.seq) !== cp.head) {
      return verdict(false, cp.seq, "chain differs from the signed checkpoint");
    }
  }
  const newest = entries.length;
  const covered = Math.max(0, ...cps.map((cp) => cp.seq));
  if (newest > covered) {
    return verdict(
      false,
      newest,
      `the newest entry is not covered by a signed checkpoint (the last one covers entry ${covered}):` +
        " entries after it may have been cut, or the chain rewritten, which the keyring refuses" +
        " to sign (or the keyring is unreachable: retry later)",
    );
  }
  return verdict(true);
}
