"""Where the package's shared files (config/, launch/) are, in every way it can be installed.

Order: an ament index (a colcon workspace or a ROS 2 install), the source tree (an editable
install or a checkout), then ``<prefix>/share/bolt_inspection`` of the running Python.
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

PACKAGE = 'bolt_inspection'


@cache
def share_dir() -> Path:
    """Return the directory that holds ``config/`` and ``launch/``."""
    try:
        from ament_index_python.packages import (
            PackageNotFoundError,
            get_package_share_directory,
        )
        try:
            return Path(get_package_share_directory(PACKAGE))
        except (PackageNotFoundError, LookupError, ValueError, OSError):
            # OSError: no AMENT_PREFIX_PATH, i.e. not inside a sourced ROS 2 environment.
            pass
    except ImportError:
        pass
    source_root = Path(__file__).resolve().parents[2]
    if (source_root / 'config').is_dir() and (source_root / 'package.xml').is_file():
        return source_root
    return Path(sys.prefix) / 'share' / PACKAGE


def config_path(name: str) -> Path:
    """Return the path of a shipped config file, e.g. ``config_path('line.yaml')``."""
    return share_dir() / 'config' / name


def launch_path(name: str) -> Path:
    """Return the path of a shipped launch file."""
    return share_dir() / 'launch' / name


def executable(name: str) -> Path:
    """Return the path of one of the package's node executables, as ``ros2 run`` finds it.

    Looks in ``<prefix>/lib/bolt_inspection/`` of every ``AMENT_PREFIX_PATH`` entry (a sourced
    colcon workspace or ROS 2 install), then of the running Python's prefix (``pip install``:
    setup.cfg puts the scripts there), then on ``PATH``.

    Raises:
        FileNotFoundError: No such executable; the message says where it looked.
    """
    import os
    import shutil
    prefixes = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    prefixes.append(sys.prefix)
    for prefix in prefixes:
        candidate = Path(prefix) / 'lib' / PACKAGE / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    raise FileNotFoundError(f'executable {name!r} of {PACKAGE} not found in '
                            f'<prefix>/lib/{PACKAGE} of {", ".join(prefixes)} or on PATH '
                            '(install the package: make venv, or colcon build)')
