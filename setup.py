"""ament_python package for bolt_inspection (also installable with `pip install -e .`)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'bolt_inspection'

setup(
    name=PACKAGE,
    version='0.1.0',
    package_dir={'': 'src'},
    packages=find_packages('src', exclude=['tests']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.launch.py')),
        (f'share/{PACKAGE}/config', glob('config/*.yaml') + glob('config/*.rviz')
         + glob('config/*.perspective') + glob('config/*.xml')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='bolt_inspection developers',
    maintainer_email='bolt-inspection@example.org',
    description='Screening of anti-loosening-coated bolts: four cameras, VGG16 + Grad-CAM, '
                'and a Modbus TCP bridge to the sorting PLC (after Noh & Hong 2022).',
    license='Apache-2.0',
    python_requires='>=3.10',
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'bolt-inspection = bolt_inspection.cli:main',
            'camera_node = bolt_inspection.nodes.camera_node:main',
            'classifier_node = bolt_inspection.nodes.classifier_node:main',
            'plc_bridge_node = bolt_inspection.nodes.plc_bridge_node:main',
            'bag_player = bolt_inspection.nodes.bag_player:main',
            'inspection_log_node = bolt_inspection.nodes.inspection_log_node:main',
            'hmi_node = bolt_inspection.nodes.hmi_node:main',
            'plc_sim_node = bolt_inspection.nodes.plc_sim_node:main',
            'lifecycle_manager = bolt_inspection.nodes.lifecycle_manager:main',
        ],
    },
)
