"""YAML configuration loading with one-line errors.

The project's YAML files live in ``config/`` (installed to ``share/bolt_inspection/config``).
Files that feed ROS nodes use the standard ``<node_name>: {ros__parameters: {...}}`` layout so the
same file works with ``ros2 launch`` and with ``bolt-inspection line``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from bolt_inspection.core.errors import ConfigError


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``.

    Args:
        path: The file to read.

    Returns:
        The top-level mapping (an empty file gives ``{}``).

    Raises:
        ConfigError: The file is missing, is not valid YAML, or its top level is not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding='utf-8')
    except FileNotFoundError:
        raise ConfigError(f'{path}: no such configuration file') from None
    except OSError as exc:
        raise ConfigError(f'{path}: cannot read ({exc.strerror})') from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, 'problem_mark', None)
        where = f' at line {mark.line + 1}, column {mark.column + 1}' if mark else ''
        problem = getattr(exc, 'problem', None) or 'invalid YAML'
        raise ConfigError(f'{path}: invalid YAML{where}: {problem}') from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f'{path}: expected a mapping at the top level, got {kind}')
    return data


def node_parameters(config: dict[str, Any], node_name: str) -> dict[str, Any]:
    """Return the ``ros__parameters`` of ``node_name`` in a params-file mapping.

    Accepts both ``node_name`` and ``/node_name`` keys, and the ``/**`` wildcard (merged first,
    so node-specific values win), as ``ros2 launch`` does.

    Raises:
        ConfigError: A matching entry exists but is not shaped like a params file.
    """
    merged: dict[str, Any] = {}
    for key in ('/**', node_name, '/' + node_name.lstrip('/')):
        entry = config.get(key)
        if entry is None:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get('ros__parameters', {}), dict):
            raise ConfigError(f'{key}: expected a mapping with a "ros__parameters" mapping')
        merged.update(entry.get('ros__parameters') or {})
    return merged


def flatten(values: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
    """Nested params-file mappings -> dotted names, as ROS 2's params-file parser does.

    ``{'registers': {'bolt_counter': 1}}`` becomes ``{'registers.bolt_counter': 1}``.
    """
    flat: dict[str, Any] = {}
    for name, value in values.items():
        key = f'{prefix}{name}'
        if isinstance(value, Mapping):
            flat.update(flatten(value, key + '.'))
        else:
            flat[key] = value
    return flat
