"""The package as a user installs it: metadata, entry points, layout, environment defaults."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from bolt_inspection import paths, rosenv
from bolt_inspection.core.config import load_yaml, node_parameters
from bolt_inspection.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_layout():
    for name in ('src', 'launch', 'config', 'docker', 'tests', 'README.md', 'package.xml',
                 'setup.py', 'setup.cfg', 'resource/bolt_inspection', 'Makefile', '.ci/run'):
        assert (ROOT / name).exists(), name


def test_package_xml_is_format_3_and_lists_ros_dependencies():
    root = ET.parse(ROOT / 'package.xml').getroot()
    assert root.get('format') == '3'
    assert root.findtext('name') == 'bolt_inspection'
    deps = {e.text for e in root if e.tag.endswith('depend')}
    for dep in ('rclpy', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs', 'std_srvs', 'cv_bridge',
                'launch', 'launch_ros', 'python3-opencv', 'python3-numpy'):
        assert dep in deps, dep
    assert root.find('export/build_type').text == 'ament_python'


# Python modules -> their rosdep keys (the ROS packages' modules are their package names).
ROSDEP_KEYS = {'numpy': 'python3-numpy', 'cv2': 'python3-opencv', 'yaml': 'python3-yaml',
               'matplotlib': 'python3-matplotlib', 'sklearn': 'python3-sklearn',
               'tqdm': 'python3-tqdm', 'aiohttp': 'python3-aiohttp', 'h5py': 'python3-h5py'}
# Not in rosdep for every distribution: the Dockerfile installs them, pinned, with pip.
PIP_ONLY = {'tensorflow', 'keras', 'openvino', 'nncf', 'pymodbus', 'rosbags'}


def _imported_modules() -> dict[str, str]:
    """Top-level modules the package and its launch file import (lazy imports included) ->
    one file that imports it."""
    import ast
    found: dict[str, str] = {}
    for path in sorted([*(ROOT / 'src').rglob('*.py'), *(ROOT / 'launch').glob('*.py')]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split('.')[0]
                if top not in sys.stdlib_module_names and top != 'bolt_inspection':
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_package_xml_declares_every_module_the_code_imports():
    """`rosdep install` on a ROS machine installs what package.xml says; an import it does not
    declare fails there only at run time (rcl_interfaces, builtin_interfaces, aiohttp did)."""
    root = ET.parse(ROOT / 'package.xml').getroot()
    deps = {e.text for e in root if e.tag.endswith('depend')}
    dockerfile = (ROOT / 'docker' / 'Dockerfile').read_text()
    for module, where in _imported_modules().items():
        if module in PIP_ONLY:
            assert module in dockerfile, f'{module} ({where}) is installed by nobody'
        else:
            key = ROSDEP_KEYS.get(module, module)
            assert key in deps, f'{where} imports {module}: package.xml lacks {key}'
    assert 'bolt_inspection_msgs' in deps


def test_console_scripts_resolve_to_callables():
    scripts = {ep.name: ep for ep in entry_points(group='console_scripts')
               if ep.value.startswith('bolt_inspection.')}
    assert 'bolt-inspection' in scripts
    for name, ep in scripts.items():
        assert callable(ep.load()), name


def test_cli_help_lists_subcommands():
    out = subprocess.run([sys.executable, '-m', 'bolt_inspection.cli', '--help'],
                         capture_output=True, text=True, check=True).stdout
    assert 'synth' in out


def test_share_dir_has_config():
    assert (paths.share_dir() / 'config').is_dir()


def test_ros_environment_defaults_do_not_override_the_user():
    env = {'ROS_AUTOMATIC_DISCOVERY_RANGE': 'SUBNET'}
    changed = rosenv.apply_defaults(env)
    assert env['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'SUBNET'
    assert 'ROS_AUTOMATIC_DISCOVERY_RANGE' not in changed
    env = {}
    rosenv.apply_defaults(env)
    assert env['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'


def test_nodes_load_the_shipped_fast_dds_profile_unless_told_otherwise():
    """config/fastdds.xml (a shared-memory segment that holds whole 1280x960 frames) is the
    default profile of every entry point on rmw_fastrtps_cpp; a user's own profile or another
    RMW is left alone."""
    import xml.etree.ElementTree as ET

    env = {}
    assert rosenv.apply_defaults(env)['FASTDDS_DEFAULT_PROFILES_FILE'] == \
        str(paths.config_path('fastdds.xml'))
    ns = {'dds': 'http://www.eprosima.com'}
    root = ET.parse(env['FASTDDS_DEFAULT_PROFILES_FILE']).getroot()
    segment = int(root.find('.//dds:transport_descriptor/dds:segment_size', ns).text)
    assert segment >= 4 * 1280 * 960 * 3          # four whole bgr8 frames at once
    participant = root.find('.//dds:participant', ns)
    assert participant.get('is_default_profile') == 'true'
    env = {'FASTDDS_DEFAULT_PROFILES_FILE': '/etc/mine.xml'}
    rosenv.apply_defaults(env)
    assert env['FASTDDS_DEFAULT_PROFILES_FILE'] == '/etc/mine.xml'
    env = {'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'}
    assert 'FASTDDS_DEFAULT_PROFILES_FILE' not in rosenv.apply_defaults(env)


def test_bad_yaml_gives_one_line_error(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('a: [1, 2\nb: 3\n')
    with pytest.raises(ConfigError) as info:
        load_yaml(bad)
    assert 'bad.yaml' in str(info.value) and '\n' not in str(info.value)
    with pytest.raises(ConfigError, match='no such configuration file'):
        load_yaml(tmp_path / 'missing.yaml')
    (tmp_path / 'list.yaml').write_text('- 1\n')
    with pytest.raises(ConfigError, match='mapping'):
        load_yaml(tmp_path / 'list.yaml')


def test_node_parameters_merge_wildcard_first():
    config = {'/**': {'ros__parameters': {'a': 1, 'b': 1}},
              'cam0': {'ros__parameters': {'b': 2}}}
    assert node_parameters(config, 'cam0') == {'a': 1, 'b': 2}
    with pytest.raises(ConfigError):
        node_parameters({'cam0': 5}, 'cam0')
