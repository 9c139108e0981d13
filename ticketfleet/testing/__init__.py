"""Test helpers that ship with the package (so any test suite in the fleet can build the tiny model)."""

from ticketfleet.testing.tiny_qwen import build_tiny_qwen, default_cache_dir

__all__ = ["build_tiny_qwen", "default_cache_dir"]
