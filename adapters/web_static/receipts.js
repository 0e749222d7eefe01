// Potluck receipts, checked in the reader's browser: NIP-01 ids, BIP-340 signatures
// (noble-secp256k1), the session chain (seq and prev links), and each shown text against
// the salted commitment its signed event carries. Mirrors gateway/receipts/chain.py.
import { etc, schnorr } from "noble-secp256k1";

const HEX64 = /^[0-9a-f]{64}$/;
const HEX128 = /^[0-9a-f]{128}$/;
const COMMITMENT_PREFIX = new TextEncoder().encode("potluck/commitment/1\0");

const toHex = (buffer) =>
  Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");

async function sha256Hex(bytes) {
  return toHex(await crypto.subtle.digest("SHA-256", bytes));
}

function tagValue(event, name) {
  const tag = (event.tags || []).find((t) => Array.isArray(t) && t[0] === name);
  return tag ? tag[1] : null;
}

/** NIP-01: the id is the SHA-256 of this exact serialisation. */
export function serialize(event) {
  return JSON.stringify([0, event.pubkey, event.created_at, event.kind, event.tags, event.content]);
}

/** null when the event's id and signature hold, else what is wrong. */
export async function checkEvent(event) {
  if (!event || typeof event !== "object") return "not an event";
  if (!HEX64.test(event.id || "") || !HEX64.test(event.pubkey || "")) return "malformed id or key";
  if (!HEX128.test(event.sig || "")) return "malformed signature";
  const id = await sha256Hex(new TextEncoder().encode(serialize(event)));
  if (id !== event.id) return "content altered: the id does not match";
  let valid = false;
  try {
    valid = await schnorr.verifyAsync(
      etc.hexToBytes(event.sig),
      etc.hexToBytes(event.id),
      etc.hexToBytes(event.pubkey),
    );
  } catch (error) {
    return `signature unreadable (${error.message})`;
  }
  return valid ? null : "signature does not verify";
}

/** Whether `text` with `saltHex` is what the event committed to. */
export async function checkReveal(event, text, saltHex) {
  let claimed;
  try {
    claimed = JSON.parse(event.content).commitment;
  } catch {
    return false;
  }
  if (typeof claimed !== "string" || !/^[0-9a-f]*$/.test(saltHex || "")) return false;
  const salt = etc.hexToBytes(saltHex);
  const body = new TextEncoder().encode(text);
  const all = new Uint8Array(COMMITMENT_PREFIX.length + salt.length + body.length);
  all.set(COMMITMENT_PREFIX, 0);
  all.set(salt, COMMITMENT_PREFIX.length);
  all.set(body, COMMITMENT_PREFIX.length + salt.length);
  return (await sha256Hex(all)) === claimed;
}

/** Check one session's entries ({event, text?, salt?}) in order. */
export async function checkChain(entries, pubkey = null) {
  const results = [];
  const expectedKey = pubkey || (entries[0] && entries[0].event.pubkey);
  const session = entries[0] ? tagValue(entries[0].event, "session") : null;
  let previous = null;
  for (const [index, entry] of entries.entries()) {
    const event = entry.event;
    const problems = [];
    const problem = await checkEvent(event);
    if (problem) problems.push(problem);
    if (event.pubkey !== expectedKey) problems.push("signed by another key");
    if (tagValue(event, "session") !== session) problems.push("belongs to another session");
    if (tagValue(event, "seq") !== String(index)) problems.push("out of order, or one is missing");
    const prev = tagValue(event, "e");
    if ((previous === null && prev !== null) || (previous !== null && prev !== previous.id)) {
      problems.push("does not link to the event before it");
    }
    if (typeof entry.text === "string" && !(await checkReveal(event, entry.text, entry.salt))) {
      problems.push("the text shown is not the text that was signed");
    }
    results.push({ ok: problems.length === 0, problems });
    previous = event;
  }
  return { ok: entries.length > 0 && results.every((r) => r.ok), results };
}
