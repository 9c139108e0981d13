"""The ``backlog`` lane: imports and the nightly reprocessing run. Throughput first; it never shares
a Redis list with live traffic, so a 100k-ticket night cannot delay a chat reply."""

from workers.base import register_lane

process_backlog = register_lane("backlog")
