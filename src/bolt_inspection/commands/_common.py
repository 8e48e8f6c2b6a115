"""Argument types shared by several subcommands."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path


def size_wh(text: str) -> tuple[int, int]:
    """Parse ``WxH`` (e.g. ``1280x960``) into ``(width, height)`` for argparse."""
    match = re.fullmatch(r'\s*(\d+)\s*[xX]\s*(\d+)\s*', text)
    if not match:
        raise argparse.ArgumentTypeError(f'expected WIDTHxHEIGHT such as 1280x960, got {text!r}')
    width, height = int(match.group(1)), int(match.group(2))
    if not (8 <= width <= 8192 and 8 <= height <= 8192):
        raise argparse.ArgumentTypeError(f'size {width}x{height} out of range 8..8192 per side')
    return width, height


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a whole number, got {text!r}') from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f'expected a number > 0, got {value}')
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number, got {text!r}') from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f'expected a finite number, got {text}')
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (``nan`` and ``inf`` refused: they would run forever or never)."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f'expected a number > 0, got {value:g}')
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'expected a number >= 0, got {value:g}')
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number in [0, 1], got {text!r}') from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f'expected a number in [0, 1], got {value}')
    return value


def add_model_and_data(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--data`` and ``--split``: a trained artifact run over a labelled dataset."""
    parser.add_argument('--model', required=True, type=Path, help='model artifact directory')
    parser.add_argument('--data', required=True, type=Path,
                        help='dataset directory (labels.csv, or OK/ and NG/ folders)')
    parser.add_argument('--split', choices=('auto', 'val', 'all'), default='auto',
                        help="'val': the model's own validation bolts; 'all': every view; "
                             "'auto': val if DATA is the training dataset, else all")
