"""The ``chat`` lane: live chat messages. Latency first; run it on its own worker so nothing queues
ahead of it. The batch logic lives in ticketfleet.pipeline.processing."""

from workers.base import register_lane

process_chat = register_lane("chat")
