"""The inspection line: four cameras (or a bag), the classifier, the PLC bridge, the inspection
log and the operator web page, optional rqt / rviz.

    ros2 launch bolt_inspection line.launch.py model:=/path/to/model
    ros2 launch bolt_inspection line.launch.py source:=bag bag:=/path/to/bag model:=...
    ros2 launch bolt_inspection line.launch.py model:=... hmi:=false log:=false

The node list comes from bolt_inspection.graph.line_nodes(), the same function
`bolt-inspection line` composes in one process, and every node reads the same params file.
The package's lifecycle nodes configure and activate themselves on start (their main() does
what a lifecycle manager would); `ros2 lifecycle set /classifier deactivate` etc. still work.
"""

# isort would take `launch` for this repository's launch/ folder; it is the ROS package.
from pathlib import Path  # noqa: I001

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, LogInfo, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from bolt_inspection.graph import SOURCES, line_nodes

PACKAGE = 'bolt_inspection'


def _line(context, *args, **kwargs):
    """Build the node actions once the launch arguments are known."""
    share = Path(get_package_share_directory(PACKAGE))
    params_file = LaunchConfiguration('params_file').perform(context)
    source = LaunchConfiguration('source').perform(context)
    specs = line_nodes(source=source,
                       model=LaunchConfiguration('model').perform(context),
                       bag=LaunchConfiguration('bag').perform(context),
                       plc=LaunchConfiguration('plc').perform(context).lower() == 'true',
                       plc_host=LaunchConfiguration('plc_host').perform(context),
                       plc_port=LaunchConfiguration('plc_port').perform(context),
                       log=LaunchConfiguration('log').perform(context).lower() == 'true',
                       hmi=LaunchConfiguration('hmi').perform(context).lower() == 'true')
    actions = []
    for spec in specs:
        parameters = [str(share / 'config' / name) for name in spec.params_files]
        parameters += [params_file, dict(spec.parameters)]
        node_cls = LifecycleNode if spec.lifecycle else Node
        actions.append(node_cls(package=spec.package, executable=spec.executable,
                                name=spec.name, namespace='', output='screen',
                                parameters=parameters, remappings=list(spec.remappings)))
    if LaunchConfiguration('rqt').perform(context).lower() == 'true':
        perspective = share / 'config' / 'line.perspective'
        if perspective.is_file():
            actions.append(Node(package='rqt_gui', executable='rqt_gui', name='rqt',
                                arguments=['--perspective-file', str(perspective)]))
        else:
            actions.append(Node(package='rqt_image_view', executable='rqt_image_view',
                                name='rqt_image_view', arguments=['/inspection/gradcam']))
    return actions


def generate_launch_description():
    share = Path(get_package_share_directory(PACKAGE))
    return LaunchDescription([
        DeclareLaunchArgument(
            'params_file', default_value=str(share / 'config' / 'line.yaml'),
            description='Params file for every node of the line (ros__parameters by node '
                        'name)'),
        DeclareLaunchArgument(
            'source', default_value='synthetic', choices=list(SOURCES),
            description='Camera frames: synthetic rig, dataset folder (cam*.folder in the '
                        'params file), OpenCV device (cam*.device), or a bag (bag:=PATH) '
                        'replacing the cameras and the trigger'),
        DeclareLaunchArgument(
            'bag', default_value='', description='rosbag2 directory for source:=bag'),
        DeclareLaunchArgument(
            'model', default_value='',
            description="Model artifact directory for the classifier ('' = params file's)"),
        DeclareLaunchArgument(
            'rqt', default_value='false', choices=['true', 'false'],
            description='Start rqt with config/line.perspective, or rqt_image_view on '
                        '/inspection/gradcam when there is no perspective'),
        DeclareLaunchArgument(
            'rviz', default_value='false', choices=['true', 'false'],
            description='Start rviz2 with config/line.rviz'),
        DeclareLaunchArgument(
            'plc', default_value='true', choices=['true', 'false'],
            description='Start the PLC bridge (config/plc.yaml): the PLC bolt counter '
                        'triggers the cameras and receives the verdicts (ignored for '
                        'source:=bag)'),
        DeclareLaunchArgument(
            'log', default_value='true', choices=['true', 'false'],
            description='Start the inspection log (config/log.yaml): every verdict into '
                        'SQLite, Grad-CAM evidence of NG bolts as PNG'),
        DeclareLaunchArgument(
            'hmi', default_value='true', choices=['true', 'false'],
            description='Start the operator web page (config/hmi.yaml; '
                        'http://127.0.0.1:8080 by default)'),
        DeclareLaunchArgument(
            'plc_sim', default_value='false', choices=['true', 'false'],
            description='Also start the PLC line simulator (bolt-inspection plc-sim)'),
        DeclareLaunchArgument(
            'plc_host', default_value='127.0.0.1',
            description='PLC (or simulator) Modbus TCP host'),
        DeclareLaunchArgument(
            'plc_port', default_value='5020',
            description='PLC Modbus TCP port (502 on a real PLC)'),
        LogInfo(msg=['bolt_inspection line: source=', LaunchConfiguration('source'),
                     ' params=', LaunchConfiguration('params_file')]),
        OpaqueFunction(function=_line),
        ExecuteProcess(
            cmd=['bolt-inspection', 'plc-sim', '--host', LaunchConfiguration('plc_host'),
                 '--port', LaunchConfiguration('plc_port')],
            name='plc_sim', output='screen',
            condition=IfCondition(LaunchConfiguration('plc_sim'))),
        Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
             arguments=['-d', str(share / 'config' / 'line.rviz')],
             condition=IfCondition(LaunchConfiguration('rviz'))),
    ])
