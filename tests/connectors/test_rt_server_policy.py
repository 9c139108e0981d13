"""Without Request Tracker the RT tests skip with the reason — except in CI, where they must fail."""

from __future__ import annotations

import pytest

from tests.support.rt_server import unavailable


def test_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="rt-server not found"):
        unavailable("rt-server not found")


def test_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required in CI: rt-server not found"):
        unavailable("rt-server not found")
