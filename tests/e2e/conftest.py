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

from e2e_helpers import ACTIVE_BROKERS, Broker, broker_factory, running

SMALL_LIMITS = dict(
    MaxCachedMessagesPerSubject=5,
    MessageSizeLimit=1024,
    ClientBufferLimit=65536,
)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with running(Broker(tmp_path_factory.mktemp("broker"), name="broker")) as b:
        yield b


@pytest.fixture(scope="module")
def limits_broker(tmp_path_factory):
    with running(Broker(tmp_path_factory.mktemp("limits"), name="limits", **SMALL_LIMITS)) as b:
        yield b


@pytest.fixture(scope="module")
def age_broker(tmp_path_factory):
    with running(Broker(tmp_path_factory.mktemp("age"), name="age", CacheExpireTime=2)) as b:
        yield b


@pytest.fixture
def make_broker(tmp_path):
    """Factory: make_broker(start=True, name="node", **params) -> Broker, stopped at teardown."""
    def build(index: int, name: str = "node", **params) -> Broker:
        return Broker(tmp_path / f"{name}{index}", name=name, **params)

    with broker_factory(build) as make:
        yield make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and ACTIVE_BROKERS:
        for b in list(ACTIVE_BROKERS):
            rep.sections.append((f"switchyard stage logs [{b.name}] ({b.dir})", b.log_tails()))
