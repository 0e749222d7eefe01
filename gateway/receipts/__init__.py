"""Signed receipts (Nostr events) of every exchange, and recipes that travel over relays.

Event format v2 (format v1 events keep verifying; a session keeps the format it opened in).
Checked against the NIPs as published in nostr-protocol/nips at the versions that describe
NIP-01's `e` tag with the author's pubkey as 4th element and "addressable" events, NIP-10's
"Text Notes and Threads" (marked `e` tags are for kind 1 only; their marker sits where
NIP-01 puts the author, so Potluck does not use markers), NIP-22 "Comment" (uppercase root
scope, lowercase parent), NIP-19 with `nevent`/`naddr` author and kind TLVs, NIP-32 with
self-labelling, NIP-85 "Trusted Assertions" (30382–30385) and the README kinds table that
marks NIP-31 (`alt`) unrecommended; copies elsewhere can be older, and differ exactly there.

Every v2 event carries `["format", "2"]`. Kinds (kinds.py) sit in unassigned ranges:

- 4745 recipe version (regular, so relays keep every version): content is the recipe's
  canonical JSON, so its SHA-256 is the version id, tagged `x` (as NIP-94 tags a file's
  hash); `name`, `title`, `t` per recipe tag (NIP-24 hashtags, for Discover), `a` naming the
  recipe's pointer (so `#a` lists its versions), and for a fork or edit `forked_from` (the
  parent's version id) plus, where its event is known, NIP-01 `["e", id, relay, author]`,
  `["k", "4745"]` and `["p", author]` (NIP-22's parent-item tags).
- 34745 latest version (addressable, `d` = recipe name): `["e", version, relay, author]`.
- 4743 session mark. The open mark (seq 0) answers the exact version event it runs, as a
  NIP-22 parent item: `["e", V, relay, version author]`, `["k", "4745"]`, `["p", author]`.
- 4740 person message, 4741 agent turn, 4742 tool call, 4744 exchange end: after the open
  mark every receipt names the session's root scope `["E", open mark, relay, gateway]` and
  its chain link `["e", previous, relay, gateway]` (NIP-01: 4th element the author).
- All receipts: `session`, `seq`, `["a", "34745:author:name", relay]` and `recipe` (the
  version id), and `alt` (NIP-31; cheap for clients that do not know the kind).
- Endings are a closed set (endings.Ending). An exchange end and a close mark sign it in
  their content and as NIP-32 self-labels `["L", "potluck.ending"]`, `["l", ending, …]`,
  with the counts of what they close (persons, turns, tokens, cost, models, tool calls,
  successes, time-outs, failures, tool time): chain.verify_chain recomputes every one from
  the events, so a published count is checkable by anyone.

filters.py documents the REQ filters that find all of it on a relay; audit.py is what a
third party runs with one event id; travel.py publishes, fetches and walks recipes.
Track records (gateway/records/) read exchange ends and close marks for their counts; a
person's verdict is a NIP-25 reaction (kind 7) the gateway signs as witness, on an agent
turn (`e` with its author, `p` = gateway, `k` = "4741") and naming the session (`E`), a
changed or withdrawn one deleted by NIP-09 (kind 5); a judge's verdict is a NIP-32 label
(kind 1985) on an exchange end; a published record is a NIP-85 event assertion (kind 30383,
`d` = the version event id) committing to exactly which sessions it counts.
"""
