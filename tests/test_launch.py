"""launch/line.launch.py: the standard launch file, checked without launch/launch_ros installed.

The launch file and `bolt-inspection line` must build the same node list from
bolt_inspection.graph.line_nodes; launch_ros is not on PyPI, so the launch file is executed here
against small stand-ins of the launch API that record what it creates.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest

from bolt_inspection import graph
from bolt_inspection.core.config import load_yaml, node_parameters
from bolt_inspection.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / 'launch' / 'line.launch.py'
ARGUMENTS = ('params_file', 'source', 'bag', 'model', 'rqt', 'rviz', 'plc', 'plc_sim',
             'plc_host', 'plc_port', 'log', 'hmi')


def _console_scripts() -> dict[str, str]:
    tree = ast.parse((ROOT / 'setup.py').read_text())
    scripts = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = re.fullmatch(r'\s*([\w-]+)\s*=\s*([\w.]+):(\w+)\s*', node.value)
            if match:
                scripts[match[1]] = f'{match[2]}:{match[3]}'
    return scripts


def test_launch_file_builds_its_nodes_with_line_nodes():
    tree = ast.parse(LAUNCH.read_text())
    calls = {n.func.id for n in ast.walk(tree)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert 'line_nodes' in calls
    imports = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
               for a in n.names}
    assert ('bolt_inspection.graph', 'line_nodes') in imports
    assert 'eval' not in calls and 'exec' not in calls


@pytest.mark.parametrize('source', ['synthetic', 'folder', 'device', 'bag'])
def test_every_node_has_an_executable_a_class_and_params(source):
    scripts = _console_scripts()
    config = load_yaml(ROOT / 'config' / 'line.yaml')
    for spec in graph.line_nodes(source=source, bag='/tmp/some_bag', model='/tmp/m', log=True,
                                 hmi=True, plc=True, plc_sim=True, manager=True):
        assert spec.executable in scripts, f'{spec.executable} not in setup.py console_scripts'
        module, _, cls = spec.node_class.partition(':')
        assert scripts[spec.executable] == f'{module}:main'
        assert hasattr(importlib.import_module(module), cls)
        params = dict(node_parameters(config, spec.name))
        for name in spec.params_files:
            params.update(node_parameters(load_yaml(ROOT / 'config' / name), spec.name))
        assert params, f'{spec.name} has no parameters in line.yaml or {spec.params_files}'


def test_line_nodes_reflect_the_launch_arguments():
    names = [s.name for s in graph.line_nodes()]
    assert names == ['classifier', 'cam0', 'cam1', 'cam2', 'cam3']
    nodes = graph.line_nodes(source='device', device='/dev/video{}', model='/m')
    assert nodes[3].parameters['device'] == '/dev/video2'
    assert nodes[0].parameters['model'] == '/m'
    bag_nodes = graph.line_nodes(source='bag', bag='/b')
    assert [s.name for s in bag_nodes] == ['classifier', 'bag_player']
    assert graph.drives_triggers(bag_nodes) and not graph.drives_triggers(nodes)
    with pytest.raises(ConfigError, match='bag:=PATH'):
        graph.line_nodes(source='bag')
    with pytest.raises(ConfigError, match='expected one of'):
        graph.line_nodes(source='webcam')


class _Action:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


def _performed(part, context) -> str:
    return part if isinstance(part, str) else part.perform(context)


class _PathJoinSubstitution:
    def __init__(self, parts):
        self.parts = parts

    def perform(self, context):
        return '/'.join(_performed(p, context) for p in self.parts)


def _stub_modules(monkeypatch, share: Path):
    made = {}

    def module(name, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, mod)
        made[name] = mod

    class FindPackageShare:
        def __init__(self, package):
            assert package == 'bolt_inspection'

        def perform(self, context):
            return str(share)

    classes = {n: type(n, (_Action,), {}) for n in (
        'LaunchDescription', 'DeclareLaunchArgument', 'LogInfo', 'OpaqueFunction',
        'RegisterEventHandler', 'IfCondition', 'Node', 'LifecycleNode', 'OnStateTransition',
        'LocalSubstitution')}
    classes['FindPackageShare'] = FindPackageShare
    module('launch', LaunchDescription=classes['LaunchDescription'])
    module('launch.actions', **{k: classes[k] for k in (
        'DeclareLaunchArgument', 'LogInfo', 'OpaqueFunction', 'RegisterEventHandler')})
    module('launch.conditions', IfCondition=classes['IfCondition'])
    module('launch.substitutions', LaunchConfiguration=_LaunchConfiguration,
           LocalSubstitution=classes['LocalSubstitution'],
           PathJoinSubstitution=_PathJoinSubstitution)
    module('launch_ros')
    module('launch_ros.actions', Node=classes['Node'], LifecycleNode=classes['LifecycleNode'])
    module('launch_ros.event_handlers', OnStateTransition=classes['OnStateTransition'])
    module('launch_ros.substitutions', FindPackageShare=FindPackageShare)
    return classes


def _load_launch(monkeypatch, share):
    classes = _stub_modules(monkeypatch, share)
    spec = importlib.util.spec_from_file_location('line_launch', LAUNCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, classes


def _context(**values):
    context = {'params_file': '/p/line.yaml', 'source': 'synthetic', 'bag': '', 'model': '',
               'rqt': 'false', 'plc': 'false', 'plc_host': '', 'plc_port': '',
               'log': 'false', 'hmi': 'false', 'plc_sim': 'false'}
    context.update(values)
    return context


def test_launch_arguments_are_declared_with_descriptions(monkeypatch, tmp_path):
    mod, classes = _load_launch(monkeypatch, tmp_path)
    description = mod.generate_launch_description()
    declared = {a.args[0]: a.kwargs for a in description.args[0]
                if isinstance(a, classes['DeclareLaunchArgument'])}
    assert set(declared) == set(ARGUMENTS)
    for name in ARGUMENTS:
        assert len(declared[name].get('description', '')) > 10, name
    # FindPackageShare, resolved by launch (not ament_index at description time).
    assert declared['params_file']['default_value'].perform({}) == f'{tmp_path}/config/line.yaml'
    assert set(declared['source']['choices']) == set(graph.SOURCES)
    assert 'ament_index_python' not in LAUNCH.read_text()


def test_launch_file_starts_the_line_nodes_as_lifecycle_nodes(monkeypatch, tmp_path):
    mod, classes = _load_launch(monkeypatch, tmp_path)
    actions = mod._line(_context(source='bag', bag='/b', model='/m', rqt='true', plc='true',
                                 plc_host='127.0.0.1', plc_port='5020'))
    nodes = [a.kwargs for a in actions if isinstance(a, classes['LifecycleNode'])]
    expected = graph.line_nodes(source='bag', bag='/b', model='/m')
    assert [n['name'] for n in nodes] == [s.name for s in expected]
    assert [n['executable'] for n in nodes] == [s.executable for s in expected]
    for node, spec in zip(nodes, expected, strict=True):
        assert node['parameters'][-2:] == ['/p/line.yaml', spec.parameters]
    # The lifecycle manager brings them up, in this order; launch logs each transition.
    [manager] = [a.kwargs for a in actions if isinstance(a, classes['Node'])
                 and a.kwargs['executable'] == 'lifecycle_manager']
    assert manager['parameters'][-1]['node_names'] == [s.name for s in expected]
    handlers = [a.args[0] for a in actions if isinstance(a, classes['RegisterEventHandler'])]
    watched = [h.kwargs['target_lifecycle_node'].kwargs['name'] for h in handlers
               if isinstance(h, classes['OnStateTransition'])]
    assert watched == [s.name for s in expected]


def test_plc_bridge_hook_reads_plc_yaml_and_overrides():
    from bolt_inspection.graph import node_parameter_values
    nodes = graph.line_nodes(plc=True, plc_host='10.0.0.5', plc_port='502')
    bridge = nodes[-1]
    assert [n.name for n in nodes][-2:] == ['cam3', 'plc_bridge']
    assert bridge.executable in _console_scripts()
    values = node_parameter_values(bridge, load_yaml(ROOT / 'config' / 'line.yaml'))
    assert values['host'] == '10.0.0.5' and values['port'] == 502
    assert values['registers']['bolt_counter'] == 1      # from config/plc.yaml
    assert graph.drives_triggers(nodes)
    assert 'plc_bridge' not in [n.name for n in graph.line_nodes(source='bag', bag='/b',
                                                                 plc=True)]


@pytest.mark.ros
def test_composed_plc_bridge_gets_dotted_parameters(rclpy_context):
    from bolt_inspection.runtime.composed import ComposedLine
    specs = [s for s in graph.line_nodes(plc=True, plc_port=5999) if s.name == 'plc_bridge']
    line = ComposedLine(specs, load_yaml(ROOT / 'config' / 'line.yaml'), context=rclpy_context)
    try:
        node = line.nodes['plc_bridge']
        assert node.get_parameter('port').value == 5999
        assert node.get_parameter('registers.verdict_code').value == 3
    finally:
        line.executor.shutdown()
        for node in line.nodes.values():
            node.destroy_node()


def test_launch_file_adds_the_plc_bridge_after_the_cameras(monkeypatch, tmp_path):
    mod, classes = _load_launch(monkeypatch, tmp_path)
    context = _context(plc='true', plc_host='10.1.1.1', plc_port='502')
    nodes = [a.kwargs for a in mod._line(context) if isinstance(a, classes['LifecycleNode'])]
    assert [n['name'] for n in nodes] == ['classifier', 'cam0', 'cam1', 'cam2', 'cam3',
                                          'plc_bridge']
    bridge = nodes[-1]
    # The heartbeat means "the inspection path is alive": the bridge watches these stages.
    assert bridge['parameters'] == [f'{tmp_path}/config/plc.yaml', '/p/line.yaml',
                                    {'watch_stages': ['classifier', 'cam0', 'cam1', 'cam2',
                                                      'cam3'],
                                     'host': '10.1.1.1', 'port': 502}]


def test_rqt_uses_the_shipped_perspective(monkeypatch, tmp_path):
    mod, classes = _load_launch(monkeypatch, tmp_path)
    actions = mod._line(_context(rqt='true'))
    [rqt] = [a.kwargs for a in actions if isinstance(a, classes['Node'])
             and a.kwargs['executable'] == 'rqt_gui']
    assert rqt['arguments'] == ['--perspective-file', f'{tmp_path}/config/line.perspective']
    assert (ROOT / 'config' / 'line.perspective').is_file()
    names = [a.kwargs['name'] for a in actions if isinstance(a, classes['LifecycleNode'])]
    assert 'plc_bridge' not in names                                  # plc:=false


def test_plc_sim_is_a_package_node_with_the_plc_params_and_the_line_starts_it(monkeypatch,
                                                                            tmp_path):
    """plc_sim:=true: the simulator is resolved like any node executable (no PATH lookup),
    reads plc.yaml and the params file, serves the bridge's host/port, and the manager presses
    Start once the line is up."""
    mod, classes = _load_launch(monkeypatch, tmp_path)
    actions = mod._line(_context(plc='true', plc_sim='true', plc_host='127.0.0.1',
                                 plc_port='5021'))
    plain = {a.kwargs['name']: a.kwargs for a in actions if isinstance(a, classes['Node'])}
    sim = plain['plc_sim']
    assert sim['package'] == 'bolt_inspection' and sim['executable'] == 'plc_sim_node'
    assert sim['executable'] in _console_scripts()
    assert sim['parameters'] == [f'{tmp_path}/config/plc.yaml', '/p/line.yaml',
                                 {'host': '127.0.0.1', 'port': 5021}]
    assert plain['lifecycle_manager']['parameters'][-1]['start_when_up'] is True
    # Without the simulator nobody presses Start for the operator.
    actions = mod._line(_context(plc='true'))
    plain = {a.kwargs['name']: a.kwargs for a in actions if isinstance(a, classes['Node'])}
    assert 'plc_sim' not in plain
    assert plain['lifecycle_manager']['parameters'][-1]['start_when_up'] is False
    assert 'ExecuteProcess' not in LAUNCH.read_text()


def test_log_and_hmi_listen_before_the_classifier_and_read_their_configs():
    from bolt_inspection.graph import node_parameter_values
    nodes = graph.line_nodes(log=True, hmi=True, plc=True)
    assert [n.name for n in nodes] == ['inspection_log', 'hmi', 'classifier', 'cam0', 'cam1',
                                       'cam2', 'cam3', 'plc_bridge']
    config = load_yaml(ROOT / 'config' / 'line.yaml')
    log, hmi = nodes[0], nodes[1]
    assert node_parameter_values(log, config)['db_path'] == '~/.ros/bolt_inspection/inspection.db'
    hmi_params = node_parameter_values(hmi, config)
    assert hmi_params['host'] == '127.0.0.1' and hmi_params['port'] == 8080
    assert hmi_params['log_db'] == node_parameter_values(log, config)['db_path']
    assert 'hmi' not in [n.name for n in graph.line_nodes()]          # opt-in in-process


def test_launch_file_starts_log_and_hmi_by_default(monkeypatch, tmp_path):
    mod, classes = _load_launch(monkeypatch, tmp_path)
    description = mod.generate_launch_description()
    declared = {a.args[0]: a.kwargs for a in description.args[0]
                if isinstance(a, classes['DeclareLaunchArgument'])}
    assert declared['log']['default_value'] == declared['hmi']['default_value'] == 'true'
    context = _context(log='true', hmi='true')
    nodes = [a.kwargs for a in mod._line(context) if isinstance(a, classes['LifecycleNode'])]
    assert [n['name'] for n in nodes][:3] == ['inspection_log', 'hmi', 'classifier']
    assert nodes[0]['executable'] == 'inspection_log_node' and nodes[1]['executable'] == 'hmi_node'
    assert nodes[0]['parameters'] == [f'{tmp_path}/config/log.yaml', '/p/line.yaml', {}]
    assert nodes[1]['parameters'] == [f'{tmp_path}/config/hmi.yaml', '/p/line.yaml', {}]
    context.update(log='false', hmi='false')
    names = [a.kwargs['name'] for a in mod._line(context)
             if isinstance(a, classes['LifecycleNode'])]
    assert 'hmi' not in names and 'inspection_log' not in names
