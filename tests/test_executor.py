"""The project's executor queues each callback once, still runs them all, and shuts down clean."""

from __future__ import annotations

import threading
import time

import pytest

rclpy = pytest.importorskip('rclpy')

from rclpy.callback_groups import ReentrantCallbackGroup  # noqa: E402
from rclpy.exceptions import InvalidHandle  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.waitable import NumberOfEntities, Waitable  # noqa: E402
from std_msgs.msg import Int32  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from bolt_inspection.nodes.executor import RequeueFreeExecutor, make_executor  # noqa: E402

pytestmark = pytest.mark.ros


def _spin_until(executor, done, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)


def _spin_matched(rclpy_context, node, publisher, num_threads: int):
    """``node`` spinning on our executor in a thread, once ``publisher`` has its subscriber.

    Returns:
        ``(executor, spin thread, deadline)``: the deadline (10 s) bounds the caller's waits.
    """
    executor = make_executor(rclpy_context, num_threads=num_threads)
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    deadline = time.monotonic() + 10.0
    while not publisher.get_subscription_count() and time.monotonic() < deadline:
        time.sleep(0.01)
    return executor, spin, deadline


def submissions_while_pool_is_busy(executor, spins: int = 10) -> tuple[int, bool]:
    """Fill the 2-thread pool with blocked callbacks, make one more callback ready, spin
    ``spins`` times; return how often that callback went into the pool, and whether it ran
    once the pool was free."""
    release = threading.Event()
    started = []
    for _ in range(2):
        executor.create_task(lambda: (started.append(1), release.wait(10.0)))
    _spin_until(executor, lambda: len(started) == 2)
    assert len(started) == 2, 'blocking callbacks never started'

    submitted = []
    submit = executor._executor.submit

    def counting_submit(fn, *args):
        # The stock executor submits the task itself, ours submits (_start, task).
        submitted.append(args[0] if args else fn)
        return submit(fn, *args)

    executor._executor.submit = counting_submit
    waiting = executor.create_task(lambda: 'ran')
    for _ in range(spins):
        executor.spin_once(timeout_sec=0.05)
    queued = sum(1 for task in submitted if task is waiting)
    release.set()
    _spin_until(executor, waiting.done)
    ran = waiting.done() and waiting.result() == 'ran'
    assert executor.shutdown(timeout_sec=5.0)
    return queued, ran


def test_a_callback_waiting_for_a_pool_thread_is_queued_once(rclpy_context):
    executor = make_executor(rclpy_context, num_threads=2)
    assert isinstance(executor, RequeueFreeExecutor)
    assert submissions_while_pool_is_busy(executor) == (1, True)


def test_stock_rclpy_executor_still_requeues(rclpy_context):
    """When this fails, rclpy's own executor is fixed (>= 10.0.4, ros2/rclpy#1547): drop
    bolt_inspection/nodes/executor.py and let make_executor return MultiThreadedExecutor."""
    queued, ran = submissions_while_pool_is_busy(
        MultiThreadedExecutor(num_threads=2, context=rclpy_context))
    assert ran
    assert queued > 1, f'stock executor queued the waiting callback {queued} time(s)'


def test_every_callback_runs_and_shutdown_is_clean(rclpy_context):
    """Subscriptions, a service and a coroutine timer callback awaiting that service, spun from a
    thread as ComposedLine does; then shutdown stops spin and joins the pool's threads."""
    threads_before = set(threading.enumerate())
    node = rclpy.create_node('executor_probe', context=rclpy_context)
    group = ReentrantCallbackGroup()
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    received = []
    node.create_subscription(Int32, 'numbers', lambda m: received.append(m.data), qos,
                             callback_group=group)
    node.create_service(Trigger, 'ping', lambda req, res: setattr(res, 'success', True) or res,
                        callback_group=group)
    client = node.create_client(Trigger, 'ping', callback_group=group)
    answers = []

    async def ask() -> None:
        timer.cancel()
        answers.append((await client.call_async(Trigger.Request())).success)

    timer = node.create_timer(0.05, ask, callback_group=group)
    publisher = node.create_publisher(Int32, 'numbers', qos)

    executor, spin, deadline = _spin_matched(rclpy_context, node, publisher, num_threads=4)
    try:
        for i in range(50):
            publisher.publish(Int32(data=i))
        while (len(received) < 50 or not answers) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(received) == list(range(50))
        assert answers == [True]
    finally:
        assert executor.shutdown(timeout_sec=5.0)
        spin.join(timeout=5.0)
    assert not spin.is_alive(), 'spin() still running after shutdown'
    node.destroy_node()
    assert [t.name for t in set(threading.enumerate()) - threads_before
            if t.name.startswith('ThreadPoolExecutor')] == []


def test_a_callback_exception_is_logged_once_counted_and_spinning_goes_on(rclpy_context, capfd):
    """A callback that raises (a malformed message, a bug) must not kill the spin thread: the
    line would stop inspecting while the conveyor runs on. It is logged with its traceback the
    first time, counted every time, and every later callback still runs."""
    node = rclpy.create_node('executor_faults', context=rclpy_context)
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    received = []

    def on_number(msg: Int32) -> None:
        if msg.data < 0:
            raise ValueError(f'hostile payload {msg.data}')
        received.append(msg.data)

    node.create_subscription(Int32, 'numbers', on_number, qos)
    publisher = node.create_publisher(Int32, 'numbers', qos)
    executor, spin, deadline = _spin_matched(rclpy_context, node, publisher, num_threads=2)
    try:
        for value in (1, -1, 2, -2, 3):
            publisher.publish(Int32(data=value))
            time.sleep(0.05)
        while len(received) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert received == [1, 2, 3]
        assert spin.is_alive(), 'a callback exception killed the spin thread'
        assert executor.callback_errors == 2
        assert 'ValueError: hostile payload' in executor.last_callback_error
    finally:
        assert executor.shutdown(timeout_sec=5.0)
        spin.join(timeout=5.0)
        node.destroy_node()
    err = capfd.readouterr().err
    assert err.count('Traceback (most recent call last)') == 1, err   # same fault: once
    assert 'hostile payload -1' in err


class _VanishingWaitable(Waitable):
    """A waitable whose entity is destroyed between the executor's collection of it and the
    wait set it builds, ``times`` times: what a subscription's QoS-event handler does when a
    lifecycle transition destroys the subscription in another thread (ros2/rclpy#1284)."""

    def __init__(self, callback_group, times: int) -> None:
        super().__init__(callback_group)
        self.left = times

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None

    def get_num_entities(self):
        return NumberOfEntities()

    def add_to_wait_set(self, wait_set) -> None:
        if self.left > 0:
            self.left -= 1
            raise InvalidHandle('cannot use Destroyable because destruction was requested')

    def is_ready(self, wait_set) -> bool:
        return False

    def take_data(self):
        return None

    async def execute(self, taken_data) -> None:
        return None


def test_an_entity_destroyed_while_the_wait_set_is_built_does_not_stop_spinning(rclpy_context):
    """The composed line's executor thread once died of rclpy's InvalidHandle when the
    classifier was cleaned up mid-run, and no bolt got a verdict after that."""
    node = rclpy.create_node('executor_vanishing', context=rclpy_context)
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    received = []
    node.create_subscription(Int32, 'numbers', lambda msg: received.append(msg.data), qos)
    publisher = node.create_publisher(Int32, 'numbers', qos)
    vanishing = _VanishingWaitable(node.default_callback_group, times=3)
    node.add_waitable(vanishing)
    executor, spin, deadline = _spin_matched(rclpy_context, node, publisher, num_threads=2)
    try:
        for value in (1, 2, 3):
            publisher.publish(Int32(data=value))
        while len(received) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert received == [1, 2, 3]
        assert spin.is_alive(), 'InvalidHandle killed the spin thread'
        assert vanishing.left == 0 and executor.vanished_entities == 3
    finally:
        assert executor.shutdown(timeout_sec=5.0)
        spin.join(timeout=5.0)
        node.destroy_node()
