"""The Redis store: connections, the key schema, and the records every other part reads and writes.

The status record and its history, the delayed set, dead letters, dedup, cancel flags, callbacks, moves,
rate limits, stats and ``top``'s rollups, each owned by one module, all over :mod:`meetingtasks.lua`'s
scripts (a store-layer package kept at the top level). :class:`~meetingtasks.store.platform.Platform` ties
them to one configuration. It imports only :mod:`meetingtasks.core` (tests/test_layers.py).
"""
