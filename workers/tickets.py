"""The ``tickets`` lane: new tickets from the connectors, processed as they arrive."""

from workers.base import register_lane

process_tickets = register_lane("tickets")
