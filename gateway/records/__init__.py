"""Track records: what a recipe is actually good at, computed from its receipts, and
verifiable by anyone (issue 16).

Pure computation over events, thin I/O around it:

- figures.py: one pass over a version's receipts → every figure (completion by ending, tool
  results, cost per exchange and per session, models that answered, verdicts, reach,
  outcome diversity, challenge rate), each with its sample size, rates with an interval;
  stats.py, likeness.py and compare.py are its arithmetic; render.py puts it in words.
- events.py: the events records rest on beside the receipts: people's verdicts (NIP-25
  reactions and NIP-09 deletions, signed by the gateway as witness), a judge's labels
  (NIP-32); assertion.py: a record as a signed NIP-85 assertion, read back and recomputed.
- verdicts.py: platform reactions → one counted vote per person per session; judge.py: the
  optional judge; store.py: records from this install's store; publish.py and verify.py:
  `potluck recipe record --publish` and `--verify`; web.py: `/api/records`.
"""
