"""Training: the paper's two-stage transfer learning, made cheap, plus threshold calibration.

Protocol (Noh & Hong 2022, Sec. 3.2), batch 32, 80/20 split **by bolt**:

1. **Stage 1** — all conv blocks frozen, only the classifier head trains. A frozen backbone gives
   the same output for an image every epoch, so it is run ONCE over the train and validation
   crops and its outputs (``block5_pool``) are cached; the head then trains on the cached
   features and an epoch costs no backbone pass at all
   (:func:`measure_stage1_epoch_times` measures the speed-up against recomputing).
2. **Stage 2** — blocks 1-4 frozen, block 5 and the head fine-tuned at lr 1e-4 on the images.

``from_scratch`` instead trains every layer (what random initialisation needs). Every stage
uses early stopping on validation loss (best weights restored) and balanced class weights.
Afterwards the NG threshold is calibrated on the validation bolts for ``target_recall``, at
most 0.5 (:mod:`bolt_inspection.core.model.threshold`), and the model is saved as an artifact with
its history, metrics and timings.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bolt_inspection.core.errors import ConfigError, DatasetError

Box = tuple[int, int, int, int]
ARCHS = ('vgg16', 'vgg16_bn', 'tiny')
LR_SCHEDULES = ('constant', 'cosine')
PRECISIONS = ('auto', 'float32', 'bfloat16')
#: The calibrated NG threshold never exceeds the softmax's argmax rule (see core.model.threshold).
THRESHOLD_CAP = 0.5
#: What the NG threshold's target recall is counted over.
CALIBRATE_ON = ('bolt', 'view')
#: How ``recalibrate`` picks the threshold: reach a target NG recall, or sort the most bolts right.
CALIBRATION_RULES = ('recall', 'sorting')
#: The default recipe of a trained VGG16, found by measurement (bench/RESULTS.md, "Recipe
#: search"; ``bench/recipe.py``): the pretrained HED VGG16 convs (``--weights hed``), input
#: 128x256 (the smallest whose Grad-CAM grid can reach 95% peak-in-mask), stage 1 on cached
#: features, then the top ``fine_tune_blocks`` blocks + head on cached outputs of the blocks
#: below them.
RECIPE: dict[str, Any] = {
    'input_size': (128, 256), 'head': 'gmp', 'dense_units': 0, 'epochs1': 15, 'epochs2': 10,
    'lr1': 1e-4, 'lr2': 1e-4, 'lr_schedule': 'cosine', 'fine_tune_blocks': 2,
    'augment_copies': 2, 'stage2_precision': 'auto',
}
#: The engines ``bolt-inspection train`` and ``demo`` export at the end of training: the ones
#: the line's ``engine: auto`` can pick. INT8 is left to ``bolt-inspection export`` (it moved
#: the Grad-CAM peak on 10% of the views, bench/RESULTS.md "Inference engines").
TRAIN_EXPORT_ENGINES = ('openvino-f32', 'openvino-bf16')


@dataclass
class TrainConfig:
    """Training settings (stored in the artifact's metadata under ``training.config``).

    Attributes:
        input_size: Model input ``(width, height)``; 128x256 keeps the thread's 1:2 aspect and
            is about the ROI's native size at 640x480 frames.
        weights: ``None`` = the architecture's default (:func:`default_weights`: ``'hed'``
            for ``vgg16``, ``'none'`` otherwise), ``'none'`` (random init), ``'hed'``
            (pretrained VGG16 convs available offline), ``'imagenet'`` or a path; see
            :mod:`bolt_inspection.core.model.weights`.
        epochs1: Stage-1 epochs (head on cached features); with ``from_scratch``: epochs of the
            all-layers training.
        epochs2: Stage-2 fine-tuning epochs (0 = skip stage 2).
        batch_size: 32, as the paper.
        lr1: Adam learning rate of stage 1.
        lr2: Adam learning rate of stage 2 (the paper's 1e-4).
        lr_scratch: Adam learning rate when training from scratch.
        from_scratch: Train all layers at once instead of the two stages.
        val_fraction: Share of bolts held out for validation (early stopping, threshold).
        seed: Split, weight init and shuffling seed.
        patience: Early-stopping patience in epochs (on validation loss).
        target_recall: NG recall the threshold is calibrated for.
        use_roi: Crop to the per-camera thread ROI (False = full frame resized, the paper's
            first model).
        cameras: ``cameras.yaml`` with the ROI boxes; None = the synthetic rig's boxes for a
            synthetic dataset, else ``config/cameras.yaml``.
        arch: ``'vgg16'`` (the paper), ``'vgg16_bn'`` (VGG16 with batch norm, He init: what
            trains from random init in reasonable time) or ``'tiny'`` (a small CNN for CI-sized
            runs).
        head: ``'flatten'`` (classic VGG), ``'gap'`` or ``'gmp'`` (global average / max pooling).
        dense_units: Hidden dense layer width of the head (0 = none).
        dropout: Dropout after the hidden dense layer.
        measure_timings: Also time one stage-1 epoch cached vs recomputed (bench numbers).
        timing_images: At most this many training images are used for that measurement.
        augment: Photometric and small-shift augmentation of the training images in the
            image-trained stages (stage 2, scratch); see :func:`augment_batch`.
        lr_schedule: ``'constant'`` or ``'cosine'`` (decay to 5% of the rate over the epochs).
        augment_copies: Augmented copies of every training crop pushed once through the
            frozen blocks 1-4 for the cached stages (0 = the crops as they are only); each
            epoch draws every sample from one of its copies.
        cache_stage2: Stage 2 on the cached block-4 outputs (an epoch costs block 5 + head
            only); False recomputes blocks 1-4 for every batch, as image-space ``augment``
            needs.
        fine_tune_blocks: Conv blocks stage 2 fine-tunes, from the top (1 = block 5, the
            paper; 2 = blocks 4 and 5, cached at ``block3_pool``).
        stage2_precision: ``'float32'``, ``'bfloat16'`` (the cache is computed and cached
            stage 2 trains in bfloat16 with float32 weights, :func:`mixed_twin`; the saved
            model is float32 and the threshold is calibrated on it) or
            ``'auto'``: bfloat16 on a CPU with native bfloat16 (AVX512-BF16 / AMX), float32
            elsewhere (emulated bfloat16 would be slower), see :func:`stage2_precision`.
        calibrate_on: ``'bolt'``: ``target_recall`` of the NG validation *bolts* must have a
            view at or above the threshold, as the gate sorts them (any view NG -> bolt NG);
            ``'view'``: of the NG validation views. Per view, the worst-shown defect view sets
            the threshold although the bolt's other views already catch it, and the false
            alarms of four OK views add up at the gate.
        export_engines: Fast inference engines exported and validated once the artifact is
            saved (:func:`bolt_inspection.core.model.export.export_after_training`; the line's
            ``engine: auto`` picks one of them). Empty = none, as the library's default keeps
            it; ``bolt-inspection train`` and ``demo`` export :data:`TRAIN_EXPORT_ENGINES`.
            A failed export is a warning: the model still runs on the TensorFlow reference.
    """

    input_size: tuple[int, int] = RECIPE['input_size']
    weights: str | None = None
    epochs1: int = RECIPE['epochs1']
    epochs2: int = RECIPE['epochs2']
    batch_size: int = 32
    lr1: float = RECIPE['lr1']
    lr2: float = RECIPE['lr2']
    lr_scratch: float = 1e-4
    from_scratch: bool = False
    val_fraction: float = 0.2
    seed: int = 0
    patience: int = 5
    target_recall: float = 0.99
    use_roi: bool = True
    cameras: str | None = None
    arch: str = 'vgg16'
    head: str = RECIPE['head']
    dense_units: int = RECIPE['dense_units']
    dropout: float = 0.5
    measure_timings: bool = True
    timing_images: int = 64
    augment: bool = False
    lr_schedule: str = RECIPE['lr_schedule']
    calibrate_on: str = 'bolt'
    augment_copies: int = RECIPE['augment_copies']
    cache_stage2: bool = True
    stage2_precision: str = RECIPE['stage2_precision']
    fine_tune_blocks: int = RECIPE['fine_tune_blocks']
    export_engines: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data['input_size'] = list(self.input_size)
        return data


# --------------------------------------------------------------------------------------------
# Data


def resolve_roi(dataset, config: TrainConfig, frame_size: tuple[int, int]
                ) -> tuple[dict[int, Box] | None, tuple[int, int] | None, str]:
    """Choose the ROI boxes for training.

    Returns:
        ``(boxes, frame_size, source)``; ``boxes`` is None for full-frame training.

    Raises:
        ConfigError: The boxes are for another frame size or a camera has no box.
    """
    from bolt_inspection.core.vision.roi import load_camera_config

    if not config.use_roi:
        return None, None, 'full frame'
    if config.cameras:
        camera_config = load_camera_config(config.cameras)
        source = str(config.cameras)
    elif dataset.kind == 'synthetic' and (Path(dataset.root) / 'synth.json').is_file():
        from bolt_inspection.core.vision import synth

        info = json.loads((Path(dataset.root) / 'synth.json').read_text())
        size = tuple(int(v) for v in info.get('size', frame_size))
        n_cams = int(info.get('n_cams', 4))
        boxes = synth.default_roi_boxes(size, n_cams)
        return {int(c): tuple(int(v) for v in b) for c, b in boxes.items()}, size, \
            'synthetic rig default boxes'
    else:
        camera_config = load_camera_config()
        source = 'config/cameras.yaml'
    if tuple(camera_config.frame_size) != tuple(frame_size):
        raise ConfigError(
            f'{source} is for {camera_config.frame_size[0]}x{camera_config.frame_size[1]} '
            f'frames but the dataset has {frame_size[0]}x{frame_size[1]}; pass --cameras '
            '(bolt-inspection roi --data DIR proposes boxes) or --no-roi')
    return dict(camera_config.boxes), tuple(camera_config.frame_size), source


def load_views(records, boxes: dict[int, Box] | None, input_size: tuple[int, int],
               progress: bool = True, desc: str = 'loading views') -> np.ndarray:
    """Read, crop and resize views into a uint8 RGB array ``(N, h, w, 3)``.

    Raises:
        DatasetError: A view's camera has no ROI box, or an image cannot be read / cropped.
    """
    from tqdm import tqdm

    from bolt_inspection.core.errors import ImageError
    from bolt_inspection.core.vision.dataset import read_image
    from bolt_inspection.core.vision.roi import crop_roi, resize_bgr

    width, height = input_size
    out = np.empty((len(records), height, width, 3), np.uint8)
    for i, record in enumerate(tqdm(records, desc=desc, unit='view', disable=not progress,
                                    leave=False)):
        box = None
        if boxes is not None:
            if record.cam not in boxes:
                raise DatasetError(f'{record.image_path}: camera {record.cam} has no ROI box '
                                   f'(configured: {sorted(boxes)})')
            box = boxes[record.cam]
        try:
            crop = crop_roi(read_image(record.image_path), box, what=str(record.image_path))
        except ImageError as exc:
            raise DatasetError(str(exc)) from None
        out[i] = resize_bgr(crop, input_size)[:, :, ::-1]
    return out


def labels_of(records) -> np.ndarray:
    """View labels as int64: 1 = NG, 0 = OK (the model's output order)."""
    return np.array([1 if r.label == 'NG' else 0 for r in records], np.int64)


def class_weights(y: np.ndarray) -> dict[int, float]:
    """Balanced class weights ``n / (2 * n_c)`` (a class absent from ``y`` gets 1.0)."""
    n = len(y)
    weights = {}
    for c in (0, 1):
        count = int((y == c).sum())
        weights[c] = n / (2.0 * count) if count else 1.0
    return weights


# --------------------------------------------------------------------------------------------
# Model pieces


def chain(model, after=None, upto=None, name: str | None = None):
    """A model of the layers of a flat (chain) ``model`` after layer ``after`` up to and
    including ``upto`` (None: from the input / to the output), calling the SAME layer objects,
    so training the piece trains ``model``."""
    from bolt_inspection.core.model.keras_backend import keras

    k = keras()
    layers = [layer for layer in model.layers if not isinstance(layer, k.layers.InputLayer)]
    first = 0 if after is None else layers.index(after) + 1
    last = len(layers) - 1 if upto is None else layers.index(upto)
    shape = model.input_shape[1:] if after is None else tuple(after.output.shape[1:])
    inputs = k.Input(shape=shape, name='image' if after is None else f'{after.name}_features')
    x = inputs
    for layer in layers[first:last + 1]:
        x = layer(x)
    return k.Model(inputs, x, name=name or f'{model.name}_part')


def split_at(model, cut):
    """Split a flat (chain) model after layer ``cut``: ``(front, tail)``.

    ``front`` maps images to ``cut``'s output; ``tail`` maps such outputs to the class
    probabilities; both through the SAME layer objects as ``model`` (see :func:`chain`).
    """
    return (chain(model, upto=cut, name=f'upto_{cut.name}'),
            chain(model, after=cut, name=f'after_{cut.name}'))


def split_backbone_head(model):
    """The frozen-feature extractor and a head model sharing the model's head layers.

    Returns:
        ``(backbone, head)``: ``backbone`` maps images to the last conv/pool output
        (``block5_pool``); ``head`` maps those features to the class probabilities through the
        SAME layer objects as ``model``, so training ``head`` trains ``model``'s head.
    """
    from bolt_inspection.core.model.network import backbone_output_layer

    return split_at(model, backbone_output_layer(model))


def stage2_cut_layer(model, blocks: int = 1):
    """The last layer stage 2 keeps frozen: for VGG16 ``block4_pool`` (blocks 1-4 frozen,
    block 5 and the head train, as the paper) or, fine-tuning the top ``blocks`` blocks,
    ``block{5 - blocks}_pool``; for another flat model the layer feeding its
    ``blocks``-th conv from the top."""
    from bolt_inspection.core.model.keras_backend import keras

    names = [layer.name for layer in model.layers]
    pool = f'block{5 - int(blocks)}_pool'
    if pool in names:
        return model.get_layer(pool)
    convs = [i for i, layer in enumerate(model.layers)
             if isinstance(layer, keras().layers.Conv2D)]
    return model.layers[convs[-int(blocks)] - 1]


def default_weights(arch: str) -> str:
    """The ``--weights`` an architecture trains from when none is given: the pretrained HED
    VGG16 convs for ``vgg16`` (the paper's transfer learning), random init otherwise."""
    from bolt_inspection.core.model.weights import HED

    return HED if arch == 'vgg16' else 'none'


def build_model(config: TrainConfig):
    """Build the configured architecture and initialise it from ``config.weights``.

    Returns:
        ``(model, gradcam_layer, weight_info)``; ``weight_info`` is the
        :class:`~bolt_inspection.core.model.weights.WeightInfo` of what was loaded.

    Raises:
        ConfigError: Unknown architecture, or pretrained weights for the small CNN.
        ModelError: The weights cannot be loaded (the message names the fix).
    """
    from bolt_inspection.core.model.network import build_tiny, build_vgg16
    from bolt_inspection.core.model.weights import load_backbone_weights

    weights = config.weights or default_weights(config.arch)
    if config.arch in ('vgg16', 'vgg16_bn'):
        model = build_vgg16(config.input_size, 'none', head=config.head,
                            dense_units=config.dense_units, dropout=config.dropout,
                            seed=config.seed, batch_norm=config.arch == 'vgg16_bn')
        return model, 'block5_conv3', load_backbone_weights(model, weights)
    if config.arch == 'tiny':
        if str(weights).lower() != 'none':
            raise ConfigError('--weights applies to the vgg16 architectures only (the small '
                              'CNN trains from random init: --weights none)')
        model = build_tiny(config.input_size, filters=(16, 32, 64), head=config.head,
                           dense_units=config.dense_units, seed=config.seed)
        return model, 'last_conv', load_backbone_weights(model, 'none')
    raise ConfigError(f'unknown architecture {config.arch!r} (one of {", ".join(ARCHS)})')


class EpochLog:
    """Keras callback factory: one line per epoch (stage, losses, accuracy, seconds).

    With ``progress``, also a batch progress bar within each epoch: an epoch on a few thousand
    crops takes minutes on a CPU.
    """

    @staticmethod
    def make(stage: str, epochs: int, log: Callable[[str], None] | None,
             progress: bool = False):
        from bolt_inspection.core.model.keras_backend import keras

        k = keras()

        class _EpochLog(k.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds: list[float] = []
                self._start = 0.0
                self._bar = None

            def on_epoch_begin(self, epoch, logs=None):
                self._start = time.perf_counter()
                if progress:
                    from tqdm import tqdm

                    self._bar = tqdm(total=self.params.get('steps'), unit='batch', leave=False,
                                     desc=f'[{stage}] epoch {epoch + 1}/{epochs}')

            def on_train_batch_end(self, batch, logs=None):
                if self._bar is not None:
                    self._bar.update(1)
                    if logs and 'loss' in logs:
                        self._bar.set_postfix(loss=f'{float(logs["loss"]):.4f}', refresh=False)

            def on_epoch_end(self, epoch, logs=None):
                if self._bar is not None:
                    self._bar.close()
                    self._bar = None
                elapsed = time.perf_counter() - self._start
                self.seconds.append(elapsed)
                if log is None:
                    return
                logs = logs or {}
                parts = [f'{key} {logs[key]:.4f}' for key in
                         ('loss', 'accuracy', 'val_loss', 'val_accuracy') if key in logs]
                log(f'[{stage}] epoch {epoch + 1}/{epochs}  ' + '  '.join(parts)
                    + f'  ({elapsed:.1f} s)')

        return _EpochLog()


#: The augmentation's ranges (model-input pixels, RGB uint8 crops), chosen to cover the drift
#: a line sees between two maintenance visits up to and a little past
#: :func:`bolt_inspection.core.vision.drift.apply_drift`'s moderate level (severity 1: exposure
#x0.7 / : x1.35, colour gains 1 -+ 0.15, blur sigma 1 px at 640x480, noise sigma 6, 1.5 degrees and
#: 1.5 % of the frame, JPEG quality 60).
AUGMENT = {
    'gain': (0.6, 1.6),            # exposure, log-uniform
    'contrast': (0.75, 1.25),      # around the crop's mean grey
    'gamma': (0.8, 1.25),
    'warm': 0.2,                   # colour temperature: R x (1 + w), B x (1 - w), |w| <= this
    'blur_sigma': (0.3, 1.6),      # defocus, px
    'noise_sigma': (0.0, 10.0),    # sensor noise, grey levels
    'jpeg_quality': (25, 95),
    'rotation_deg': 3.0,           # camera pose, around the crop centre
    'shift_px': 8,                 # pose and ROI jitter, each way
    'p': 0.5,                      # chance of each photometric family per image
}


def augment_batch(x: np.ndarray, rng: np.random.Generator, max_shift: int | None = None,
                  max_rotation: float | None = None) -> np.ndarray:
    """Randomly perturb a uint8 RGB batch the way a line's images drift.

    Per image, each photometric family with probability ``AUGMENT['p']`` (so copies range from
    almost clean to several drifts at once): exposure gain, contrast and gamma, colour
    temperature (red and blue gains in opposite directions), defocus (Gaussian blur), sensor
    noise and JPEG compression; then always a rotation of up to ``max_rotation`` degrees and a
    shift of up to ``max_shift`` pixels each way (a bumped camera, ROI jitter; edges reflected,
    as :func:`bolt_inspection.core.vision.drift.apply_drift` does). No flips: a mirrored thread
    would be left-handed, and the head is always at the top. Ranges: :data:`AUGMENT`.

    Args:
        x: ``(N, h, w, 3)`` uint8 RGB crops.
        rng: The random generator (seeded: the same rng state gives the same batch).
        max_shift: Pixels each way (default ``AUGMENT['shift_px']``; 0 = no shift).
        max_rotation: Degrees each way (default ``AUGMENT['rotation_deg']``; 0 = none).

    Returns:
        A new float32 batch in 0..255 (the input ``x`` is not changed).
    """
    import cv2

    a = AUGMENT
    shift = a['shift_px'] if max_shift is None else max_shift
    rotation = a['rotation_deg'] if max_rotation is None else max_rotation
    out = np.empty(x.shape, np.float32)
    h, w = x.shape[1:3]
    for i in range(len(x)):
        img = x[i].astype(np.float32)
        on = rng.random(7) < a['p']
        if on[0]:
            img *= math.exp(rng.uniform(*np.log(a['gain'])))
        if on[1]:
            mean = float(img.mean())
            img = (img - mean) * rng.uniform(*a['contrast']) + mean
        if on[2]:
            img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** rng.uniform(*a['gamma'])
        if on[3]:
            warm = rng.uniform(-a['warm'], a['warm'])
            img *= np.array([1 + warm, 1.0, 1 - warm], np.float32)      # R, G, B
        if on[4]:
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(*a['blur_sigma']))
        if on[5]:
            img += rng.normal(0.0, rng.uniform(*a['noise_sigma']), img.shape).astype(np.float32)
        if on[6]:
            quality = int(rng.integers(a['jpeg_quality'][0], a['jpeg_quality'][1] + 1))
            ok, buf = cv2.imencode('.jpg', np.clip(img, 0, 255).astype(np.uint8)[:, :, ::-1],
                                   [cv2.IMWRITE_JPEG_QUALITY, quality])
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32)
        if shift or rotation:
            matrix = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-rotation, rotation),
                                             1.0)
            matrix[:, 2] += rng.uniform(-shift, shift, 2) if shift else 0.0
            img = cv2.warpAffine(img, matrix, (w, h), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT)
        out[i] = img
    return np.clip(out, 0.0, 255.0, out=out)


@dataclass
class CachedFeatures:
    """The frozen front's outputs (block-4 for VGG16) of the training and validation views.

    Attributes:
        train: ``(1 + copies, N, h, w, c)`` float16: copy 0 is each training crop as it is,
            copies 1.. are augmented versions (:func:`augment_batch`), so the cached stages see
            photometric and shift augmentation without running blocks 1-4 again.
        val: ``(N_val, h, w, c)`` float16 of the validation crops (never augmented).
        layer: The layer whose output was cached.
        seconds: Time the front took over all crops and copies.
    """

    train: np.ndarray
    val: np.ndarray | None
    layer: str
    seconds: float

    @property
    def copies(self) -> int:
        return int(self.train.shape[0])


def extract_features(front, x: np.ndarray, *, copies: int = 0, seed: int = 0,
                     batch_size: int = 32, progress: bool = False,
                     desc: str = 'caching features', precision: str = 'float32') -> np.ndarray:
    """Run the frozen front over ``x`` once (and over ``copies`` augmented versions of it).

    ``precision='bfloat16'`` runs it as a :func:`mixed_twin`: blocks 1-3 of VGG16 at 128x256
    took 7.3 against 38.3 ms a view in float32 (``python bench/training.py``, bench/RESULTS.md;
    the cache is float16 anyway).

    Returns:
        ``(1 + copies, N, ...)`` float16 (half the memory; the features are ReLU outputs of a
        few hundred at most, well inside float16's range).
    """
    import tensorflow as tf
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    net = front if precision == 'float32' else mixed_twin(front)
    run = tf.function(lambda batch: net(batch, training=False), reduce_retracing=True)
    shape = tuple(int(v) for v in front.output.shape[1:])
    out = np.empty((1 + copies, len(x), *shape), np.float16)
    bar = tqdm(total=(1 + copies) * len(x), desc=desc, unit='view', disable=not progress,
               leave=False)
    for copy in range(1 + copies):
        for start in range(0, len(x), batch_size):
            chunk = x[start:start + batch_size]
            batch = augment_batch(chunk, rng) if copy else chunk.astype(np.float32)
            out[copy, start:start + len(chunk)] = run(batch).numpy()
            bar.update(len(chunk))
    bar.close()
    return out


def _training_data(x, y, config: TrainConfig, weights: dict[int, float], augment: bool):
    """``(inputs, targets, fit kwargs)``: plain arrays, an augmenting ``PyDataset`` of images,
    or a ``PyDataset`` that draws each sample from one of the cached copies (``x`` of shape
    ``(copies, N, ...)``, ``augment`` ignored)."""
    from bolt_inspection.core.model.keras_backend import keras

    copies = isinstance(x, np.ndarray) and x.ndim == 5 and x.dtype == np.float16
    if not augment and not copies:
        return x, y, {'batch_size': config.batch_size, 'class_weight': weights,
                      'shuffle': True}
    k = keras()
    rng = np.random.default_rng(config.seed)
    sample_w = np.array([weights[int(c)] for c in y], np.float32)
    n = len(y)

    class _Batches(k.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.on_epoch_end()

        def __len__(self):
            return math.ceil(n / config.batch_size)

        def __getitem__(self, index):
            idx = np.sort(self.order[index * config.batch_size:(index + 1) * config.batch_size])
            if copies:
                batch = x[self.which[idx], idx].astype(np.float32)
            else:
                batch = augment_batch(x[idx], rng)
            return batch, y[idx], sample_w[idx]

        def on_epoch_end(self):
            self.order = rng.permutation(n)
            # Each sample comes from one of its copies, drawn anew every epoch.
            self.which = rng.integers(0, x.shape[0], n) if copies else None

    return _Batches(), None, {}


def _fit(model, x, y, val, *, epochs: int, lr: float, config: TrainConfig, stage: str,
         log, weights: dict[int, float], augment: bool = False,
         progress: bool = False) -> dict[str, list[float]]:
    from bolt_inspection.core.model.keras_backend import keras

    k = keras()
    inputs, targets, fit_kwargs = _training_data(x, y, config, weights, augment)
    rate = lr
    if config.lr_schedule == 'cosine':
        steps = max(1, epochs * math.ceil(len(y) / config.batch_size))
        rate = k.optimizers.schedules.CosineDecay(lr, steps, alpha=0.05)
    # No XLA: on the CPU its convolutions were slower than oneDNN's (0.86 vs 0.68 s per
    # stage-2 batch of 32 at 128x256) and it compiles for every new shape.
    model.compile(optimizer=k.optimizers.Adam(rate), loss='sparse_categorical_crossentropy',
                  metrics=['accuracy'], jit_compile=False)
    epoch_log = EpochLog.make(stage, epochs, log, progress)
    callbacks = [epoch_log]
    if val is not None and config.patience > 0:
        callbacks.append(k.callbacks.EarlyStopping(monitor='val_loss', patience=config.patience,
                                                   restore_best_weights=True))
    history = model.fit(inputs, targets, epochs=epochs, verbose=0, validation_data=val,
                        callbacks=callbacks, **fit_kwargs)
    out = {key: [float(v) for v in values] for key, values in history.history.items()}
    out['seconds'] = [float(s) for s in epoch_log.seconds]
    return out


def cache_features(model, x_train, x_val, config: TrainConfig, *, log=None,
                   progress: bool = True) -> CachedFeatures:
    """Run the part of ``model`` that both transfer-learning stages keep frozen (blocks 1-4 of
    VGG16, up to :func:`stage2_cut_layer`) once over the crops, with
    ``config.augment_copies`` augmented copies of the training crops."""
    cut = stage2_cut_layer(model, config.fine_tune_blocks)
    front, _ = split_at(model, cut)
    precision = stage2_precision(config.stage2_precision)
    start = time.perf_counter()
    train_f = extract_features(front, x_train, copies=config.augment_copies, seed=config.seed,
                               batch_size=config.batch_size, progress=progress,
                               desc=f'caching {cut.name} (train)', precision=precision)
    val_f = (extract_features(front, x_val, batch_size=config.batch_size, progress=progress,
                              desc=f'caching {cut.name} (val)', precision=precision)[0]
             if x_val is not None and len(x_val) else None)
    seconds = time.perf_counter() - start
    if log:
        log(f'cached {cut.name} outputs {train_f.shape[2:]} of {len(x_train)} train views x '
            f'{train_f.shape[0]} ({config.augment_copies} augmented) + '
            f'{0 if val_f is None else len(val_f)} val views in {seconds:.1f} s ({precision})')
    return CachedFeatures(train_f, val_f, cut.name, seconds)


def run_cached_stages(model, cache: CachedFeatures, y_train, y_val, config: TrainConfig, *,
                      log=None, progress: bool = True) -> tuple[dict, dict[str, float]]:
    """The paper's two stages, both on cached outputs of the frozen blocks 1-4.

    1. Stage 1 (``config.epochs1``, lr ``config.lr1``): block 5 frozen too; its outputs are
       computed once from the cache's un-augmented copy and the head trains on them.
    2. Stage 2 (``config.epochs2``, lr ``config.lr2``): block 5 and the head train on the
       cached block-4 outputs, so an epoch costs block 5 + head only.

    Returns:
        ``(history per stage, timings)``.
    """
    from bolt_inspection.core.model.network import backbone_output_layer, set_stage

    cut = model.get_layer(cache.layer)
    _, tail = split_at(model, cut)
    weights = class_weights(y_train)
    history: dict[str, dict] = {}
    timings: dict[str, float] = {}
    precision = stage2_precision(config.stage2_precision)
    if config.epochs1 > 0:
        set_stage(model, 'stage1', config.fine_tune_blocks)
        last = backbone_output_layer(model)
        mid = chain(model, after=cut, upto=last, name='frozen_block5')
        head = chain(model, after=last, name='head')
        start = time.perf_counter()
        # The head's warm start on the crops as they are (copy 0): stage 2 trains the head
        # again on every copy, and block 5 over each augmented copy here would cost as much as
        # the cache itself.
        # In the cache's precision, as the cache itself was computed.
        frozen = mid if precision == 'float32' else mixed_twin(mid)
        g_train = frozen.predict(cache.train[0].astype(np.float32),
                                 batch_size=config.batch_size, verbose=0)
        g_val = (None if cache.val is None else
                 frozen.predict(cache.val.astype(np.float32), batch_size=config.batch_size,
                                verbose=0))
        timings['stage1_features_s'] = time.perf_counter() - start
        if log:
            log(f'[stage1] {last.name} outputs {g_train.shape[1:]} from the cache in '
                f'{timings["stage1_features_s"]:.1f} s')
        history['stage1'] = _fit(head, g_train, y_train,
                                 None if g_val is None else (g_val, y_val),
                                 epochs=config.epochs1, lr=config.lr1, config=config,
                                 stage='stage1', log=log, weights=weights)
    if config.epochs2 > 0:
        set_stage(model, 'stage2', config.fine_tune_blocks)
        val = None if cache.val is None else (cache.val.astype(np.float32), y_val)
        timings['stage2_precision'] = precision
        net = tail if precision == 'float32' else mixed_twin(tail)
        history['stage2'] = _fit(net, cache.train if cache.copies > 1 else
                                 cache.train[0].astype(np.float32), y_train, val,
                                 epochs=config.epochs2, lr=config.lr2, config=config,
                                 stage='stage2', log=log, weights=weights, progress=progress)
        if net is not tail:
            # The twin's variables are float32 (mixed precision keeps them so): copy them back.
            tail.set_weights(net.get_weights())
    return history, timings


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (Linux: AVX512-BF16 or AMX-BF16 flag)."""
    try:
        text = Path('/proc/cpuinfo').read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith('flags'):
            flags.update(line.split(':', 1)[1].split())
    return bool(flags & {'avx512_bf16', 'amx_bf16'})


def stage2_precision(setting: str) -> str:
    """``'auto'`` -> ``'bfloat16'`` where the CPU has it natively, else ``'float32'``."""
    if setting != 'auto':
        return setting
    return 'bfloat16' if cpu_has_bfloat16() else 'float32'


def mixed_twin(model):
    """A copy of ``model`` computing in bfloat16 with float32 variables (Keras'
    ``mixed_bfloat16``), its softmax in float32; same layer names, trainability and weights.

    On a CPU with AVX512-BF16 its convolutions train ~3.5x faster (block 5 + head at 128x256:
    0.20 vs 0.68 s per batch of 32). After training, ``model.set_weights(twin.get_weights())``
    brings the result back into the float32 model.
    """
    from bolt_inspection.core.model.keras_backend import keras
    from bolt_inspection.core.model.layers import custom_objects

    k = keras()
    last = model.layers[-1].name

    def clone(layer):
        config = layer.get_config()
        config['dtype'] = 'float32' if layer.name == last else 'mixed_bfloat16'
        twin = layer.__class__.from_config(config)
        twin.trainable = layer.trainable
        return twin

    with k.saving.custom_object_scope(custom_objects()):
        twin = k.models.clone_model(model, clone_function=clone)
    twin.set_weights(model.get_weights())
    return twin


def measure_stage1_epoch_times(model, x, y, batch_size: int = 32,
                               max_images: int | None = 128) -> dict[str, float]:
    """Time one stage-1 epoch on cached features against one that recomputes the backbone.

    Works on a clone of ``model`` (the model itself is not changed). Each variant runs two
    epochs and the second is timed, so graph tracing is not counted.

    Args:
        model: A flat model (VGG16 or tiny).
        x: Training images (uint8/float RGB at the model's input size).
        y: Labels (1 = NG).
        batch_size: Batch size (32 as the paper).
        max_images: Use at most this many images (epoch time is linear in their number).

    Returns:
        ``{'cached_epoch_s', 'recompute_epoch_s', 'cache_build_s', 'speedup', 'images',
        'batch_size'}``; ``speedup`` = recompute / cached.
    """
    return measure_epoch_times(model, x, y, 'stage1', batch_size=batch_size,
                               max_images=max_images)


def measure_stage2_epoch_times(model, x, y, batch_size: int = 32,
                               max_images: int | None = 128, blocks: int = 1,
                               precision: str = 'float32') -> dict[str, float]:
    """Time one stage-2 epoch (block 5 + head train) on cached block-4 outputs against one that
    recomputes blocks 1-4 for every batch, side by side on a clone of ``model``.

    With ``precision='bfloat16'`` the cached epoch runs as stage 2 then trains
    (:func:`mixed_twin`), and both variants are also timed in the other precision, so the
    speed-up of the cache alone (same precision) and of bfloat16 alone can be told apart.

    Returns:
        As :func:`measure_stage1_epoch_times` (``cached_epoch_s`` in ``precision``,
        ``recompute_epoch_s`` in float32: the train command without the cache), plus
        ``cached_layer``, ``precision`` and, for bfloat16, ``cached_float32_epoch_s`` and
        ``recompute_bfloat16_epoch_s``.
    """
    return measure_epoch_times(model, x, y, 'stage2', batch_size=batch_size,
                               max_images=max_images, blocks=blocks, precision=precision)


def measure_epoch_times(model, x, y, stage: str, *, batch_size: int = 32,
                        max_images: int | None = 128, blocks: int = 1,
                        precision: str = 'float32') -> dict[str, float]:
    """One epoch of ``stage`` ('stage1' or 'stage2', fine-tuning the top ``blocks``) on
    cached features vs recomputing the frozen layers; see
    :func:`measure_stage1_epoch_times` and :func:`measure_stage2_epoch_times`."""
    from bolt_inspection.core.model.keras_backend import keras
    from bolt_inspection.core.model.layers import custom_objects
    from bolt_inspection.core.model.network import backbone_output_layer, set_stage

    k = keras()
    if max_images is not None:
        x, y = x[:max_images], y[:max_images]
    x = np.asarray(x, np.float32)
    with k.saving.custom_object_scope(custom_objects()):
        clone = k.models.clone_model(model)
    clone.set_weights(model.get_weights())
    set_stage(clone, stage, blocks)
    cut = backbone_output_layer(clone) if stage == 'stage1' else stage2_cut_layer(clone, blocks)
    front, tail = split_at(clone, cut)

    def timed_epochs(net, data):
        net.compile(optimizer=k.optimizers.Adam(1e-4), loss='sparse_categorical_crossentropy',
                    jit_compile=False)
        epoch_log = EpochLog.make('timing', 2, None)
        net.fit(data, y, batch_size=batch_size, epochs=2, verbose=0, callbacks=[epoch_log])
        return epoch_log.seconds[-1]

    start = time.perf_counter()
    features = front.predict(x, batch_size=batch_size, verbose=0)
    cache_build_s = time.perf_counter() - start
    out: dict[str, Any] = {'stage': stage, 'cached_layer': cut.name, 'precision': precision}
    if precision == 'bfloat16':
        out['cached_epoch_s'] = timed_epochs(mixed_twin(tail), features)
        out['cached_float32_epoch_s'] = timed_epochs(tail, features)
        out['recompute_bfloat16_epoch_s'] = timed_epochs(mixed_twin(clone), x)
    else:
        out['cached_epoch_s'] = timed_epochs(tail, features)
    out['recompute_epoch_s'] = timed_epochs(clone, x)
    cached = out['cached_epoch_s']
    out.update({'cache_build_s': cache_build_s,
                'speedup': out['recompute_epoch_s'] / cached if cached > 0 else float('inf'),
                'images': int(len(x)), 'batch_size': int(batch_size)})
    return out


# --------------------------------------------------------------------------------------------
# Metrics


def view_metrics(p_ng: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, Any]:
    """Accuracy, NG/OK precision and recall and ROC AUC of ``p_ng >= threshold``."""
    pred = p_ng >= threshold
    truth = y.astype(bool)
    out: dict[str, Any] = {'n': int(len(y)), 'n_ng': int(truth.sum()),
                           'accuracy': float((pred == truth).mean()) if len(y) else math.nan}
    for name, positive in (('NG', True), ('OK', False)):
        tp = int(((pred == positive) & (truth == positive)).sum())
        predicted = int((pred == positive).sum())
        actual = int((truth == positive).sum())
        out[f'{name.lower()}_precision'] = tp / predicted if predicted else math.nan
        out[f'{name.lower()}_recall'] = tp / actual if actual else math.nan
    try:
        from sklearn.metrics import roc_auc_score

        out['roc_auc'] = float(roc_auc_score(truth, p_ng)) if 0 < truth.sum() < len(y) \
            else math.nan
    except ValueError:
        out['roc_auc'] = math.nan
    return out


def bolt_metrics(records, p_ng: np.ndarray, threshold: float) -> dict[str, Any]:
    """Bolt-level metrics: a bolt is NG when any of its views is (the line's fusion rule)."""
    return view_metrics(*bolt_scores(records, p_ng), threshold)


def bolt_scores(records, p_ng: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per bolt: the highest view NG probability, and 1 for an NG bolt (0 for OK)."""
    bolts: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        bolts.setdefault(record.bolt_id, []).append(i)
    scores = np.array([max(p_ng[i] for i in idx) for idx in bolts.values()])
    truth = np.array([1 if any(records[i].bolt_label == 'NG' for i in idx) else 0
                      for idx in bolts.values()])
    return scores, truth


# --------------------------------------------------------------------------------------------
# The whole run


@dataclass
class TrainingData:
    """The views of one training run, split by bolt, cropped and resized (see :func:`prepare`).

    Attributes:
        train_records / val_records: Dataset records of the two splits.
        x_train / x_val: uint8 RGB crops ``(N, h, w, 3)`` at the model input.
        y_train / y_val: View labels (1 = NG).
        boxes: ROI boxes used (None = full frames); ``roi_frame`` their frame size.
        roi_source: Where the boxes came from.
        frame_size: The dataset's frame size.
    """

    train_records: list
    val_records: list
    x_train: np.ndarray
    x_val: np.ndarray
    y_train: np.ndarray
    y_val: np.ndarray
    boxes: dict[int, Box] | None
    roi_frame: tuple[int, int] | None
    roi_source: str
    frame_size: tuple[int, int]


def prepare(dataset, config: TrainConfig, *, progress: bool = True, log=None,
            before_load: Callable[[], Any] | None = None) -> TrainingData:
    """Split ``dataset`` by bolt, resolve the ROI boxes and load the crops.

    ``before_load`` runs after the split and ROI checks and before the (slow) image load: the
    trainer builds the model there, so missing weights fail before minutes of reading.

    Raises:
        DatasetError: Too few bolts for a split, only one class, unreadable images.
        ConfigError: ROI boxes that do not fit the images.
    """
    from bolt_inspection.core.vision.dataset import read_image, split_by_bolt

    say = log or (lambda line: None)
    records = list(dataset.records)
    train_records, val_records = split_by_bolt(records, config.val_fraction, config.seed)
    if not train_records or not val_records:
        raise DatasetError(f'{dataset.root}: {len(dataset.bolts())} bolt(s) cannot be split '
                           f'into training and validation (val_fraction {config.val_fraction})')
    first = read_image(records[0].image_path)
    frame_size = (int(first.shape[1]), int(first.shape[0]))
    boxes, roi_frame, roi_source = resolve_roi(dataset, config, frame_size)
    say(f'data: {len(train_records)} train / {len(val_records)} val views '
        f'({len({r.bolt_id for r in train_records})} / {len({r.bolt_id for r in val_records})}'
        f' bolts), frames {frame_size[0]}x{frame_size[1]}, ROI: {roi_source}, input '
        f'{config.input_size[0]}x{config.input_size[1]}')
    if before_load is not None:
        before_load()
    x_train = load_views(train_records, boxes, config.input_size, progress, 'train views')
    x_val = load_views(val_records, boxes, config.input_size, progress, 'val views')
    y_train, y_val = labels_of(train_records), labels_of(val_records)
    if len(set(y_train.tolist())) < 2:
        raise DatasetError(f'{dataset.root}: the training split has only '
                           f'{"NG" if y_train.any() else "OK"} views; need both classes')
    return TrainingData(train_records, val_records, x_train, x_val, y_train, y_val, boxes,
                        roi_frame, roi_source, frame_size)


def fit(model, data: TrainingData, config: TrainConfig, *, log=None, progress: bool = True,
        features: CachedFeatures | None = None) -> tuple[dict, dict[str, Any]]:
    """Train ``model`` on ``data`` as ``config`` says.

    ``from_scratch``: all layers on the images. Otherwise the paper's two stages, on the cached
    outputs of the frozen blocks 1-4 (:func:`cache_features`; ``features`` reuses a cache made
    earlier for the same crops), or with ``cache_stage2=False`` stage 2 on the images,
    recomputing blocks 1-4 for every batch (what image-space ``augment`` needs).

    Returns:
        ``(history per stage, timings)``.
    """
    from bolt_inspection.core.model.network import set_stage

    say = log or (lambda line: None)
    history: dict[str, dict[str, list[float]]] = {}
    timings: dict[str, Any] = {}
    x_train, y_train, x_val, y_val = data.x_train, data.y_train, data.x_val, data.y_val
    if config.measure_timings and not config.from_scratch:
        for stage in ('stage1', 'stage2'):
            if (config.epochs1 if stage == 'stage1' else config.epochs2) <= 0:
                continue
            say(f'timing one {stage} epoch: cached vs recomputing the frozen layers ...')
            t = timings[f'{stage}_epoch'] = measure_epoch_times(
                model, x_train, y_train, stage, batch_size=config.batch_size,
                max_images=config.timing_images, blocks=config.fine_tune_blocks,
                precision=stage2_precision(config.stage2_precision) if stage == 'stage2'
                else 'float32')
            say(f'{stage} epoch on {t["images"]} images: cached {t["cached_layer"]} '
                f'{t["cached_epoch_s"]:.3f} s, recompute {t["recompute_epoch_s"]:.3f} s -> '
                f'{t["speedup"]:.1f}x faster')
    weights = class_weights(y_train)
    if config.from_scratch:
        set_stage(model, 'scratch')
        history['scratch'] = _fit(model, x_train, y_train, (x_val, y_val),
                                  epochs=config.epochs1, lr=config.lr_scratch, config=config,
                                  stage='scratch', log=say, weights=weights,
                                  augment=config.augment, progress=progress)
    elif config.cache_stage2 or config.epochs2 == 0:
        if features is None:
            features = cache_features(model, x_train, x_val, config, log=say,
                                      progress=progress)
        timings['cache_s'] = features.seconds
        history, stage_t = run_cached_stages(model, features, y_train, y_val, config, log=say,
                                             progress=progress)
        timings.update(stage_t)
    else:
        if config.epochs1 > 0:
            stage1 = replace(config, epochs2=0, augment_copies=0)
            features = cache_features(model, x_train, x_val, stage1, log=say, progress=progress)
            timings['cache_s'] = features.seconds
            history, stage_t = run_cached_stages(model, features, y_train, y_val, stage1,
                                                 log=say, progress=progress)
            timings.update(stage_t)
        set_stage(model, 'stage2', config.fine_tune_blocks)
        history['stage2'] = _fit(model, x_train, y_train, (x_val, y_val),
                                 epochs=config.epochs2, lr=config.lr2, config=config,
                                 stage='stage2', log=say, weights=weights,
                                 augment=config.augment, progress=progress)
    for name, stage_history in history.items():
        timings[f'{name}_s'] = float(sum(stage_history.get('seconds', [])))
    set_stage(model, 'scratch')  # a loaded model should not come back half frozen
    return history, timings


def train(dataset, config: TrainConfig, out_dir, progress: bool = True,
          log: Callable[[str], None] | None = None) -> Path:
    """Train a classifier on ``dataset`` and save it as an artifact in ``out_dir``.

    Args:
        dataset: A :class:`bolt_inspection.core.vision.dataset.Dataset`.
        config: The settings.
        out_dir: The artifact directory to write.
        progress: Progress bars and the per-epoch log.
        log: Where log lines go (default: print to stderr when ``progress``).

    Returns:
        ``out_dir``.

    Raises:
        DatasetError: Too few bolts for a split, only one class, unreadable images.
        ConfigError: Bad settings or ROI boxes that do not fit the images.
        ModelError: The weights cannot be loaded.
    """
    from bolt_inspection.core.model.keras_backend import keras

    if log is None and progress:
        def log(line: str) -> None:
            print(line, file=sys.stderr, flush=True)
    say = log or (lambda line: None)
    _check_config(config)
    t_start = time.perf_counter()
    keras().utils.set_random_seed(int(config.seed))
    built: dict[str, Any] = {}

    def build() -> None:
        # Before the image load: missing weights or an impossible download fail at once.
        built['model'], built['layer'], built['weights'] = build_model(config)
        say(f'weights: {built["weights"].name} ({built["weights"].description})')

    data = prepare(dataset, config, progress=progress, log=say, before_load=build)
    model = built['model']
    history, timings = fit(model, data, config, log=say, progress=progress)
    out = save_trained(model, data, config, dataset, out_dir, history=history,
                       timings=timings, gradcam_layer=built['layer'],
                       weight_info=built['weights'], t_start=t_start, log=say)
    if config.export_engines:
        from bolt_inspection.core.model.export import export_after_training

        export_after_training(out, data.x_train, data.x_val, data.y_val,
                              engines=config.export_engines, log=say, progress=progress)
    return out


def save_trained(model, data: TrainingData, config: TrainConfig, dataset, out_dir, *,
                 history: dict, timings: dict, gradcam_layer: str, weight_info,
                 t_start: float, log=None) -> Path:
    """Calibrate the NG threshold on the validation bolts and save the artifact.

    The threshold reaches ``config.target_recall`` over the validation bolts (or views) and is
    at most :data:`THRESHOLD_CAP`; ``metadata.json`` records the configuration, the weights'
    source (:class:`~bolt_inspection.core.model.weights.WeightInfo`), timings and validation
    metrics.
    """
    from bolt_inspection.core.model.artifact import ModelMetadata, save_artifact
    from bolt_inspection.core.model.threshold import calibrate_threshold, recall_at

    say = log or (lambda line: None)
    val_records, y_val = data.val_records, data.y_val
    p_val = model.predict(data.x_val, batch_size=config.batch_size, verbose=0)[:, 1]
    p_cal, y_cal = (p_val, y_val) if config.calibrate_on == 'view' else \
        bolt_scores(val_records, p_val)
    if y_cal.any():
        threshold = calibrate_threshold(p_cal, y_cal, config.target_recall,
                                        at_most=THRESHOLD_CAP)
        note = ''
    else:
        threshold, note = 0.5, f'no NG {config.calibrate_on} in validation: threshold left at 0.5'
        say(f'warning: {note}')
    metrics = {
        'split': 'validation',
        'threshold_target_recall': config.target_recall,
        'threshold_calibrated_on': config.calibrate_on,
        'threshold_recall_val': recall_at(p_cal, y_cal, threshold),
        'view': view_metrics(p_val, y_val, threshold),
        'bolt': bolt_metrics(val_records, p_val, threshold),
        'view_at_0.5': view_metrics(p_val, y_val, 0.5),
    }
    if note:
        metrics['note'] = note
    unfit = unfit_threshold_warning(metrics[config.calibrate_on], threshold,
                                    config.target_recall, unit=f'{config.calibrate_on}s')
    if unfit:
        metrics['warning'] = unfit
        say(f'warning: {unfit}')
    drift_ref, drift_info = training_drift_reference(data, log=say)
    timings['total_s'] = time.perf_counter() - t_start
    config_json = config.to_json()
    config_json['weights'] = weight_info.name
    metadata = ModelMetadata(
        classes=('OK', 'NG'), input_size=tuple(config.input_size), roi_boxes=data.boxes,
        threshold=float(threshold), gradcam_layer=gradcam_layer,
        dataset_fingerprint=dataset.fingerprint(),
        training=_jsonable({'config': config_json, 'weights': weight_info.to_json(),
                            'roi_source': data.roi_source,
                            'dataset': str(dataset.root), 'dataset_kind': dataset.kind,
                            'train_views': len(data.train_records),
                            'val_views': len(val_records),
                            'val_bolts': sorted({r.bolt_id for r in val_records}),
                            'drift_reference': drift_info, 'timings': timings}),
        metrics=_jsonable(metrics), frame_size=data.roi_frame)
    out = save_artifact(model, metadata, out_dir, history=history)
    if drift_ref is not None:
        from bolt_inspection.core.vision.drift import REFERENCE_FILE

        drift_ref.save(out / REFERENCE_FILE)
    v = metrics['view']
    say(f'threshold {threshold:.4f} (NG recall {metrics["threshold_recall_val"]:.3f} of the '
        f'validation {config.calibrate_on}s, target {config.target_recall}); val view '
        f'accuracy {v["accuracy"]:.3f}, NG recall {v["ng_recall"]:.3f}, OK recall '
        f'{v["ok_recall"]:.3f}; saved {out} '
        f'(model id {metadata.model_id}, {timings["total_s"]:.0f} s)')
    return out


def training_drift_reference(data: TrainingData, log=None):
    """The drift reference of the training split's frames (as the cameras delivered them, never
    augmented) with the model's ROI boxes, for the line's drift monitor
    (:mod:`bolt_inspection.core.vision.drift`).

    Returns:
        ``(reference or None, info for the metadata)``: None, with the reason in ``info``,
        when the split cannot make one (fewer than 5 views of a camera, frames of mixed sizes);
        the line then runs without drift monitoring and says so.
    """
    from bolt_inspection.core.vision.drift import REFERENCE_FILE, reference_from_records

    start = time.perf_counter()
    try:
        reference = reference_from_records(data.train_records, data.boxes)
    except ValueError as exc:
        note = f'no drift reference: {exc}'
        if log:
            log(f'warning: {note} (the line cannot monitor camera drift for this model)')
        return None, {'file': None, 'note': note}
    seconds = time.perf_counter() - start
    if log:
        log(f'drift reference: {sum(reference.views.values())} training views of '
            f'{len(reference.views)} cameras in {seconds:.1f} s')
    return reference, {'file': REFERENCE_FILE, 'views': dict(reference.views),
                       'split': 'train', 'seconds': seconds}


def unfit_threshold_warning(view: dict[str, Any], threshold: float, target_recall: float,
                            min_ok_recall: float = 0.5, unit: str = 'views') -> str:
    """A warning when reaching the target NG recall rejects most OK views or bolts ('' if fine).

    Calibration always reaches its recall; on a weak model it does so by dropping the threshold
    until nearly everything is NG. Such a model would reject most good bolts on the line, so
    say it plainly instead of storing the threshold in silence.
    """
    ok_recall = view.get('ok_recall')
    if ok_recall is None or (isinstance(ok_recall, float) and math.isnan(ok_recall)):
        return ''
    if ok_recall >= min_ok_recall:
        return ''
    return (f'reaching NG recall {target_recall:g} on validation needs threshold '
            f'{threshold:.3f}, which also rejects {1 - ok_recall:.0%} of the OK {unit}: this '
            'model is not fit for the line (train longer, on more data, or from pretrained '
            'weights)')


def _check_calibrate_on(unit: str) -> None:
    if unit not in CALIBRATE_ON:
        raise ConfigError(f'unknown calibration unit {unit!r} (one of {", ".join(CALIBRATE_ON)})')


def _check_config(config: TrainConfig) -> None:
    width, height = config.input_size
    if config.arch not in ARCHS:
        raise ConfigError(f'unknown architecture {config.arch!r} (one of {", ".join(ARCHS)})')
    _check_calibrate_on(config.calibrate_on)
    if config.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f'unknown lr schedule {config.lr_schedule!r} '
                          f'(one of {", ".join(LR_SCHEDULES)})')
    minimum = 8 if config.arch == 'tiny' else 32
    if width < minimum or height < minimum:
        raise ConfigError(f'input size {width}x{height} too small for {config.arch} '
                          f'(at least {minimum}x{minimum})')
    if not 0.0 < config.val_fraction < 1.0:
        raise ConfigError(f'val_fraction must be in (0, 1), got {config.val_fraction}')
    if not 0.0 < config.target_recall <= 1.0:
        raise ConfigError(f'target recall must be in (0, 1], got {config.target_recall}')
    if config.stage2_precision not in PRECISIONS:
        raise ConfigError(f'unknown stage-2 precision {config.stage2_precision!r} '
                          f'(one of {", ".join(PRECISIONS)})')
    if not 1 <= config.fine_tune_blocks <= 4:
        raise ConfigError(f'fine-tune blocks must be 1-4, got {config.fine_tune_blocks}')
    if config.augment_copies < 0:
        raise ConfigError(f'augment copies must be >= 0, got {config.augment_copies}')
    if config.batch_size < 1 or config.epochs1 < 0 or config.epochs2 < 0:
        raise ConfigError('batch size must be >= 1 and epochs >= 0')
    if config.from_scratch and config.epochs1 < 1:
        raise ConfigError('--from-scratch needs --epochs >= 1')


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def predict_p_ng(model, x: Sequence[np.ndarray] | np.ndarray, batch_size: int = 32) -> np.ndarray:
    """NG probabilities of a batch of RGB inputs (class index 1)."""
    return model.predict(np.asarray(x), batch_size=batch_size, verbose=0)[:, 1]


# --------------------------------------------------------------------------------------------
# Calibrating a trained model again


def recalibrate(model_dir, dataset, *, target_recall: float = 0.99, calibrate_on: str = 'bolt',
                rule: str = 'recall', split: str = 'auto', progress: bool = True,
                write: bool = True) -> dict[str, Any]:
    """Calibrate a trained model's NG threshold again, on ``dataset``, and store it.

    For a model trained before the calibration rule changed, or for views collected on the line
    (labelled OK / NG folders or a labels.csv). The model file is not touched; ``metadata.json``
    gets the new threshold and an entry in ``training.calibrations`` with the old one, so every
    change stays on record.

    Args:
        model_dir: Model artifact directory.
        dataset: A loaded dataset (:func:`bolt_inspection.core.vision.dataset.load_dataset`).
        target_recall: NG recall to reach, over bolts or views (``calibrate_on``); rule
            ``'recall'`` only.
        calibrate_on: ``'bolt'`` or ``'view'`` (see :class:`TrainConfig`).
        rule: ``'recall'``: the highest threshold reaching ``target_recall``. ``'sorting'``:
            the middle of the cuts with the best BOLT accuracy
            (:func:`~bolt_inspection.core.model.threshold.bolt_sorting_threshold`, what the demo
            scores); needs ``calibrate_on='bolt'`` and both NG and OK bolts. Either way the
            threshold is at most :data:`THRESHOLD_CAP`.
        split: Which views: ``'auto'`` (the model's validation bolts when ``dataset`` is its
            training set, else all), ``'val'`` or ``'all'`` (see ``evaluate.select_records``).
        progress: Progress bar while the views are read.
        write: False = only compute (a dry run).

    Returns:
        The calibration record: rule, old and new threshold, the split, counts, and the NG
        recall, OK pass rate and accuracy (over bolts or views) at the new threshold.

    Raises:
        ModelError: The artifact cannot be loaded.
        DatasetError: No NG bolt (or view) to calibrate on; for ``'sorting'``, no OK bolt.
        ConfigError: Bad ``calibrate_on`` or ``rule``.
    """
    from bolt_inspection.core.model.artifact import METADATA_FILE, load_artifact
    from bolt_inspection.core.model.threshold import bolt_sorting_threshold, calibrate_threshold
    from bolt_inspection.core.study.evaluate import select_records

    _check_calibrate_on(calibrate_on)
    if rule not in CALIBRATION_RULES:
        raise ConfigError(f'unknown calibration rule {rule!r} '
                          f'(one of {", ".join(CALIBRATION_RULES)})')
    if rule == 'sorting' and calibrate_on != 'bolt':
        raise ConfigError("rule 'sorting' sorts bolts: it needs calibrate_on 'bolt' "
                          '(--calibrate-on bolt)')
    artifact = load_artifact(model_dir)
    meta = artifact.metadata
    records, used = select_records(dataset, meta, split)
    views = load_views(records, meta.roi_boxes, tuple(meta.input_size), progress,
                       'calibration views')
    p_ng = artifact.model.predict(views, batch_size=32, verbose=0)[:, meta.ng_index]
    y = labels_of(records)
    p_cal, y_cal = (p_ng, y) if calibrate_on == 'view' else bolt_scores(records, p_ng)
    if not y_cal.any():
        raise DatasetError(f'{dataset.root}: no NG {calibrate_on} in the {used} split: nothing '
                           'to calibrate the NG threshold on')
    if rule == 'sorting' and y_cal.all():
        raise DatasetError(f'{dataset.root}: no OK bolt in the {used} split: the sorting rule '
                           'needs NG and OK bolts')
    if rule == 'recall':
        threshold = calibrate_threshold(p_cal, y_cal, target_recall, at_most=THRESHOLD_CAP)
    else:
        # Only each bolt's score and truth matter: the positions in p_cal / y_cal serve as ids.
        best, _ = bolt_sorting_threshold(
            {str(i): float(p) for i, p in enumerate(p_cal)},
            {str(i): 'NG' if t else 'OK' for i, t in enumerate(y_cal)})
        threshold = min(best, THRESHOLD_CAP)
    at = view_metrics(p_cal, y_cal, threshold)
    record = {
        'date': time.strftime('%Y-%m-%dT%H:%M:%S'), 'data': str(dataset.root), 'split': used,
        'rule': rule, 'calibrated_on': calibrate_on,
        'target_recall': float(target_recall) if rule == 'recall' else None,
        'views': len(records), 'bolts': len({r.bolt_id for r in records}),
        'previous_threshold': float(meta.threshold), 'threshold': float(threshold),
        'ng_recall': at['ng_recall'], 'ok_recall': at['ok_recall'], 'accuracy': at['accuracy'],
    }
    if write:
        path = Path(model_dir) / METADATA_FILE
        data = json.loads(path.read_text(encoding='utf-8'))
        data['threshold'] = float(threshold)
        training = data.setdefault('training', {})
        training.setdefault('calibrations', []).append(_jsonable(record))
        tmp = path.with_name('.tmp-' + METADATA_FILE)
        tmp.write_text(json.dumps(data, indent=2) + '\n')
        tmp.replace(path)
    return record
