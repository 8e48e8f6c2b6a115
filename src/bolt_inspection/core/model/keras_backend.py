"""The one place that imports Keras and TensorFlow.

Every other module calls :func:`keras` / :func:`tf` instead of importing them, so that

* TensorFlow's C++ log banner is silenced before the library loads (``TF_CPP_MIN_LOG_LEVEL``),
* the thread pools are sized once, before any op runs (the line PC and CI share few cores with
  ROS nodes and other processes; TensorFlow's default of "all cores" oversubscribes them),
* Keras runs on the TensorFlow backend in float32,
* importing :mod:`bolt_inspection.core` stays cheap: TensorFlow loads on first use only.

Environment variables (read once, at first use):

``BOLT_TF_INTRA_THREADS``
    Threads inside one op (default: ``min(4, os.cpu_count())``).
``BOLT_TF_INTER_THREADS``
    Ops run in parallel (default: 1; VGG16 is a chain, parallel ops buy nothing).
"""

from __future__ import annotations

import os
import threading
from types import ModuleType

_LOCK = threading.Lock()
_STATE: dict[str, ModuleType] = {}


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, '').strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        return default
    return value if value > 0 else default


def _load() -> dict[str, ModuleType]:
    with _LOCK:
        if _STATE:
            return _STATE
        os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
        os.environ.setdefault('KERAS_BACKEND', 'tensorflow')
        import tensorflow as tf_module

        try:
            tf_module.config.threading.set_intra_op_parallelism_threads(
                _env_int('BOLT_TF_INTRA_THREADS', min(4, os.cpu_count() or 1)))
            tf_module.config.threading.set_inter_op_parallelism_threads(
                _env_int('BOLT_TF_INTER_THREADS', 1))
        except RuntimeError:
            # Someone ran an op before us; the pools are fixed by then. Not worth failing over.
            pass
        tf_module.get_logger().setLevel('ERROR')
        import keras as keras_module

        keras_module.backend.set_floatx('float32')
        _STATE['tf'] = tf_module
        _STATE['keras'] = keras_module
        return _STATE


def keras() -> ModuleType:
    """Return the ``keras`` module, configured (TensorFlow backend, float32, thread pools)."""
    return _load()['keras']


def tf() -> ModuleType:
    """Return the ``tensorflow`` module, configured as :func:`keras` describes."""
    return _load()['tf']


def versions() -> dict[str, str]:
    """Return the versions of the package, TensorFlow, Keras and NumPy (for model metadata)."""
    import numpy as np

    from bolt_inspection import __version__

    state = _load()
    return {
        'bolt_inspection': __version__,
        'tensorflow': state['tf'].__version__,
        'keras': state['keras'].__version__,
        'numpy': np.__version__,
    }
