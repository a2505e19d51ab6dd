"""Shared fixtures: every test runs with HOME, caches and provision's state in a temp folder.

Under ``CI=true`` a skipped test is a failure: a missing component must not pass silently.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pluggy import Result

ISOLATED_VARS = (
    "HF_ENDPOINT",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN",
    "HF_HUB_OFFLINE",
    "MODELSCOPE_ENDPOINT",
    "MODELSCOPE_API_TOKEN",
    "OLLAMA_HOST",
    "PROVISION_MANIFEST",
    "PROVISION_DEBUG",
    "DEEPSEEK_API_KEY",
    "VLLM_API_KEY",
)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("PROVISION_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HF_HOME", str(home / ".cache" / "huggingface"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("MODELSCOPE_CACHE", str(home / ".cache" / "modelscope"))
    monkeypatch.setenv("MODELSCOPE_HOME", str(home / ".modelscope"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in ISOLATED_VARS:
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Result[pytest.TestReport], None]:
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under CI=true (a missing component is a failure): {reason}"


def pytest_report_header() -> str:
    return f"provision tests: python {sys.version.split()[0]}, CI={os.environ.get('CI', '')}"
