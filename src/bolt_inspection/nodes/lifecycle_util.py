"""Small helpers the package's lifecycle nodes share: parameters, stamps, bring-up, main()."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
)
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.parameter import Parameter

from bolt_inspection import rosenv
from bolt_inspection.core.config import flatten
from bolt_inspection.nodes.executor import make_executor


def declare(node, name: str, default: Any, description: str, *, read_only: bool = False,
            int_range: tuple[int, int] | None = None,
            float_range: tuple[float, float] | None = None,
            constraints: str = '') -> Any:
    """Declare one parameter with a descriptor and return its value."""
    descriptor = ParameterDescriptor(description=description, read_only=read_only,
                                     additional_constraints=constraints)
    if int_range is not None:
        descriptor.integer_range = [IntegerRange(from_value=int_range[0],
                                                 to_value=int_range[1], step=0)]
    if float_range is not None:
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=float(float_range[0]), to_value=float(float_range[1]), step=0.0)]
    return node.declare_parameter(name, default, descriptor).value


def stamp_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time -> integer nanoseconds (the join key)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


#: A stamp further in the past than this is a replayed one (a bag): its age says nothing about
#: the line's latency.
MAX_LIVE_STAMP_AGE_S = 60.0


def live_stamp_age_s(node, stamp_ns: int) -> float | None:
    """Seconds from ``stamp_ns`` to now on ``node``'s clock; None for a replayed or future stamp.

    Stamps are the PLC bridge's system clock and every process of the line runs on one machine.
    """
    age_s = (node.get_clock().now().nanoseconds - int(stamp_ns)) * 1e-9
    return age_s if 0.0 <= age_s <= MAX_LIVE_STAMP_AGE_S else None


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds -> builtin_interfaces/Time."""
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def key_values(values: Mapping[str, Any]) -> list[KeyValue]:
    """A mapping -> diagnostic KeyValues (floats with 4 decimals, None as 'n/a')."""
    out = []
    for key, value in values.items():
        if value is None:
            text = 'n/a'
        elif isinstance(value, float):
            text = f'{value:.4f}'
        else:
            text = str(value)
        out.append(KeyValue(key=str(key), value=text))
    return out


def to_parameters(values: Mapping[str, Any]) -> list[Parameter]:
    """A params-file mapping -> rclpy Parameters for ``parameter_overrides``.

    Nested mappings become dotted names. YAML lists of ints must stay integer arrays and an empty
    list has no type, so empty lists are dropped (the node's declared default applies).
    """
    params = []
    for name, value in flatten(values).items():
        if isinstance(value, (list, tuple)):
            if not value:
                continue
            if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                value = [int(v) for v in value]
            elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                value = [float(v) for v in value]
            else:
                value = [str(v) for v in value]
        params.append(Parameter(name, value=value))
    return params


def destroy_entities(node, entities: list) -> None:
    """Destroy the timers, publishers, services and subscriptions a node created, and empty
    the list (what ``on_cleanup`` / ``destroy_node`` of each lifecycle node does)."""
    for entity in entities:
        if hasattr(entity, 'cancel'):
            entity.cancel()
            node.destroy_timer(entity)
        elif hasattr(entity, 'publish'):
            node.destroy_publisher(entity)
        elif hasattr(entity, 'srv_type'):
            node.destroy_service(entity)
        else:
            node.destroy_subscription(entity)
    entities.clear()


def publish_diagnostics(node, publisher, status) -> None:
    """Publish one node's ``DiagnosticStatus`` on /diagnostics, stamped with the node's clock."""
    array = DiagnosticArray(status=[status])
    array.header.stamp = node.get_clock().now().to_msg()
    publisher.publish(array)


def state_label(node: LifecycleNode) -> str:
    """The node's current lifecycle state label ('unconfigured', 'inactive', 'active', ...).

    rclpy (9.1, Kilted) has no public accessor: its own trigger_shutdown reads the same
    ``_state_machine``; this is the one place the project does.
    """
    return node._state_machine.current_state[1]


def bring_up(node: LifecycleNode) -> bool:
    """Configure and activate ``node`` (what a lifecycle manager does); False if either fails."""
    if state_label(node) == 'unconfigured':
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
    if state_label(node) == 'inactive':
        if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            return False
    return state_label(node) == 'active'


def bring_down(node: LifecycleNode) -> None:
    """Deactivate and clean up ``node`` as far as its state allows."""
    if state_label(node) == 'active':
        node.trigger_deactivate()
    if state_label(node) == 'inactive':
        node.trigger_cleanup()


def node_main(node_cls, args: Iterable[str] | None = None) -> int:
    """``main()`` of every node executable of the package (ros2/demos talker shape).

    Lifecycle nodes: when the node's ``autostart`` parameter is true it configures and activates
    itself (``ros2 run bolt_inspection camera_node --ros-args -p autostart:=true``); otherwise it
    waits, unconfigured, for a lifecycle manager — the line's ``lifecycle_manager`` node, which
    the launch file starts, brings the nodes up in order — or ``ros2 lifecycle set``. A node whose
    configure fails stays alive, unconfigured, so the cause can be fixed (camera plugged in, model
    in place, writable parameter set) and the node configured again without a restart.

    Plain nodes may have ``open() -> bool`` (called once spinning; False exits with status 2)
    and ``close()`` (called at exit while the context is still valid).

    Shutdown: SIGINT / SIGTERM (what ``ros2 launch`` sends on Ctrl-C) run the node's ``shutdown``
    transition while the ROS context is still valid — the classifier answers the bolts in
    flight, the camera releases its device — then the node is destroyed and rclpy shut down.
    rclpy's own signal handler would invalidate the context first, so it is not installed.
    The signal also sets the node's ``shutdown_requested`` event at once: launch signals every
    process together, so a peer (the simulated PLC) may be gone before this node's transition,
    and the node can tell that from a fault.

    Returns:
        The exit status: 0, or 2 for a bad parameter or a node that could not open.
    """
    import signal
    import threading

    from rclpy.signals import SignalHandlerOptions

    rosenv.apply_defaults()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set())
                for signum in (signal.SIGINT, signal.SIGTERM)}
    node = None
    executor = make_executor()
    spinner = threading.Thread(target=_spin_until_shutdown, args=(executor,),
                               name='node-main-spin', daemon=True)
    code = 0
    try:
        try:
            node = node_cls()
            lifecycle = isinstance(node, LifecycleNode)
            autostart = lifecycle and declare(node, 'autostart', False, 'Configure and '
                                              'activate on start, without a lifecycle manager',
                                              read_only=True)
        except ParameterException as exc:
            # A wrong parameter type or value from the params file / command line: one line.
            print(f'error: {node_cls.__name__}: {exc}'.splitlines()[0], file=sys.stderr)
            return 2
        node.shutdown_requested = stop
        executor.add_node(node)
        spinner.start()
        if autostart and not bring_up(node):
            name = node.get_fully_qualified_name()
            node.get_logger().error(
                f'staying {state_label(node)}: once the cause above is fixed (device plugged '
                f'in, file in place, writable parameter set), `ros2 lifecycle set {name} '
                'configure` then `activate` retries')
        if not lifecycle and hasattr(node, 'open') and not node.open():
            return 2
        while not stop.wait(0.2) and spinner.is_alive():
            pass
    finally:
        if isinstance(node, LifecycleNode):
            if state_label(node) in ('unconfigured', 'inactive', 'active'):
                # While the context is valid: answer the bolts in flight, release devices.
                node.trigger_shutdown()
        elif hasattr(node, 'close'):
            node.close()
        executor.shutdown(timeout_sec=5.0)
        if spinner.is_alive():
            spinner.join(timeout=5.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code


def _spin_until_shutdown(executor) -> None:
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


#: After the node and rclpy are shut down, how long threads the process did not start itself as
#: daemons (the executor's workers) may take before the process exits without them.
EXIT_GRACE_S = 3.0


def exit_main(node_cls, args=None) -> None:
    """Entry-point wrapper: ``sys.exit(node_main(...))``.

    The node and rclpy are shut down by then. A thread still running (once seen: a camera
    process that outlived launch's 15-s grace after Ctrl-C, with nothing in its log) would keep
    the interpreter from exiting; it gets :data:`EXIT_GRACE_S`, then the process exits with its
    status anyway and names the threads on stderr.
    """
    import os
    import threading
    import time

    code = node_main(node_cls, args)
    deadline = time.monotonic() + EXIT_GRACE_S
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threading.enumerate()
             if t is not threading.current_thread() and not t.daemon and t.is_alive()]
    if stuck:
        print(f'warning: {node_cls.__name__}: exiting with {len(stuck)} thread(s) still '
              f'running after shutdown: {", ".join(stuck)}', file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(code or 0)
    sys.exit(code)
