"""Test helpers that keep the PLC and line tests' timing honest on a shared 2-core machine.

:class:`RequeueFreeExecutor` is rclpy's ``MultiThreadedExecutor`` without the re-queueing bug of
rclpy < 10.0.4 (ros2/rclpy#1452, fixed upstream by ros2/rclpy#1547; this venv has 9.1.2). That
executor yields a callback that is queued in its thread pool but not started yet *again* on every
pass of its wait loop, and queues it again: in the bridge tests' Line each callback was queued 5
to 6 times. Every duplicate costs the GIL, so when other processes take the CPUs the spin thread
loops instead of waiting (perf sched: it ran 220 ms straight while the Modbus worker, the
simulator and the test thread of the same process waited), polls stall, and the PLC counter
moves by several bolts between two polls. Interleaved whole-file runs of test_plc_bridge.py (not
slow, no reruns, 8 each): 4 of 8 failed with the stock executor (72 stalls > 100 ms, longest
0.92 s), none with this one (longest stall 50 ms).

Use it where a test spins nodes itself, and through :func:`use_requeue_free_executor` for code
that builds its own ``MultiThreadedExecutor`` when called (``ComposedLine`` of ``bolt-inspection
line``, the ``record`` and ``play`` commands).
"""

from __future__ import annotations

import threading

from rclpy.executors import (
    ConditionReachedException,
    ExternalShutdownException,
    MultiThreadedExecutor,
    ShutdownException,
    TimeoutException,
)


class RequeueFreeExecutor(MultiThreadedExecutor):
    """A ``MultiThreadedExecutor`` that queues each ready callback once.

    A callback the executor yields while it still waits for a pool thread is not queued again;
    the spin thread instead waits (without the GIL) until the pool starts a callback. A coroutine
    callback that awaited a future is started again as before, since it left the queue.
    """

    def __init__(self, num_threads: int | None = None, *, context=None) -> None:
        super().__init__(num_threads, context=context)
        self._queued: set = set()
        self._started = threading.Condition()

    def _start(self, task) -> None:
        with self._started:
            self._queued.discard(task)
            self._started.notify_all()
        task()

    def _spin_once_impl(self, timeout_sec=None, wait_condition=lambda: False) -> None:
        try:
            handler, _, _ = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException,
                ConditionReachedException):
            return
        with self._started:
            if handler in self._queued:
                # Still waiting for a pool thread: let it have the GIL rather than spin.
                self._started.wait(0.01)
                return
            self._queued.add(handler)
        self._executor.submit(self._start, handler)
        self._futures.append(handler)
        for future in self._futures[:]:
            if future.done():
                self._futures.remove(future)
                future.result()  # raise the callback's exception, as rclpy does


def use_requeue_free_executor(monkeypatch) -> None:
    """For the rest of the test, code that imports ``rclpy.executors.MultiThreadedExecutor``
    when it runs (``ComposedLine``, ``record``, ``play``) gets :class:`RequeueFreeExecutor`."""
    monkeypatch.setattr('rclpy.executors.MultiThreadedExecutor', RequeueFreeExecutor)
