"""Shared test fixtures.

Every test that touches ROS gets its own ROS_DOMAIN_ID and discovery range LOCALHOST, so tests
never see each other's nodes and no DDS traffic leaves 127.0.0.1.
"""

from __future__ import annotations

import gc
import os
import random

import pytest

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# Domain ids 1..101: Linux's safe range (215..232 leave room for only a few participants per
# domain, their ports near 65535). Drawn without replacement in a random order per pytest
# process, so two runs on one machine rarely share a domain at the same moment.
_DOMAIN_POOL = list(range(1, 102))
random.Random(os.getpid() ^ int.from_bytes(os.urandom(4), 'little')).shuffle(_DOMAIN_POOL)
_DOMAIN_IDS = iter(_DOMAIN_POOL * 10)


# Fixtures that train a model (fixtures_ml.make_tiny_artifact) or export one: a test that uses
# one of them, directly or through another fixture, is marked ``training`` (left out of
# ``make check``, run by ``make test``).
TRAINING_FIXTURES = frozenset({'tiny_artifact', 'tiny_artifact_1280'})


def pytest_collection_modifyitems(config, items):
    """Mark the tests that need a trained model, so ``-m 'not training'`` leaves them out."""
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, 'fixturenames', ())):
            item.add_marker(pytest.mark.training)


def next_domain_id() -> int:
    """A ROS_DOMAIN_ID no other test in this run uses (for module-scoped fixtures)."""
    return next(_DOMAIN_IDS)


@pytest.fixture
def ros_domain_id(monkeypatch) -> int:
    """A ROS_DOMAIN_ID no other test in this run uses, exported for subprocesses too."""
    domain_id = next_domain_id()
    monkeypatch.setenv('ROS_DOMAIN_ID', str(domain_id))
    monkeypatch.setenv('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    return domain_id


@pytest.fixture
def rclpy_context(ros_domain_id):
    """An initialised rclpy Context on the test's private domain, shut down afterwards."""
    rclpy = pytest.importorskip('rclpy')
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    yield context
    context.try_shutdown()
    # The test's nodes, executor and context form reference cycles; collecting them now frees the
    # DDS participant's ~11 threads and 8 /dev/shm files before the next test starts its own.
    gc.collect()


def wait_for(predicate, timeout: float = 5.0) -> bool:
    """Poll ``predicate`` every 10 ms until it holds or ``timeout`` passes; its last answer."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def wait_matched(publishers, nodes=(), *, count: int = 1, timeout: float = 10.0) -> None:
    """Wait until both sides of each DDS match are up, instead of a fixed sleep.

    Every publisher must see ``count`` matched subscriptions, and every subscription of
    ``nodes`` on one of the publishers' topics must see its publisher: a publisher usually
    matches first, and a message sent before the subscription's side matched is lost.

    Raises:
        AssertionError: Not matched within ``timeout`` seconds, saying which topic.
    """
    import time

    publishers = list(publishers)
    topics = {p.topic_name for p in publishers}
    deadline = time.monotonic() + timeout
    while True:
        waiting = [f'{p.topic_name} ({p.get_subscription_count()} of {count} subscriptions)'
                   for p in publishers if p.get_subscription_count() < count]
        waiting += [f'{node.get_name()} on {sub.topic_name}' for node in nodes
                    for sub in list(node.subscriptions)
                    if sub.topic_name in topics and sub.get_publisher_count() < 1]
        if not waiting:
            return
        assert time.monotonic() < deadline, 'not matched: ' + '; '.join(waiting)
        time.sleep(0.02)
