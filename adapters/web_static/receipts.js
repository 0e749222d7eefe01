// Potluck receipts, checked in the reader's browser: NIP-01 ids, BIP-340 signatures
// (noble-secp256k1), the session chain (seq and links), each shown text against the salted
// commitment its signed event carries, and in format v2 the closed set of endings and the
// counts that exchange ends and close marks sign. Mirrors gateway/receipts/chain.py: both
// formats verify, event by event; a session keeps the format it was opened in. A tool call's
// output is checked against its salted `output_commitment` (with the output's own salt) or
// the plain `output_sha256` of transparent and older receipts (checkOutput).
import { etc, schnorr } from "noble-secp256k1";

const HEX64 = /^[0-9a-f]{64}$/;
const HEX128 = /^[0-9a-f]{128}$/;
const COMMITMENT_PREFIX = new TextEncoder().encode("potluck/commitment/1\0");
const OUTPUT_PREFIX = new TextEncoder().encode("potluck/output/1\0");
const SALT = /^(?:[0-9a-f]{2})*$/;
const KIND = { person: 4740, turn: 4741, tool: 4742, mark: 4743, exchange: 4744, version: 4745 };
const RECEIPT_KINDS = new Set([4740, 4741, 4742, 4743, 4744]);
const ENDINGS = new Set([
  "completed", "limit_turns", "limit_rounds", "limit_budget", "limit_loop", "stopped", "cut",
  "error",
]);
const NAMESPACE = "potluck.ending";

const toHex = (buffer) =>
  Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");

async function sha256Hex(bytes) {
  return toHex(await crypto.subtle.digest("SHA-256", bytes));
}

function tag(event, name) {
  return (event.tags || []).find((t) => Array.isArray(t) && t[0] === name) || null;
}

function tagValue(event, name) {
  const found = tag(event, name);
  return found && found.length > 1 ? found[1] : null;
}

/** 2 for events carrying the v2 format tag, else 1. */
export function formatOf(event) {
  return tagValue(event, "format") === "2" ? 2 : 1;
}

function fieldsOf(event) {
  try {
    const fields = JSON.parse(event.content);
    return fields && typeof fields === "object" && !Array.isArray(fields) ? fields : {};
  } catch {
    return {};
  }
}

const isMark = (event, mark) => event.kind === KIND.mark && fieldsOf(event).mark === mark;
const int = (value) => (Number.isInteger(value) ? value : 0);
const num = (value) => (typeof value === "number" && Number.isFinite(value) ? value : 0);

/** The counts a stretch of a chain holds, as exchange ends and close marks sign them. */
class Tally {
  constructor() {
    Object.assign(this, {
      persons: 0, turns: 0, tokens_in: 0, tokens_out: 0, cost_usd: 0, models: new Set(),
      tool_calls: 0, tool_ok: 0, tool_timeouts: 0, tool_failed: 0, tool_ms: 0, exchanges: 0,
    });
  }

  add(kind, f) {
    if (kind === KIND.person) this.persons += 1;
    else if (kind === KIND.turn) {
      this.turns += 1;
      this.tokens_in += int(f.tokens_in);
      this.tokens_out += int(f.tokens_out);
      this.cost_usd += num(f.cost_usd);
      this.models.add(String(f.model ?? ""));
    } else if (kind === KIND.tool) {
      this.tool_calls += 1;
      this.tool_ms += int(f.wall_ms);
      if (f.killed === "timeout") this.tool_timeouts += 1;
      else if (f.exit_code === 0 && !f.killed) this.tool_ok += 1;
      else this.tool_failed += 1;
    }
  }

  merge(other) {
    for (const key of ["persons", "turns", "tokens_in", "tokens_out", "tool_calls", "tool_ok",
      "tool_timeouts", "tool_failed", "tool_ms", "exchanges", "cost_usd"]) {
      this[key] += other[key];
    }
    for (const model of other.models) this.models.add(model);
  }

  mismatches(claimed, what) {
    const wrong = [];
    const expected = {
      persons: this.persons, turns: this.turns, tokens_in: this.tokens_in,
      tokens_out: this.tokens_out, tool_calls: this.tool_calls, tool_ok: this.tool_ok,
      tool_timeouts: this.tool_timeouts, tool_failed: this.tool_failed, tool_ms: this.tool_ms,
    };
    for (const [key, value] of Object.entries(expected)) {
      if (claimed[key] !== value) wrong.push(`${what} ${key} says ${claimed[key]}, the events show ${value}`);
    }
    if (typeof claimed.cost_usd !== "number" || Math.abs(claimed.cost_usd - this.cost_usd) >= 5e-9) {
      wrong.push(`${what} cost_usd says ${claimed.cost_usd}, the events show ${this.cost_usd}`);
    }
    const models = [...this.models].sort();
    if (JSON.stringify(claimed.models) !== JSON.stringify(models)) {
      wrong.push(`${what} models say ${JSON.stringify(claimed.models)}, the events show ${JSON.stringify(models)}`);
    }
    return wrong;
  }
}

function endingProblems(event, f) {
  if (!ENDINGS.has(f.ending)) return [`${JSON.stringify(f.ending)} is not an ending`];
  const label = tag(event, "l");
  if (tagValue(event, "L") !== NAMESPACE || !label || label[1] !== f.ending || label[2] !== NAMESPACE) {
    return [`its NIP-32 label does not say ${f.ending}`];
  }
  return [];
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

/** SHA-256 of a domain prefix, a salt and a text: chain.commitment, chain.output_commitment. */
async function salted(prefix, saltHex, text) {
  const salt = etc.hexToBytes(saltHex);
  const body = new TextEncoder().encode(text);
  const all = new Uint8Array(prefix.length + salt.length + body.length);
  all.set(prefix, 0);
  all.set(salt, prefix.length);
  all.set(body, prefix.length + salt.length);
  return sha256Hex(all);
}

/** Whether `text` with `saltHex` is what the event committed to. */
export async function checkReveal(event, text, saltHex) {
  let claimed;
  try {
    claimed = JSON.parse(event.content).commitment;
  } catch {
    return false;
  }
  if (typeof claimed !== "string" || !SALT.test(saltHex || "")) return false;
  return (await salted(COMMITMENT_PREFIX, saltHex || "", text)) === claimed;
}

/** Whether `output` is what a tool-call receipt signed: its salted `output_commitment`
 * (`saltHex` is the output's own salt, not the command's), or the plain `output_sha256`
 * of transparent and older receipts. Mirrors chain.output_matches. */
export async function checkOutput(event, output, saltHex = null) {
  const f = fieldsOf(event);
  if (typeof f.output_commitment === "string" && typeof saltHex === "string") {
    return SALT.test(saltHex) && (await salted(OUTPUT_PREFIX, saltHex, output)) === f.output_commitment;
  }
  if (f.output_commitment == null && typeof f.output_sha256 === "string") {
    return (await sha256Hex(new TextEncoder().encode(output))) === f.output_sha256;
  }
  return false;
}

function linksV1(event, previous) {
  const prev = tagValue(event, "e");
  if ((previous === null && prev !== null) || (previous !== null && prev !== previous.id)) {
    return ["does not link to the event before it"];
  }
  return [];
}

function linksV2(event, previous, first, root) {
  const problems = [];
  if (tagValue(event, "a") !== tagValue(first, "a") || tagValue(event, "recipe") !== tagValue(first, "recipe")) {
    problems.push("names another recipe version than the session's");
  }
  const link = tag(event, "e");
  if (tagValue(event, "seq") === "0") {
    if (!isMark(event, "open")) problems.push("the first event is not an open mark");
    if (!link || tagValue(event, "k") !== String(KIND.version)) {
      problems.push("the open mark does not reference its recipe version event");
    } else if (link.length < 4 || link[3] !== tagValue(event, "p")) {
      problems.push("the open mark's recipe reference lacks its author");
    }
    if (tag(event, "E")) problems.push("the open mark names a root: it is not the start of the chain");
    return problems;
  }
  if (previous === null || !link || link[1] !== previous.id) {
    problems.push("does not link to the event before it");
  } else if (link.length < 4 || link[3] !== event.pubkey) {
    problems.push("its chain link does not name its author");
  }
  if (tagValue(event, "E") !== root) problems.push("names another session's root");
  return problems;
}

/** Check one session's entries ({event, text?, salt?}) in order. */
export async function checkChain(entries, pubkey = null) {
  const results = [];
  const formats = {};
  const first = entries[0] ? entries[0].event : null;
  const expectedKey = pubkey || (first && first.pubkey);
  const session = first ? tagValue(first, "session") : null;
  const chainFormat = first ? formatOf(first) : 2;
  const root = first && tagValue(first, "seq") === "0" ? first.id : first && tagValue(first, "E");
  let previous = null;
  let closed = false;
  let stretch = new Tally();
  let stretchStart = 1;
  const whole = new Tally();
  for (const [index, entry] of entries.entries()) {
    const event = entry.event;
    const format = formatOf(event);
    formats[format] = (formats[format] || 0) + 1;
    const problems = [];
    const problem = await checkEvent(event);
    if (problem) problems.push(problem);
    if (event.pubkey !== expectedKey) problems.push("signed by another key");
    if (!RECEIPT_KINDS.has(event.kind)) problems.push("not a receipt");
    if (tagValue(event, "session") !== session) problems.push("belongs to another session");
    if (tagValue(event, "seq") !== String(index)) problems.push("out of order, or one is missing");
    if (format !== chainFormat) problems.push(`a v${format} event in a v${chainFormat} chain`);
    if (closed) problems.push("comes after the session's close mark");
    if (previous !== null && event.created_at < previous.created_at) {
      problems.push("created before the event it follows");
    }
    if (format === 1) problems.push(...linksV1(event, previous));
    else {
      problems.push(...linksV2(event, previous, first, root));
      const f = fieldsOf(event);
      if (event.kind === KIND.exchange) {
        problems.push(...stretch.mismatches(f, "exchange"));
        if (f.from_seq !== stretchStart) problems.push(`exchange starts at seq ${f.from_seq}, expected ${stretchStart}`);
        problems.push(...endingProblems(event, f));
        whole.merge(stretch);
        whole.exchanges += 1;
        stretch = new Tally();
        stretchStart = index + 1;
      } else if (isMark(event, "close")) {
        whole.merge(stretch);
        problems.push(...whole.mismatches(f, "session"));
        if (f.count !== index + 1) problems.push(`count says ${f.count}, expected ${index + 1}`);
        if (f.exchanges !== whole.exchanges) problems.push(`exchanges says ${f.exchanges}, the events show ${whole.exchanges}`);
        problems.push(...endingProblems(event, f));
      } else if (index > 0) {
        stretch.add(event.kind, f);
      }
    }
    if (typeof entry.text === "string" && !(await checkReveal(event, entry.text, entry.salt))) {
      problems.push("the text shown is not the text that was signed");
    }
    results.push({ ok: problems.length === 0, problems, format });
    closed = closed || isMark(event, "close");
    previous = event;
  }
  return { ok: entries.length > 0 && results.every((r) => r.ok), results, formats };
}
