#!/bin/bash
# Source ROS 2 and the bolt_inspection workspace, then run the command (default: the line).
set -e
# shellcheck source=/dev/null
source "/opt/ros/${ROS_DISTRO}/setup.bash"
# shellcheck source=/dev/null
source "${BOLT_WS:-/opt/bolt_ws}/install/setup.bash"
# setup.cfg installs console scripts to lib/bolt_inspection (where `ros2 run` looks); put them on
# PATH too so `bolt-inspection report ...` works as in the pip install.
export PATH="${BOLT_WS:-/opt/bolt_ws}/install/lib/bolt_inspection:${PATH}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
exec "$@"
