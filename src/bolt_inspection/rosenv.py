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


def apply_defaults(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set the project's environment defaults where the user has not set them.

    Args:
        environ: The mapping to update; ``os.environ`` when omitted.

    Returns:
        The variables that were set by this call.
    """
    env = os.environ if environ is None else environ
    changed = {}
    for key, value in DEFAULTS.items():
        if not env.get(key):
            env[key] = value
            changed[key] = value
    return changed
