"""Lifecycle manager node: brings the line's lifecycle nodes up in order and watches them.

Like nav2's ``lifecycle_manager``: the node executables start unconfigured (their ``autostart``
parameter is false under ``ros2 launch``), and this node configures and activates them through
their ``change_state`` services, strictly in ``node_names`` order (listeners, classifier,
cameras, PLC bridge; see :mod:`bolt_inspection.core.line.bringup`). A node that fails to configure
(camera unplugged, model missing) is retried every ``retry_period_s`` and everything after it
waits, so the PLC bridge never triggers bolts that no camera or classifier would see. Once up,
it keeps polling ``get_state`` and publishes the line's state on ``/diagnostics``; a node that
dies or is deactivated turns that status to ERROR and is brought back when it answers again.

``start_when_up`` (off by default; the launch file turns it on only with the simulated PLC)
presses Start (``/line/start``) once, the first time every node is active: the conveyor then
never carries a bolt past cameras that are not ready.
"""

from __future__ import annotations

import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from std_srvs.srv import Trigger

from bolt_inspection.core.line.bringup import health, next_step
from bolt_inspection.nodes import topics
from bolt_inspection.nodes.lifecycle_util import (
    declare,
    exit_main,
    key_values,
    publish_diagnostics,
)

_TRANSITIONS = {'configure': Transition.TRANSITION_CONFIGURE,
                'activate': Transition.TRANSITION_ACTIVATE}


class LifecycleManager(Node):
    """Configures and activates ``node_names`` in order; reports their states."""

    def __init__(self, node_name: str = 'lifecycle_manager', *, context=None,
                 parameter_overrides=None, **kw) -> None:
        super().__init__(node_name, context=context, parameter_overrides=parameter_overrides,
                         **kw)
        self.order = [str(n) for n in declare(
            self, 'node_names', [''], 'Lifecycle nodes to bring up, in this order',
            read_only=True) if n]
        self.autostart = declare(self, 'autostart', True, 'Bring the nodes up at start',
                                 read_only=True)
        self.transition_timeout_s = declare(
            self, 'transition_timeout_s', 120.0, 'Longest wait for one transition (the '
            "classifier's configure loads the model)", float_range=(1.0, 3600.0),
            read_only=True)
        self.retry_period_s = declare(self, 'retry_period_s', 5.0, 'Wait before retrying a '
                                      'node that failed to configure or activate',
                                      float_range=(0.1, 600.0), read_only=True)
        self.check_period_s = declare(self, 'check_period_s', 1.0, 'State polling and '
                                      '/diagnostics period', float_range=(0.1, 60.0),
                                      read_only=True)
        self.start_when_up = declare(self, 'start_when_up', False, 'Press Start '
                                     '(start_service) once, when every node is first active',
                                     read_only=True)
        self.start_service = declare(self, 'start_service', topics.START_SERVICE, 'The Start '
                                     'button (std_srvs/Trigger, served by the PLC bridge)',
                                     read_only=True)
        group = ReentrantCallbackGroup()
        self._start = self.create_client(Trigger, self.start_service, callback_group=group)
        self.started = False
        self._get = {n: self.create_client(GetState, f'/{n}/get_state', callback_group=group)
                     for n in self.order}
        self._change = {n: self.create_client(ChangeState, f'/{n}/change_state',
                                              callback_group=group) for n in self.order}
        self._diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS,
                                               topics.DIAGNOSTICS_QOS)
        self.states: dict[str, str | None] = dict.fromkeys(self.order)
        self.failures: dict[str, int] = dict.fromkeys(self.order, 0)
        self.up = threading.Event()       # set once every node is active
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.create_timer(self.check_period_s, self._publish_diagnostics)

    def open(self) -> bool:
        """Start the bring-up / watch thread (called by ``node_main`` once spinning)."""
        if not self.order:
            self.get_logger().error('node_names is empty: nothing to manage')
            return False
        self._thread = threading.Thread(target=self._run, name='lifecycle-manager',
                                        daemon=True)
        self._thread.start()
        return True

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.check_period_s + 2.0)

    # -- the loop (its own thread: service calls block, callbacks must not) -------------------
    def _run(self) -> None:
        self.get_logger().info('bringing up ' + ' -> '.join(self.order))
        while not self._stop.is_set():
            try:
                self._manage()
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive any one fault
                self.get_logger().error(f'lifecycle manager: {type(exc).__name__}: {exc}; '
                                        'carrying on', throttle_duration_sec=5.0)
                self._stop.wait(self.check_period_s)

    def _manage(self) -> None:
        announced = False
        while not self._stop.is_set():
            self._poll_states()
            step = next_step(self.order, self.states) if self.autostart else None
            if step is None:
                if not announced and all(s == 'active' for s in self.states.values()):
                    self.get_logger().info(f'line up: {len(self.order)} nodes active')
                    announced = True
                    self.up.set()
                    if self.start_when_up and not self.started:
                        self.started = self._press_start()
                self._stop.wait(self.check_period_s)
                continue
            announced = False
            self.up.clear()
            if step.action in _TRANSITIONS:
                if not self._transition(step.node, step.action):
                    self.failures[step.node] += 1
                    self._stop.wait(self.retry_period_s)
            else:   # 'wait' for a node to answer, or 'blocked' until someone acts
                self._stop.wait(self.check_period_s)

    def _press_start(self, patience_s: float = 30.0) -> bool:
        """Call the Start service until it succeeds (the bridge may still be connecting)."""
        deadline = time.monotonic() + patience_s
        message = 'no answer'
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self._start.wait_for_service(timeout_sec=1.0):
                try:
                    response = self._start.call(Trigger.Request(), timeout_sec=5.0)
                except TimeoutError:
                    response = None
                if response is not None and response.success:
                    self.get_logger().info(f'conveyor started: {response.message}'.rstrip(': '))
                    return True
                message = response.message if response is not None else 'no answer'
            self._stop.wait(0.5)
        self.get_logger().error(f'could not press Start ({self.start_service}): {message}')
        return False

    def _poll_states(self) -> None:
        for name in self.order:
            self.states[name] = self._state_of(name)

    def _state_of(self, name: str) -> str | None:
        client = self._get[name]
        if not client.service_is_ready():
            return None
        try:
            # A process that just died still shows its service until discovery notices.
            response = client.call(GetState.Request(), timeout_sec=2.0)
        except TimeoutError:
            return None
        return response.current_state.label if response is not None else None

    def _transition(self, name: str, action: str) -> bool:
        self.get_logger().info(f'{name}: {action}')
        client = self._change[name]
        request = ChangeState.Request(transition=Transition(id=_TRANSITIONS[action]))
        try:
            response = client.call(request, timeout_sec=self.transition_timeout_s)
        except TimeoutError:
            response = None
        if response is None or not response.success:
            why = 'no answer' if response is None else 'failed (see its log)'
            self.get_logger().error(f'{name}: {action} {why}; retrying in '
                                    f'{self.retry_period_s:g} s, the nodes after it wait')
            return False
        return True

    def _publish_diagnostics(self) -> None:
        all_active, message = health(self.order, self.states)
        values = {f'{n}.state': self.states.get(n) or 'not answering' for n in self.order}
        values.update({f'{n}.failed_transitions': self.failures[n] for n in self.order})
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK if all_active else DiagnosticStatus.ERROR,
            name=f'{self.get_name()}: line bring-up', hardware_id='line', message=message,
            values=key_values(values))
        publish_diagnostics(self, self._diag_pub, status)


def main(args=None) -> None:
    exit_main(LifecycleManager, args)


if __name__ == '__main__':
    main()
