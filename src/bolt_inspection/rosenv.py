"""Process environment for ROS 2: keep DDS on this machine unless the user said otherwise.

Imported (and :func:`apply_defaults` called) before rclpy is initialised by every entry point.
"""

from __future__ import annotations

import os

DEFAULTS = {
    # Without this, DDS multicasts discovery on external interfaces.
    'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
    # TensorFlow's C++ INFO/WARNING banners drown the node logs.
    'TF_CPP_MIN_LOG_LEVEL': '2',
}
# The Fast DDS profile with a shared-memory segment that holds whole camera frames
# (config/fastdds.xml says why); only for rmw_fastrtps_cpp, the default RMW.
FASTDDS_PROFILE = 'FASTDDS_DEFAULT_PROFILES_FILE'
FASTDDS_RMW = 'rmw_fastrtps_cpp'


def fastdds_profile() -> str:
    """The shipped Fast DDS profile's path, or '' when it is not installed."""
    from bolt_inspection import paths

    path = paths.config_path('fastdds.xml')
    return str(path) if path.is_file() else ''


def apply_defaults(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set the project's environment defaults where the user has not set them.

    Args:
        environ: The mapping to update; ``os.environ`` when omitted.

    Returns:
        The variables that were set by this call.
    """
    env = os.environ if environ is None else environ
    defaults = dict(DEFAULTS)
    if env.get('RMW_IMPLEMENTATION', FASTDDS_RMW) == FASTDDS_RMW:
        defaults[FASTDDS_PROFILE] = fastdds_profile()
    changed = {}
    for key, value in defaults.items():
        if value and not env.get(key):
            env[key] = value
            changed[key] = value
    return changed
