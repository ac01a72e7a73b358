"""Fixtures of the supervisor tests."""

import contextlib
import os
import signal
import subprocess

import pytest

from supervisor_helpers import Stack


@pytest.fixture
def make_stack(tmp_path):
    """Factory of stacks; every stack is stopped afterwards, and the test fails if it left a process."""
    stacks = []

    def make(name="stack", engine="none"):
        stack = Stack(tmp_path / name, engine)
        stacks.append(stack)
        return stack

    yield make
    leftovers = {}
    for stack in stacks:
        with contextlib.suppress(subprocess.TimeoutExpired):
            stack.sw("stop")
        leftovers.update(stack.processes())
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes left behind: {leftovers}"


@pytest.fixture
def stack(make_stack):
    return make_stack()
