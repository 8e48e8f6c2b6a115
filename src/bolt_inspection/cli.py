"""The ``bolt-inspection`` command.

Each subcommand lives in its own module under :mod:`bolt_inspection.commands` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a ``run(args) -> int``.
Modules import heavy libraries (TensorFlow, rclpy) inside ``run`` so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from bolt_inspection import __version__, commands, rosenv
from bolt_inspection.core.errors import BoltInspectionError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='bolt-inspection',
        description='Screen anti-loosening-coated bolts: synthetic rig, VGG16 + Grad-CAM '
                    'classifier, ROS 2 line and PLC bridge.')
    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith('_'):
            continue
        module = importlib.import_module(f'{commands.__name__}.{info.name}')
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    rosenv.apply_defaults()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BoltInspectionError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
