"""The multi-threaded executor every process of the line spins on.

rclpy 9.1.2 (the PyPI rclpy here) has a ``MultiThreadedExecutor`` that yields a callback which is
queued in its thread pool but not started yet *again* on every pass of its wait loop, and queues
it again (ros2/rclpy#1452, fixed upstream in rclpy 10.0.4 by ros2/rclpy#1547). The duplicates do
nothing when they run, but the spin thread loops instead of waiting and holds the GIL: on a busy
2-core machine it stalled every other thread of the process (the PLC bridge's Modbus polls and
worker, the in-process PLC simulator) for up to ~1 s. Whole-file runs of tests/test_plc_bridge.py,
8 each, no reruns: 4 failed with the stock executor (72 stalls > 100 ms, longest 0.92 s), none
with :class:`RequeueFreeExecutor` (longest stall 50 ms).

It also survives an entity destroyed while it builds its wait set. rclpy 9.1.2 checks that a
subscription, timer or service is still alive before adding it, but not a waitable: the QoS-event
handlers of a subscription that a lifecycle transition destroys in another thread raise
``InvalidHandle`` ("destruction was requested") from ``add_to_wait_set`` in the spin thread
(ros2/rclpy#1284), which ended ``spin()``. A fresh-clone test run saw it once: the composed line's
classifier was cleaned up and configured again, and no bolt got a verdict after that. Here the
pass is dropped and the next one builds the wait set from the entities that are left.

It also keeps spinning when a callback raises. rclpy's executors re-raise a callback's exception
in the spin thread, which ends ``spin()``: in ``bolt-inspection line`` that thread was the whole
line's, so one malformed message stopped every node's callbacks while the conveyor ran on. Here a
callback's exception is logged with its traceback the first time that fault (type and place)
occurs, counted every time (:attr:`RequeueFreeExecutor.callback_errors`), and the next callbacks
run as usual. Callers still see the exception of a task they hold (``task.result()``).

Drop the re-queue part (and let :func:`make_executor` return rclpy's executor with the same
exception handling) once rclpy >= 10.0.4 is available; tests/test_executor.py says so when the
stock executor stops re-queueing.
"""

from __future__ import annotations

import threading
import traceback

from rclpy.exceptions import InvalidHandle
from rclpy.executors import (
    ConditionReachedException,
    ExternalShutdownException,
    MultiThreadedExecutor,
    ShutdownException,
    TimeoutException,
)
from rclpy.logging import get_logger


class RequeueFreeExecutor(MultiThreadedExecutor):
    """A ``MultiThreadedExecutor`` that queues each ready callback in its pool once.

    While a yielded callback still waits for a pool thread, the spin thread waits (without the
    GIL) until the pool starts a callback instead of queueing it again. A coroutine callback that
    awaited a future has left the queue, so it is queued again when yielded, as before.
    """

    def __init__(self, num_threads: int | None = None, *, context=None) -> None:
        super().__init__(num_threads, context=context)
        self._queued: set = set()  # tasks submitted to the pool that no thread has started
        self._started = threading.Condition()
        self.callback_errors = 0
        self.vanished_entities = 0   # wait-set passes dropped for an entity destroyed meanwhile
        self.last_callback_error = ''
        self._faults_seen: set[tuple] = set()

    def _start(self, task) -> None:
        with self._started:
            self._queued.discard(task)
            self._started.notify_all()
        task()

    def _spin_once_impl(self, timeout_sec=None, wait_condition=lambda: False) -> None:
        # rclpy 9.1.2's own body, except for the `_queued` check and `_start` around the task.
        try:
            handler, _, _ = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException,
                ConditionReachedException):
            return
        except InvalidHandle:
            # An entity was destroyed while the wait set was built (see the module doc); the
            # next pass starts a new wait set without it.
            self.vanished_entities += 1
            return
        with self._started:
            if handler in self._queued:
                self._started.wait(0.01)
                return
            self._queued.add(handler)
        self._executor.submit(self._start, handler)
        self._futures.append(handler)
        for future in self._futures[:]:
            if future.done():
                self._futures.remove(future)
                exc = future.exception()
                if exc is not None:
                    self._callback_failed(exc)

    def _callback_failed(self, exc: BaseException) -> None:
        """Log (traceback the first time per fault) and count a callback's exception."""
        frames = traceback.extract_tb(exc.__traceback__)
        where = (frames[-1].filename, frames[-1].lineno) if frames else ('?', 0)
        fault = (type(exc).__name__, *where)
        text = f'{type(exc).__name__}: {exc}'[:500]
        with self._started:
            self.callback_errors += 1
            self.last_callback_error = text
            first = fault not in self._faults_seen
            self._faults_seen.add(fault)
            count = self.callback_errors
        logger = get_logger('bolt_inspection.executor')
        if first:
            trace = ''.join(traceback.format_exception(exc))
            logger.error(f'a callback raised; the executor keeps spinning ({count} callback '
                         f'error(s) so far). Traceback of this fault, shown once:\n{trace}')
        else:
            logger.error(f'a callback raised again ({count} callback error(s) so far): {text}',
                         throttle_duration_sec=5.0)


def make_executor(context=None, num_threads: int | None = None) -> MultiThreadedExecutor:
    """The project's multi-threaded executor (rclpy's default thread count if ``None``)."""
    return RequeueFreeExecutor(num_threads, context=context)
