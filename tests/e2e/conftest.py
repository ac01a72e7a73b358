"""Fixtures for the end-to-end tests: real stages started by the real `./switchyard` supervisor.

- `broker`: one stack per test module with default limits.
- `limits_broker`: one stack per test module with small limits (5 cached messages per subject, 1 KiB messages,
  64 KiB client buffer).
- `age_broker`: one stack per test module whose cache forgets messages after 2 s.
- `make_broker(**params)`: a fresh stack for one test (for tests that kill or stop things).

Every stack is stopped at teardown; when a test fails, the tail of every stage log is attached to its report.
"""

from __future__ import annotations

import pytest

from e2e_helpers import ACTIVE_BROKERS, Broker

SMALL_LIMITS = dict(
    MaxCachedMessagesPerSubject=5,
    MessageSizeLimit=1024,
    ClientBufferLimit=65536,
)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("broker"), name="broker")
    try:
        b.start()
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def limits_broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("limits"), name="limits", **SMALL_LIMITS)
    try:
        b.start()
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def age_broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("age"), name="age", CacheExpireTime=2)
    try:
        b.start()
        yield b
    finally:
        b.stop()


@pytest.fixture
def make_broker(tmp_path):
    """Factory: make_broker(start=True, **params) -> Broker, stopped at teardown."""
    made: list[Broker] = []

    def make(start: bool = True, name: str = "node", **params) -> Broker:
        b = Broker(tmp_path / f"{name}{len(made)}", name=name, **params)
        made.append(b)
        if start:
            b.start()
        return b

    yield make
    for b in made:
        if b.started or b in ACTIVE_BROKERS:
            b.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and ACTIVE_BROKERS:
        for b in list(ACTIVE_BROKERS):
            rep.sections.append((f"switchyard stage logs [{b.name}] ({b.dir})", b.log_tails()))
