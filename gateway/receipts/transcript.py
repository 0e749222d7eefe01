"""A session as one self-contained HTML file that checks its own receipts. Pure, no I/O.

The signed events, the texts and their salts are embedded as JSON; the verifier (our
receipts.js on the vendored noble-secp256k1) is embedded as data: modules behind an import
map, so the file works offline from disk and each message shows whether its event verifies,
its text matches the commitment, and the chain is whole. Everything shown is set as text by
the script, never parsed as HTML.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from typing import Any

from . import kinds


@dataclass(frozen=True)
class Entry:
    event: dict[str, Any]
    text: str | None
    salt: str | None


def label(event: dict[str, Any]) -> str:
    """Who or what a receipt is about, from its signed fields (persons by pseudonym)."""
    try:
        fields = json.loads(event.get("content", "{}"))
    except ValueError:
        fields = {}
    kind = event.get("kind")
    if kind == kinds.PERSON_MESSAGE:
        return f"person {str(fields.get('sender', ''))[:8]}"
    if kind == kinds.AGENT_TURN:
        return f"{fields.get('agent', 'agent')} ({fields.get('model', '?')})"
    if kind == kinds.TOOL_CALL:
        return f"{fields.get('agent', 'agent')} ran {fields.get('tool', 'a tool')}"
    if kind == kinds.SESSION_MARK:
        ending = f" ({fields['ending']})" if isinstance(fields.get("ending"), str) else ""
        return f"session {fields.get('mark', 'mark')}{ending}"
    if kind == kinds.EXCHANGE_END:
        return f"exchange ended ({fields.get('ending', '?')})"
    return kinds.NAMES.get(kind, str(kind))


def _module(source: str) -> str:
    return "data:text/javascript;base64," + base64.b64encode(source.encode()).decode()


# Inside <script>, the HTML parser looks for more than `</script`: `<!--` followed by
# `<script` switches it into states where the element's real end tag no longer ends it, so
# one participant's text could swallow the verifier. JSON puts these characters only inside
# strings, where \u escapes mean the same, so none of them is left for the parser to see;
# U+2028/2029 are escaped too, for any reader that still treats them as line ends.
_SCRIPT_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element: no `<`, `>` or `&` at all, so nothing in it can
    end the element or change how the parser reads it."""
    return json.dumps(data, ensure_ascii=False).translate(_SCRIPT_ESCAPES)


STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;
color:#1d1d1f}
h1{font-size:1.3rem}.meta{color:#555;font-size:.85rem;word-break:break-all}
#status{padding:.6rem .8rem;border-radius:.4rem;background:#eee;font-weight:600}
body[data-verified=yes] #status{background:#e3f6e5;color:#17612a}
body[data-verified=no] #status{background:#fde8e8;color:#9b1c1c}
ol{list-style:none;padding:0}li{border-bottom:1px solid #eee;padding:.6rem 0}
.who{font-weight:600}.text{white-space:pre-wrap;margin:.2rem 0}
.badge{font-size:.8rem}.ok{color:#17612a}.bad{color:#9b1c1c;font-weight:600}
details{font-size:.8rem;color:#555}pre{white-space:pre-wrap;word-break:break-all}
"""

RENDER = """
import { checkChain } from "potluck-receipts";
const status = document.getElementById("status");
try {
  const data = JSON.parse(document.getElementById("receipts").textContent);
  const list = document.getElementById("transcript");
  const badges = data.entries.map((entry) => {
    const item = document.createElement("li");
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = entry.label;
    item.append(who);
    if (typeof entry.text === "string") {
      const text = document.createElement("div");
      text.className = "text";
      text.textContent = entry.text;
      item.append(text);
    }
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = "checking…";
    const raw = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "signed event";
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(entry.event, null, 1);
    raw.append(summary, pre);
    item.append(badge, raw);
    list.append(item);
    return badge;
  });
  const report = await checkChain(data.entries, data.pubkey);
  report.results.forEach((result, i) => {
    badges[i].textContent = result.ok ? "✓ signature, chain and text verified"
                                      : "✗ " + result.problems.join("; ");
    badges[i].className = "badge " + (result.ok ? "ok" : "bad");
  });
  const failed = report.results.filter((r) => !r.ok).length;
  status.textContent = report.ok
    ? `All ${report.results.length} receipts verified: signatures, chain and texts.`
    : `${failed} of ${report.results.length} receipts FAILED verification.`;
  document.body.dataset.verified = report.ok ? "yes" : "no";
} catch (error) {
  status.textContent = "Could not verify: the file is damaged (" + error.message + ").";
  document.body.dataset.verified = "no";
}
"""

WATCHDOG = """
addEventListener("error", (e) => {
  document.getElementById("status").textContent =
    "Could not verify: the file is damaged (" + e.message + ").";
  document.body.dataset.verified = "no";
});
setTimeout(() => {
  if (!document.body.dataset.verified) {
    document.getElementById("status").textContent =
      "Could not verify: the verifier did not run (the file may be damaged).";
    document.body.dataset.verified = "no";
  }
}, 15000);
"""


def transcript_html(
    entries: list[Entry],
    *,
    title: str,
    session_id: str,
    pubkey: str,
    npub: str,
    scripts: dict[str, str],
    licence: str,
) -> str:
    """The whole file. `scripts` maps the module names "noble-secp256k1" and
    "potluck-receipts" to their sources; `licence` is the vendored library's licence."""
    data = {
        "session": session_id,
        "pubkey": pubkey,
        "entries": [
            {"event": e.event, "text": e.text, "salt": e.salt, "label": label(e.event)}
            for e in entries
        ],
    }
    imports = {"imports": {name: _module(source) for name, source in scripts.items()}}
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} — Potluck transcript</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p class="meta">Session {html.escape(session_id)} · signed by {html.escape(npub)}
(hex {html.escape(pubkey)}). Every message below carries its signed Nostr event; this page
checks each signature, the chain that links them, and that each text is the one signed.</p>
<p id="status">Checking receipts… <noscript>(this needs JavaScript)</noscript></p>
<ol id="transcript"></ol>
<details><summary>Verifier: @noble/secp256k1 3.2.0 (MIT licence), embedded</summary>
<pre>{html.escape(licence)}</pre></details>
<script type="application/json" id="receipts">{_script_json(data)}</script>
<script>{WATCHDOG}</script>
<script type="importmap">{_script_json(imports)}</script>
<script type="module">{RENDER}</script>
</body>
</html>
"""
