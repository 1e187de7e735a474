"""The promise of the domain and service layers: their tests start no process (no server, no
store helper, no agent, no fork). conftest.py applies `forbid_processes` to every test of those
layers; anything there that tries to start a process fails at once, naming the call."""

from __future__ import annotations

import os
import subprocess

import pytest

# Folders of tests/ whose tests run in the test process alone.
IN_PROCESS_LAYERS = {"domain", "service"}
CALLS = ("fork", "forkpty", "posix_spawn", "posix_spawnp", "spawnv", "spawnve", "execv",
         "execve")


class ProcessStarted(AssertionError):
    pass


def forbid_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until the test ends, starting a process raises ProcessStarted."""
    def refuse(what: str):
        def call(*args, **kwargs):
            raise ProcessStarted(f"a test of an in-process layer started a process ({what})")
        return call

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse("subprocess"))
    for name in CALLS:
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse(f"os.{name}"))
