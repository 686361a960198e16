"""The operator's log: what a client sends cannot forge a line."""

from __future__ import annotations

import logging

import pytest

from serving.request_log import access, log_request


def test_a_clients_values_are_escaped_and_capped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=access.name):
        log_request("POST", "/v1/chat/completions", 200, 12.0, model="x\n2026-01-01T00:00:00Z INFO forged",
                    session="s" * 500)  # fmt: skip
    (record,) = caplog.records
    assert "\n" not in record.getMessage() and "x\\x0a2026" in record.getMessage()
    assert len(record.session) == 200  # type: ignore[attr-defined]


def test_a_server_error_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=access.name):
        log_request("GET", "/api/search", 503, 3.0)
    assert caplog.records[0].levelno == logging.WARNING
