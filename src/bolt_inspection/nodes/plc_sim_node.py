"""PLC simulator node: the line PLC stand-in, started like any node of the package.

``ros2 launch bolt_inspection line.launch.py plc_sim:=true`` starts it as
``ros2 run bolt_inspection plc_sim_node`` would, with ``config/plc.yaml`` and the line's params
file: the ``plc_sim`` block sets the conveyor model, ``plc_config`` the register map (the
``plc_bridge`` block of the same file), ``start`` presses the start button at once. It serves the
PLC contract over real Modbus TCP (:class:`bolt_inspection.core.plc.server.PlcSimulator`); it is a
ROS node only so that it gets its parameters, log and ``/diagnostics`` the ROS way. It is not a
lifecycle node: it stands in for hardware outside the PC and runs from start to exit.

At exit (SIGINT from ``ros2 launch``) it stops the conveyor and writes the scored summary to
``summary_out`` when that is set.
"""

from __future__ import annotations

import math

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node

from bolt_inspection.core.errors import BoltInspectionError
from bolt_inspection.core.plc.contract import SimConfig
from bolt_inspection.nodes import topics
from bolt_inspection.nodes.lifecycle_util import (
    declare,
    exit_main,
    key_values,
    publish_diagnostics,
)

# Summary keys worth a KeyValue on /diagnostics (scalars a dashboard plots).
_STATUS_KEYS = ('running', 'heartbeat_stale', 'done', 'bolts_in', 'sorted', 'passed', 'rejected',
                'in_transit', 'failsafe_rejects', 'late_verdicts', 'verdicts', 'scored',
                'accuracy', 'modbus_requests', 'modbus_exceptions')


class PlcSimNode(Node):
    """Runs the simulated line PLC (Modbus TCP server + conveyor model) from parameters."""

    def __init__(self, node_name: str = 'plc_sim', *, context=None, parameter_overrides=None,
                 **kw) -> None:
        super().__init__(node_name, context=context, parameter_overrides=parameter_overrides,
                         **kw)
        d = SimConfig()
        p = self._params = {}
        p['plc_config'] = declare(self, 'plc_config', '', "plc.yaml with the register map; '' "
                                  '= the shipped config/plc.yaml', read_only=True)
        p['host'] = declare(self, 'host', '', "Bind address; '' = plc_config's (127.0.0.1)",
                            read_only=True)
        p['port'] = declare(self, 'port', 0, "TCP port; 0 = plc_config's (5020)",
                            read_only=True, int_range=(0, 65535))
        p['rate_per_min'] = declare(self, 'rate_per_min', d.rate_per_min, 'Bolts per minute '
                                    'while the conveyor runs', read_only=True,
                                    float_range=(0.1, 6000.0))
        p['gate_delay_s'] = declare(self, 'gate_delay_s', d.gate_delay_s, 'Conveyor travel '
                                    'camera station -> sorting gate', read_only=True,
                                    float_range=(0.0, 600.0))
        p['heartbeat_timeout_s'] = declare(self, 'heartbeat_timeout_s', d.heartbeat_timeout_s,
                                           'A stale heartbeat for this long stops the conveyor '
                                           '(0 = no watchdog)', read_only=True,
                                           float_range=(0.0, 600.0))
        p['seed'] = declare(self, 'seed', d.seed, 'Synthetic scenario: bolt n is '
                            'bolt_spec(seed, n, defect_rate), scored against its truth',
                            read_only=True)
        p['defect_rate'] = declare(self, 'defect_rate', d.defect_rate, 'Synthetic defect rate',
                                   read_only=True, float_range=(0.0, 1.0))
        p['bolts'] = declare(self, 'bolts', d.bolts, 'Stop feeding after this many bolts '
                             '(0 = endless)', read_only=True, int_range=(0, 10_000_000))
        p['summary_period_s'] = declare(self, 'summary_period_s', d.summary_period_s,
                                        'Period of the summary log line (0 = none)',
                                        read_only=True, float_range=(0.0, 3600.0))
        p['start'] = declare(self, 'start', False, 'Press the start button at once (else an '
                             'operator starts the conveyor: /line/start, the HMI)',
                             read_only=True)
        p['summary_out'] = declare(self, 'summary_out', '', "Write the scored summary (JSON) "
                                   "here at exit; '' = nowhere", read_only=True)
        self.simulator = None
        self._diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS,
                                               topics.DIAGNOSTICS_QOS)

    def open(self) -> bool:
        """Start serving; False (after one log line) when the config or the port is bad."""
        from bolt_inspection.core.plc.server import PlcSimulator
        p = self._params
        sim = {k: p[k] for k in ('rate_per_min', 'gate_delay_s', 'heartbeat_timeout_s', 'seed',
                                 'defect_rate', 'bolts', 'summary_period_s')}
        try:
            self.simulator = PlcSimulator.from_config(
                p['plc_config'] or None, host=p['host'] or None, port=p['port'] or None,
                **sim).start()
        except BoltInspectionError as exc:
            self.get_logger().error(f'cannot start the PLC simulator: {exc}')
            return False
        s = self.simulator
        truth = 'scored against the synthetic truth' if s.model.truth else 'truth unknown'
        self.get_logger().info(
            f'Modbus TCP on {s.host}:{s.port}, {s.sim.rate_per_min:g} bolts/min, gate delay '
            f'{s.sim.gate_delay_s:g} s, heartbeat timeout {s.sim.heartbeat_timeout_s:g} s, '
            f'seed {s.sim.seed} ({truth})')
        if p['start']:
            s.set_running(True)
            self.get_logger().info('conveyor started (start:=true)')
        self.create_timer(1.0, self._publish_diagnostics)
        if p['summary_period_s'] > 0:
            self.create_timer(p['summary_period_s'],
                              lambda: self.get_logger().info(s.summary_line()))
        return True

    def close(self) -> None:
        """Stop the conveyor and the server; write the summary if asked to (idempotent)."""
        s, self.simulator = self.simulator, None
        if s is None:
            return
        s.stop()
        self.get_logger().info(s.summary_line())
        if self._params['summary_out']:
            try:
                path = s.write_summary(self._params['summary_out'])
                self.get_logger().info(f'summary written to {path}')
            except OSError as exc:
                self.get_logger().error(f'cannot write the summary: {exc}')

    def _publish_diagnostics(self) -> None:
        s = self.simulator
        if s is None:
            return
        summary = s.summary()
        values = {k: summary.get(k) for k in _STATUS_KEYS}
        if isinstance(values['accuracy'], float) and math.isnan(values['accuracy']):
            values['accuracy'] = None
        stale = bool(summary.get('heartbeat_stale'))
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if stale else DiagnosticStatus.OK,
            name=f'{self.get_name()}: simulated PLC', hardware_id=f'{s.host}:{s.port}',
            message=s.summary_line(), values=key_values(values))
        publish_diagnostics(self, self._diag_pub, status)


def main(args=None) -> None:
    exit_main(PlcSimNode, args)


if __name__ == '__main__':
    main()
