"""The line's node graph as plain data: the ONE node list.

``launch/line.launch.py`` (``ros2 launch`` in a ROS 2 install) and ``bolt-inspection line`` (the
same nodes composed in one process, for the PyPI wheels that have no launch_ros) both call
:func:`line_nodes`, so they cannot drift apart. Every node reads its parameters from the one
params file (``config/line.yaml``, keyed by node name, ``ros__parameters``); the parameters in a
:class:`NodeSpec` are the launch arguments' overrides on top of it.

No rclpy and no launch import here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bolt_inspection.core.errors import ConfigError

PACKAGE = 'bolt_inspection'
SOURCES = ('synthetic', 'folder', 'device', 'bag')
DEFAULT_CAMS = (0, 1, 2, 3)


@dataclass(frozen=True)
class NodeSpec:
    """One node of the line.

    Attributes:
        name: Node name; also its key in the params file.
        executable: Console script of the package that runs it alone (setup.py entry point).
        node_class: ``'module:Class'`` that ``bolt-inspection line`` instantiates in-process.
        parameters: Overrides applied on top of the params file.
        remappings: ``(from, to)`` topic remappings.
        lifecycle: True for lifecycle nodes (configured and activated after start).
        params_files: Extra params files for this node (config file names under
            ``share/bolt_inspection/config``), read before the line's params file.
        package: The ROS package of ``executable``.
    """

    name: str
    executable: str
    node_class: str
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    lifecycle: bool = True
    params_files: tuple[str, ...] = ()
    package: str = PACKAGE


def line_nodes(*, source: str = 'synthetic', model: str = '', bag: str = '', folder: str = '',
               device: str = '', cams: tuple[int, ...] = DEFAULT_CAMS, plc: bool = False,
               plc_host: str = '', plc_port: int | str = 0, log: bool = False,
               hmi: bool = False, plc_sim: bool = False, plc_sim_start: bool = True,
               manager: bool = False) -> list[NodeSpec]:
    """Return the line's nodes for the given launch arguments.

    Args:
        source: Where camera frames come from: 'synthetic', 'folder', 'device' (camera nodes
            with that source) or 'bag' (a bag player replaces the cameras and the trigger).
        model: Model artifact directory for the classifier ('' = the params file's).
        bag: Bag directory for ``source='bag'``.
        folder: Dataset folder for ``source='folder'`` ('' = the params file's).
        device: Device spec for ``source='device'`` ('' = each camera's from the params file;
            a value with ``{}`` is formatted with the camera index, e.g. ``/dev/video{}``).
        cams: Camera indices.
        plc: Add the PLC bridge (it publishes /line/trigger from the PLC's bolt counter and
            writes the verdicts back); its parameters come from ``config/plc.yaml``. Ignored for
            ``source='bag'``, whose recorded triggers drive the line.
        plc_host: PLC host override ('' = plc.yaml's).
        plc_port: PLC port override (0 or '' = plc.yaml's).
        log: Add the inspection log (every verdict into SQLite, NG evidence as PNG); its
            parameters come from ``config/log.yaml``.
        hmi: Add the operator web page (``config/hmi.yaml``: 127.0.0.1:8080 by default).
            Off by default here because a second line on the same machine (a test, a bench
            run) would collide on the port and the log file; the launch file turns both on.
        plc_sim: Add the simulated line PLC (``plc_sim_node``, ``config/plc.yaml``), serving
            on ``plc_host``/``plc_port`` like the PLC the bridge talks to.
        plc_sim_start: With ``plc_sim`` (and the bridge): the lifecycle manager presses Start
            once every node is active, so the simulated conveyor runs without an operator.
        manager: Add the ``lifecycle_manager`` node that configures and activates the
            lifecycle nodes in this order (one process per node: the launch file). The
            composed line brings its nodes up itself and leaves it out.

    Returns:
        Node specs in start order: the PLC simulator, the inspection log and the HMI
        (listeners first, so they see every verdict), the classifier, then the cameras (or the
        bag player), then the PLC bridge, then the lifecycle manager. Lifecycle nodes are
        brought up in this order.

    Raises:
        ConfigError: An unknown source, or ``source='bag'`` without a bag.
    """
    if source not in SOURCES:
        raise ConfigError(f'source {source!r}: expected one of {", ".join(SOURCES)}')
    if source == 'bag' and not bag:
        raise ConfigError('source bag needs bag:=PATH (a rosbag2 directory)')
    classifier_params: dict[str, Any] = {'cams': [int(c) for c in cams]}
    if model:
        classifier_params['model'] = str(model)
    nodes: list[NodeSpec] = []
    if plc_sim and source != 'bag':
        sim_params: dict[str, Any] = {}
        if plc_host:
            sim_params['host'] = str(plc_host)
        if plc_port and int(plc_port):
            sim_params['port'] = int(plc_port)
        nodes.append(NodeSpec('plc_sim', 'plc_sim_node',
                              'bolt_inspection.nodes.plc_sim_node:PlcSimNode',
                              parameters=sim_params, lifecycle=False,
                              params_files=('plc.yaml',)))
    # Listeners before the verdicts' producer: no verdict goes unlogged or uncounted.
    if log:
        nodes.append(NodeSpec('inspection_log', 'inspection_log_node',
                              'bolt_inspection.nodes.inspection_log_node:InspectionLogNode',
                              params_files=('log.yaml',)))
    if hmi:
        nodes.append(NodeSpec('hmi', 'hmi_node', 'bolt_inspection.nodes.hmi_node:HmiNode',
                              params_files=('hmi.yaml',)))
    # The consumer first: the classifier is active before any frame or replayed trigger flows.
    nodes.append(NodeSpec('classifier', 'classifier_node',
                      'bolt_inspection.nodes.classifier_node:ClassifierNode',
                      parameters=classifier_params))
    if source == 'bag':
        nodes.append(NodeSpec('bag_player', 'bag_player',
                              'bolt_inspection.nodes.bag_player:BagPlayer',
                              parameters={'bag': str(bag)}))
        return _with_manager(nodes, start_when_up=False) if manager else nodes
    for cam in cams:
        params: dict[str, Any] = {'camera_index': int(cam), 'source': source}
        if source == 'folder' and folder:
            params['folder'] = str(folder)
        if source == 'device' and device:
            params['device'] = device.format(cam) if '{}' in device else device
        nodes.append(NodeSpec(f'cam{cam}', 'camera_node',
                              'bolt_inspection.nodes.camera_node:CameraNode',
                              parameters=params))
    if plc and source != 'bag':
        # Last: the classifier and the cameras are active before the first trigger.
        # The heartbeat means "the inspection path is alive": these must report
        # (core.plc.liveness).
        plc_params: dict[str, Any] = {
            'watch_stages': [n.name for n in nodes if n.executable in ('classifier_node',
                                                                      'camera_node')]}
        if plc_host:
            plc_params['host'] = str(plc_host)
        if plc_port and int(plc_port):
            plc_params['port'] = int(plc_port)
        nodes.append(NodeSpec('plc_bridge', 'plc_bridge_node',
                              'bolt_inspection.nodes.plc_bridge_node:PlcBridgeNode',
                              parameters=plc_params, params_files=('plc.yaml',)))
    if not manager:
        return nodes
    return _with_manager(nodes, start_when_up=plc and plc_sim and plc_sim_start)


def _with_manager(nodes: list[NodeSpec], *, start_when_up: bool) -> list[NodeSpec]:
    """Append the lifecycle manager that brings the lifecycle nodes up in list order."""
    order = [n.name for n in nodes if n.lifecycle]
    return nodes + [NodeSpec('lifecycle_manager', 'lifecycle_manager',
                             'bolt_inspection.nodes.lifecycle_manager:LifecycleManager',
                             parameters={'node_names': order,
                                         'start_when_up': bool(start_when_up)},
                             lifecycle=False)]


def drives_triggers(nodes: list[NodeSpec]) -> bool:
    """True when some node of the list publishes /line/trigger (a bag player or PLC bridge)."""
    return any(n.executable in ('bag_player', 'plc_bridge_node') for n in nodes)


def node_parameter_values(spec: NodeSpec, config: Mapping[str, Any],
                          extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The parameters a node gets: its params files, the line's file, the spec, then ``extra``.

    The same layering launch_ros applies to the launch file's ``parameters=[...]`` list.
    """
    from bolt_inspection import paths
    from bolt_inspection.core.config import load_yaml, node_parameters
    values: dict[str, Any] = {}
    for name in spec.params_files:
        values.update(node_parameters(load_yaml(paths.config_path(name)), spec.name))
    values.update(node_parameters(config, spec.name))
    values.update(spec.parameters)
    values.update(extra or {})
    return values
