"""Shared test fixtures.

Every test that touches ROS gets its own ROS_DOMAIN_ID and discovery range LOCALHOST, so tests
never see each other's nodes and no DDS traffic leaves 127.0.0.1.
"""

from __future__ import annotations

import itertools
import os

import pytest

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# Domain ids 1..100, spread by process id so parallel pytest runs on one machine do not collide.
_DOMAIN_IDS = itertools.cycle(range(1 + os.getpid() % 50, 101))


@pytest.fixture
def ros_domain_id(monkeypatch) -> int:
    """A ROS_DOMAIN_ID no other test in this run uses, exported for subprocesses too."""
    domain_id = next(_DOMAIN_IDS)
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
