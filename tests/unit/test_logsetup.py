"""The one logging setup: level parsing, the refusal of a bad level, idempotence, the format."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import pytest
from pydantic import BaseModel, ValidationError

from libs.common.logsetup import (
    CONTEXT_FIELDS,
    LOG_FORMATS,
    LOG_LEVELS,
    LogLevel,
    configure_logging,
    log_context,
    parse_log_format,
    parse_log_level,
    set_log_context,
)
from services.amphora.settings import AmphoraSettings
from services.api.settings import ApiSettings
from services.health.settings import HealthSettings
from services.housekeeping.settings import HousekeepingSettings
from services.provisioner.settings import ProvisionerSettings


class HasLogLevel(Protocol):
    @property
    def log_level(self) -> str: ...


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, given back with the handlers and level it had (pytest's own)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


def ours(root: logging.Logger) -> list[logging.Handler]:
    return [h for h in root.handlers if h.get_name() == "fulcrum"]


@pytest.mark.parametrize(
    ("given", "level"),
    [("DEBUG", "DEBUG"), ("info", "INFO"), (" Warning ", "WARNING"), ("error", "ERROR")],
)
def test_levels_are_read_in_any_case(given: str, level: str) -> None:
    assert parse_log_level(given) == level


@pytest.mark.parametrize("bad", ["", "LOUD", "WARN", "10", "debug,info"])
def test_a_bad_level_names_the_setting_and_the_choices(bad: str) -> None:
    with pytest.raises(ValueError, match="FULCRUM_API_LOG_LEVEL must be one of DEBUG, INFO"):
        parse_log_level(bad, setting="FULCRUM_API_LOG_LEVEL")


def test_a_settings_field_normalises_and_refuses() -> None:
    class Settings(BaseModel):
        log_level: LogLevel = "INFO"

    assert Settings().log_level == "INFO"
    assert Settings(log_level="critical").log_level == "CRITICAL"
    with pytest.raises(ValidationError, match="log_level must be one of"):
        Settings(log_level="verbose")


def test_configure_refuses_a_bad_level_and_changes_nothing(root_logger: logging.Logger) -> None:
    before = (list(root_logger.handlers), root_logger.level)
    with pytest.raises(ValueError, match="FULCRUM_HOUSEKEEPING_LOG_LEVEL must be one of"):
        configure_logging("chatty", "housekeeping")
    assert (list(root_logger.handlers), root_logger.level) == before


def test_lines_carry_time_level_service_logger_and_message(root_logger: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging("debug", "provisioner", stream=out)
    logging.getLogger("services.provisioner.app").debug("booted %s", "amp-1")
    line = out.getvalue().strip()
    stamp, rest = line[:23], line[24:]
    assert stamp[4] == "-" and stamp[10] == " " and stamp[19] == ","  # 2026-01-02 03:04:05,678
    assert rest == "DEBUG provisioner services.provisioner.app booted amp-1"


def test_records_below_the_level_are_dropped(root_logger: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging("WARNING", "health", stream=out)
    log = logging.getLogger("services.health.app")
    log.info("not shown")
    log.warning("shown")
    assert [line.split(" ", 3)[3] for line in out.getvalue().splitlines()] == [
        "health services.health.app shown"
    ]
    assert root_logger.level == logging.WARNING


def test_a_second_call_replaces_the_first_handler(root_logger: logging.Logger) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", "amphora", stream=first)
    configure_logging("DEBUG", "amphora", stream=second)
    assert len(ours(root_logger)) == 1
    logging.getLogger("services.amphora.app").debug("once")
    assert first.getvalue() == ""
    assert second.getvalue().count("once") == 1
    assert root_logger.level == logging.DEBUG


def test_handlers_added_by_others_are_kept(root_logger: logging.Logger) -> None:
    others = [h for h in root_logger.handlers if h.get_name() != "fulcrum"]
    configure_logging("INFO", "api", stream=io.StringIO())
    configure_logging("INFO", "api", stream=io.StringIO())
    assert [h for h in root_logger.handlers if h.get_name() != "fulcrum"] == others


def test_every_level_is_accepted() -> None:
    assert [parse_log_level(level.lower()) for level in LOG_LEVELS] == list(LOG_LEVELS)


@pytest.mark.parametrize(
    ("prefix", "build"),
    [
        ("FULCRUM_API_", lambda: ApiSettings()),
        ("FULCRUM_PROVISIONER_", lambda: ProvisionerSettings()),
        ("FULCRUM_HEALTH_", lambda: HealthSettings(heartbeat_key="k")),
        ("FULCRUM_HOUSEKEEPING_", lambda: HousekeepingSettings()),
        (
            "FULCRUM_AMPHORA_",
            lambda: AmphoraSettings(
                amphora_id="a",
                lb_id="l",
                state_dir=Path("s"),
                ca_cert=Path("c"),
                server_cert=Path("c"),
                server_key=Path("k"),
            ),
        ),
    ],
)
def test_every_service_reads_its_log_level(
    monkeypatch: pytest.MonkeyPatch, prefix: str, build: Callable[[], HasLogLevel]
) -> None:
    monkeypatch.delenv(prefix + "LOG_LEVEL", raising=False)
    assert build().log_level == "INFO"
    monkeypatch.setenv(prefix + "LOG_LEVEL", "debug")
    assert build().log_level == "DEBUG"
    monkeypatch.setenv(prefix + "LOG_LEVEL", "noisy")
    with pytest.raises(ValidationError, match="log_level must be one of"):
        build()


def test_json_lines_are_one_object_each_with_the_context_fields(
    root_logger: logging.Logger,
) -> None:
    out = io.StringIO()
    configure_logging("INFO", "provisioner", stream=out, log_format="json")
    log = logging.getLogger("services.provisioner.handlers.lifecycle")
    with log_context(correlation_id="c-1", lb_id="lb-1"):
        with log_context(amphora_id="amp-1"):
            log.info("pushed %s", "config")
        log.warning("lb only")
    log.info("no context")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 4
    first = lines[0]
    assert set(first) == {
        "timestamp",
        "level",
        "service",
        "logger",
        "message",
        "correlation_id",
        "lb_id",
        "amphora_id",
    }
    assert first["level"] == "INFO" and first["service"] == "provisioner"
    assert first["logger"] == "services.provisioner.handlers.lifecycle"
    assert first["message"] == "pushed config"
    assert (first["correlation_id"], first["lb_id"], first["amphora_id"]) == (
        "c-1",
        "lb-1",
        "amp-1",
    )
    assert datetime.fromisoformat(first["timestamp"]).utcoffset() == timedelta(0)
    assert lines[1]["lb_id"] == "lb-1" and "amphora_id" not in lines[1]
    assert not set(CONTEXT_FIELDS) & set(lines[2])
    assert lines[3]["level"] == "ERROR" and "RuntimeError: boom" in lines[3]["exception"]


def test_text_lines_end_with_their_context_fields(root_logger: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging("INFO", "api", stream=out, log_format="text")
    log = logging.getLogger("aiohttp.access")
    set_log_context(request_id="req-1")
    try:
        log.info("GET /v2/lbaas/loadbalancers 200")
    finally:
        set_log_context(request_id=None)
    log.info("plain")
    tagged, plain = out.getvalue().splitlines()
    assert tagged.endswith(
        "INFO api aiohttp.access GET /v2/lbaas/loadbalancers 200 [request_id=req-1]"
    )
    assert plain.endswith("INFO api aiohttp.access plain")


def test_the_format_comes_from_fulcrum_log_format(
    root_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.StringIO()
    monkeypatch.setenv("FULCRUM_LOG_FORMAT", "JSON")
    configure_logging("INFO", "health", stream=out)
    logging.getLogger("services.health.app").info("hello")
    assert json.loads(out.getvalue())["message"] == "hello"
    monkeypatch.setenv("FULCRUM_LOG_FORMAT", "yaml")
    with pytest.raises(ValueError, match="FULCRUM_LOG_FORMAT must be one of text, json"):
        configure_logging("INFO", "health", stream=out)
    assert parse_log_format(" Text ") == "text" and LOG_FORMATS == ("text", "json")
