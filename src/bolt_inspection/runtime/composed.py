"""The line's nodes composed in one process, on one multi-threaded executor.

:class:`ComposedLine` builds every node of a node list (:func:`bolt_inspection.graph.line_nodes`,
the launch file's list) with the parameters of the params file, spins them on the project's
executor (:mod:`bolt_inspection.nodes.executor`) and brings the lifecycle nodes up in order and
down in reverse. :class:`bolt_inspection.runtime.processes.LaunchedLine` is the same interface
with one process per node.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Mapping
from typing import Any

from bolt_inspection.core.errors import ConfigError
from bolt_inspection.graph import NodeSpec, node_parameter_values


def _load_class(path: str):
    module, _, name = path.partition(':')
    return getattr(importlib.import_module(module), name)


class ComposedLine:
    """The line's nodes in one process, on one multi-threaded executor.

    Args:
        specs: The node list (:func:`bolt_inspection.graph.line_nodes`).
        config: The params-file mapping.
        context: The rclpy Context.
        overrides: Node name -> parameter overrides on top of everything else.
        node_kwargs: Node name -> extra constructor keyword arguments (tests inject fakes).
    """

    def __init__(self, specs: list[NodeSpec], config: Mapping[str, Any], *, context,
                 overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 node_kwargs: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        from bolt_inspection.nodes.executor import make_executor
        from bolt_inspection.nodes.lifecycle_util import to_parameters
        self.specs = list(specs)
        self.context = context
        self.parameters = {s.name: node_parameter_values(s, config, (overrides or {}).get(s.name))
                           for s in self.specs}
        self.nodes = {}
        for spec in self.specs:
            cls = _load_class(spec.node_class)
            kwargs = dict((node_kwargs or {}).get(spec.name, {}))
            self.nodes[spec.name] = cls(spec.name, context=context,
                                        parameter_overrides=to_parameters(
                                            self.parameters[spec.name]), **kwargs)
        # Cameras publish from their trigger callbacks and the classifier decodes in its
        # subscription callbacks: enough threads that four cameras run at once.
        self.executor = make_executor(context, num_threads=max(4, len(self.nodes) + 2))
        for node in self.nodes.values():
            self.executor.add_node(node)
        self._thread: threading.Thread | None = None

    def add_node(self, node) -> None:
        """Add a helper node (e.g. the line driver) to the executor."""
        self.executor.add_node(node)
        self.nodes[node.get_name()] = node

    def start(self) -> None:
        """Spin, then configure and activate the lifecycle nodes in order.

        Raises:
            ConfigError: A node failed to configure or activate (its log line says why).
        """
        from bolt_inspection.nodes.lifecycle_util import bring_up
        self._thread = threading.Thread(target=self.executor.spin, name='line-executor',
                                        daemon=True)
        self._thread.start()
        for spec in self.specs:
            if spec.lifecycle and not bring_up(self.nodes[spec.name]):
                raise ConfigError(f'node {spec.name} failed to configure/activate '
                                  '(see its log line above)')

    def stop(self) -> None:
        """Deactivate in reverse start order (the classifier last, so bolts in flight still get
        their verdicts) and destroy every node."""
        from bolt_inspection.nodes.lifecycle_util import bring_down
        for spec in reversed(self.specs):
            node = self.nodes.get(spec.name)
            if spec.lifecycle and node is not None:
                try:
                    bring_down(node)
                except Exception as exc:  # noqa: BLE001 - keep shutting the others down
                    node.get_logger().warning(f'shutdown: {exc}')
        self.executor.shutdown(timeout_sec=5.0)
        if self._thread is not None:
            # Destroying nodes under a still-spinning executor thread can abort the process.
            self._thread.join(timeout=5.0)
        for node in self.nodes.values():
            node.destroy_node()


def wait_for_subscribers(publisher, count: int, timeout_s: float = 10.0) -> bool:
    """Wait until ``publisher`` has ``count`` matched subscriptions; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while publisher.get_subscription_count() < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
