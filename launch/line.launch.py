"""The inspection line: four cameras (or a bag), the classifier, the PLC bridge, the inspection
log and the operator web page, optional PLC simulator, rqt and rviz. One process per node.

    ros2 launch bolt_inspection line.launch.py model:=/path/to/model
    ros2 launch bolt_inspection line.launch.py model:=... plc_sim:=true   # closed loop, no PLC
    ros2 launch bolt_inspection line.launch.py source:=bag bag:=/path/to/bag model:=...
    ros2 launch bolt_inspection line.launch.py model:=... hmi:=false log:=false

The node list comes from bolt_inspection.graph.line_nodes(), the same function
`bolt-inspection line` composes in one process, and every node reads the same params file. The
lifecycle nodes start unconfigured; the `lifecycle_manager` node configures and activates them in
the list's order (listeners, classifier, cameras, PLC bridge) and retries one that fails, so
the bridge never triggers bolts nobody can inspect. This launch file logs every transition it
observes. With plc_sim:=true the simulator is started like any node of the package and the
manager presses Start once the line is up.
"""

# isort would take `launch` for this repository's launch/ folder; it is the ROS package.
from launch import LaunchDescription  # noqa: I001
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, RegisterEventHandler
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, LocalSubstitution, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.substitutions import FindPackageShare

from bolt_inspection.graph import SOURCES, line_nodes

PACKAGE = 'bolt_inspection'


def _flag(context, name: str) -> bool:
    return LaunchConfiguration(name).perform(context).lower() == 'true'


def _line(context, *args, **kwargs):
    """Build the node actions once the launch arguments are known."""
    config = PathJoinSubstitution([FindPackageShare(PACKAGE), 'config']).perform(context)
    params_file = LaunchConfiguration('params_file').perform(context)
    specs = line_nodes(source=LaunchConfiguration('source').perform(context),
                       model=LaunchConfiguration('model').perform(context),
                       bag=LaunchConfiguration('bag').perform(context),
                       plc=_flag(context, 'plc'),
                       plc_host=LaunchConfiguration('plc_host').perform(context),
                       plc_port=LaunchConfiguration('plc_port').perform(context),
                       log=_flag(context, 'log'), hmi=_flag(context, 'hmi'),
                       plc_sim=_flag(context, 'plc_sim'), manager=True)
    actions = []
    for spec in specs:
        parameters = [f'{config}/{name}' for name in spec.params_files]
        parameters += [params_file, dict(spec.parameters)]
        node_cls = LifecycleNode if spec.lifecycle else Node
        node = node_cls(package=spec.package, executable=spec.executable, name=spec.name,
                        namespace='', output='screen', parameters=parameters,
                        remappings=list(spec.remappings))
        actions.append(node)
        if spec.lifecycle:
            actions.append(RegisterEventHandler(OnStateTransition(
                target_lifecycle_node=node,
                entities=[LogInfo(msg=[f'lifecycle {spec.name}: ',
                                       LocalSubstitution('event.start_state'), ' -> ',
                                       LocalSubstitution('event.goal_state')])])))
    if _flag(context, 'rqt'):
        actions.append(Node(package='rqt_gui', executable='rqt_gui', name='rqt',
                            arguments=['--perspective-file', f'{config}/line.perspective']))
    return actions


def generate_launch_description():
    config = PathJoinSubstitution([FindPackageShare(PACKAGE), 'config'])
    return LaunchDescription([
        DeclareLaunchArgument(
            'params_file', default_value=PathJoinSubstitution([config, 'line.yaml']),
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
            description='Start rqt with config/line.perspective (Grad-CAM mosaic, verdicts, '
                        'diagnostics)'),
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
            description='Also start the simulated line PLC (plc_sim_node: Modbus TCP on '
                        'plc_host:plc_port, conveyor from config/plc.yaml) and press Start '
                        'once the line is up'),
        DeclareLaunchArgument(
            'plc_host', default_value='127.0.0.1',
            description='PLC (or simulator) Modbus TCP host'),
        DeclareLaunchArgument(
            'plc_port', default_value='5020',
            description='PLC Modbus TCP port (502 on a real PLC)'),
        LogInfo(msg=['bolt_inspection line: source=', LaunchConfiguration('source'),
                     ' params=', LaunchConfiguration('params_file')]),
        OpaqueFunction(function=_line),
        Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
             arguments=['-d', PathJoinSubstitution([config, 'line.rviz'])],
             condition=IfCondition(LaunchConfiguration('rviz'))),
    ])
