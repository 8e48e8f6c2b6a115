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
    """The node's current lifecycle state label ('unconfigured', 'inactive', 'active', ...)."""
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


def lifecycle_main(node_cls, args: Iterable[str] | None = None, *, autostart: bool = True) -> int:
    """``main()`` of a lifecycle node executable (ros2/demos talker shape).

    Brings the node up itself (``autostart``) so ``ros2 run`` and the launch file work without a
    lifecycle manager; ``ros2 lifecycle set`` still works on the node afterwards. A node whose
    configure fails stays alive, unconfigured, so the operator can fix the cause (plug the
    camera in, put the model in place, set the classifier's ``model``) and configure it again
    instead of restarting the launch.
    """
    rosenv.apply_defaults()
    rclpy.init(args=args)
    node = node_cls()
    executor = make_executor()
    executor.add_node(node)
    code = 0
    try:
        if autostart and not bring_up(node):
            name = node.get_fully_qualified_name()
            node.get_logger().error(
                f'staying {state_label(node)}: once the cause above is fixed (device plugged '
                f'in, file in place, writable parameter set), `ros2 lifecycle set {name} '
                'configure` then `activate` retries')
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return code


def exit_main(node_cls, args=None) -> None:
    """Entry-point wrapper: ``sys.exit(lifecycle_main(...))``."""
    sys.exit(lifecycle_main(node_cls, args))
