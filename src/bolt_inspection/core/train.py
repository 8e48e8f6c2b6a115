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
most 0.5 (:mod:`bolt_inspection.core.threshold`), and the model is saved as an artifact with its
history, metrics and timings.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bolt_inspection.core.errors import ConfigError, DatasetError

Box = tuple[int, int, int, int]
ARCHS = ('vgg16', 'vgg16_bn', 'tiny')
LR_SCHEDULES = ('constant', 'cosine')
#: The calibrated NG threshold never exceeds the softmax's argmax rule (see core.threshold).
THRESHOLD_CAP = 0.5
#: What the NG threshold's target recall is counted over.
CALIBRATE_ON = ('bolt', 'view')
#: How ``recalibrate`` picks the threshold: reach a target NG recall, or sort the most bolts right.
CALIBRATION_RULES = ('recall', 'sorting')


@dataclass
class TrainConfig:
    """Training settings (stored in the artifact's metadata under ``training.config``).

    Attributes:
        input_size: Model input ``(width, height)``; 112x224 keeps the thread's 1:2 aspect.
        weights: ``'none'`` (random init, the only option offline), ``'imagenet'`` or a path.
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
        calibrate_on: ``'bolt'``: ``target_recall`` of the NG validation *bolts* must have a
            view at or above the threshold, as the gate sorts them (any view NG -> bolt NG);
            ``'view'``: of the NG validation views. Per view, the worst-shown defect view sets
            the threshold although the bolt's other views already catch it, and the false
            alarms of four OK views add up at the gate.
    """

    input_size: tuple[int, int] = (112, 224)
    weights: str = 'none'
    epochs1: int = 10
    epochs2: int = 10
    batch_size: int = 32
    lr1: float = 1e-3
    lr2: float = 1e-4
    lr_scratch: float = 1e-4
    from_scratch: bool = False
    val_fraction: float = 0.2
    seed: int = 0
    patience: int = 5
    target_recall: float = 0.99
    use_roi: bool = True
    cameras: str | None = None
    arch: str = 'vgg16'
    head: str = 'flatten'
    dense_units: int = 256
    dropout: float = 0.5
    measure_timings: bool = True
    timing_images: int = 64
    augment: bool = False
    lr_schedule: str = 'constant'
    calibrate_on: str = 'bolt'

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
    from bolt_inspection.core.roi import load_camera_config

    if not config.use_roi:
        return None, None, 'full frame'
    if config.cameras:
        camera_config = load_camera_config(config.cameras)
        source = str(config.cameras)
    elif dataset.kind == 'synthetic' and (Path(dataset.root) / 'synth.json').is_file():
        from bolt_inspection.core import synth

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

    from bolt_inspection.core.dataset import read_image
    from bolt_inspection.core.errors import ImageError
    from bolt_inspection.core.roi import crop_roi, resize_bgr

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


def split_backbone_head(model):
    """The frozen-feature extractor and a head model sharing the model's head layers.

    Returns:
        ``(backbone, head)``: ``backbone`` maps images to the last conv/pool output;
        ``head`` maps those features to the class probabilities through the SAME layer objects
        as ``model``, so training ``head`` trains ``model``'s head.
    """
    from bolt_inspection.core.keras_backend import keras
    from bolt_inspection.core.model import backbone_output_layer

    k = keras()
    cut = backbone_output_layer(model)
    backbone = k.Model(model.input, cut.output, name='backbone')
    index = model.layers.index(cut)
    head_layers = model.layers[index + 1:]
    features = k.Input(shape=tuple(cut.output.shape[1:]), name='features')
    x = features
    for layer in head_layers:
        x = layer(x)
    head = k.Model(features, x, name='head')
    return backbone, head


def build_model(config: TrainConfig):
    """Build the configured architecture; returns ``(model, gradcam_layer)``."""
    from bolt_inspection.core.model import build_tiny, build_vgg16

    if config.arch in ('vgg16', 'vgg16_bn'):
        model = build_vgg16(config.input_size, config.weights, head=config.head,
                            dense_units=config.dense_units, dropout=config.dropout,
                            seed=config.seed, batch_norm=config.arch == 'vgg16_bn')
        return model, 'block5_conv3'
    if config.arch == 'tiny':
        if str(config.weights).lower() != 'none':
            raise ConfigError('--weights applies to the vgg16 architecture only')
        model = build_tiny(config.input_size, filters=(16, 32, 64), head=config.head,
                           dense_units=config.dense_units, seed=config.seed)
        return model, 'last_conv'
    raise ConfigError(f'unknown architecture {config.arch!r} (one of {", ".join(ARCHS)})')


class EpochLog:
    """Keras callback factory: one line per epoch (stage, losses, accuracy, seconds).

    With ``progress``, also a batch progress bar within each epoch: an epoch on a few thousand
    crops takes minutes on a CPU.
    """

    @staticmethod
    def make(stage: str, epochs: int, log: Callable[[str], None] | None,
             progress: bool = False):
        from bolt_inspection.core.keras_backend import keras

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


def augment_batch(x: np.ndarray, rng: np.random.Generator, max_shift: int = 3) -> np.ndarray:
    """Randomly perturb a uint8 RGB batch the way the line's images vary.

    Per image: gain 0.85-1.15 and offset +-12 (lighting drift), a shift of up to ``max_shift``
    pixels each way (pose jitter; edges repeated), and sensor noise (sigma 2). No flips: a
    mirrored thread would be left-handed, and the head is always at the top.

    Returns:
        A new float32 batch in 0..255 (the input ``x`` is not changed).
    """
    n = len(x)
    gain = rng.uniform(0.85, 1.15, (n, 1, 1, 1)).astype(np.float32)
    offset = rng.uniform(-12.0, 12.0, (n, 1, 1, 1)).astype(np.float32)
    out = x.astype(np.float32) * gain + offset
    if max_shift > 0:
        h, w = x.shape[1:3]
        pad = np.pad(out, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)),
                     mode='edge')
        dy, dx = rng.integers(0, 2 * max_shift + 1, (2, n))
        out = np.stack([pad[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    out += rng.normal(0.0, 2.0, out.shape).astype(np.float32)
    return np.clip(out, 0.0, 255.0, out=out)


def _training_data(x, y, config: TrainConfig, weights: dict[int, float], augment: bool):
    """``(inputs, targets, fit kwargs)``: plain arrays, or an augmenting ``PyDataset``."""
    from bolt_inspection.core.keras_backend import keras

    if not augment:
        return x, y, {'batch_size': config.batch_size, 'class_weight': weights,
                      'shuffle': True}
    k = keras()
    rng = np.random.default_rng(config.seed)
    sample_w = np.array([weights[int(c)] for c in y], np.float32)

    class _Augmented(k.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.order = rng.permutation(len(x))

        def __len__(self):
            return math.ceil(len(x) / config.batch_size)

        def __getitem__(self, index):
            idx = np.sort(self.order[index * config.batch_size:(index + 1) * config.batch_size])
            return augment_batch(x[idx], rng), y[idx], sample_w[idx]

        def on_epoch_end(self):
            self.order = rng.permutation(len(x))

    return _Augmented(), None, {}


def _fit(model, x, y, val, *, epochs: int, lr: float, config: TrainConfig, stage: str,
         log, weights: dict[int, float], augment: bool = False,
         progress: bool = False) -> dict[str, list[float]]:
    from bolt_inspection.core.keras_backend import keras

    k = keras()
    inputs, targets, fit_kwargs = _training_data(x, y, config, weights, augment)
    rate = lr
    if config.lr_schedule == 'cosine':
        steps = max(1, epochs * math.ceil(len(x) / config.batch_size))
        rate = k.optimizers.schedules.CosineDecay(lr, steps, alpha=0.05)
    model.compile(optimizer=k.optimizers.Adam(rate), loss='sparse_categorical_crossentropy',
                  metrics=['accuracy'])
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


def run_stage1_cached(model, x_train, y_train, x_val, y_val, config: TrainConfig, *, log=None,
                      progress: bool = True) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Stage 1: freeze the backbone, cache its outputs once, train the head on the cache.

    Returns:
        ``(history, timings)`` with ``timings['cache_s']`` (one backbone pass over all crops).
    """
    from bolt_inspection.core.model import set_stage

    set_stage(model, 'stage1')
    backbone, head = split_backbone_head(model)
    start = time.perf_counter()
    verbose = 0  # one log line below says what was cached; Keras bars would clutter logs
    f_train = backbone.predict(x_train, batch_size=config.batch_size, verbose=verbose)
    f_val = (backbone.predict(x_val, batch_size=config.batch_size, verbose=verbose)
             if x_val is not None and len(x_val) else None)
    cache_s = time.perf_counter() - start
    if log:
        log(f'[stage1] cached backbone features {f_train.shape[1:]} of {len(f_train)} train + '
            f'{0 if f_val is None else len(f_val)} val views in {cache_s:.1f} s')
    val = (f_val, y_val) if f_val is not None else None
    history = _fit(head, f_train, y_train, val, epochs=config.epochs1, lr=config.lr1,
                   config=config, stage='stage1', log=log, weights=class_weights(y_train))
    return history, {'cache_s': cache_s}


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
    from bolt_inspection.core.keras_backend import keras
    from bolt_inspection.core.model import custom_objects, set_stage

    k = keras()
    if max_images is not None:
        x, y = x[:max_images], y[:max_images]
    with k.saving.custom_object_scope(custom_objects()):
        clone = k.models.clone_model(model)
    clone.set_weights(model.get_weights())
    set_stage(clone, 'stage1')
    backbone, head = split_backbone_head(clone)

    def timed_epochs(net, data):
        net.compile(optimizer=k.optimizers.Adam(1e-4), loss='sparse_categorical_crossentropy')
        epoch_log = EpochLog.make('timing', 2, None)
        net.fit(data, y, batch_size=batch_size, epochs=2, verbose=0, callbacks=[epoch_log])
        return epoch_log.seconds[-1]

    start = time.perf_counter()
    features = backbone.predict(x, batch_size=batch_size, verbose=0)
    cache_build_s = time.perf_counter() - start
    cached = timed_epochs(head, features)
    recompute = timed_epochs(clone, x)
    return {'cached_epoch_s': cached, 'recompute_epoch_s': recompute,
            'cache_build_s': cache_build_s,
            'speedup': recompute / cached if cached > 0 else float('inf'),
            'images': int(len(x)), 'batch_size': int(batch_size)}


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


def train(dataset, config: TrainConfig, out_dir, progress: bool = True,
          log: Callable[[str], None] | None = None) -> Path:
    """Train a classifier on ``dataset`` and save it as an artifact in ``out_dir``.

    Args:
        dataset: A :class:`bolt_inspection.core.dataset.Dataset`.
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
    from bolt_inspection.core.artifact import ModelMetadata, save_artifact
    from bolt_inspection.core.dataset import read_image, split_by_bolt
    from bolt_inspection.core.keras_backend import keras
    from bolt_inspection.core.model import set_stage
    from bolt_inspection.core.threshold import calibrate_threshold, recall_at

    if log is None and progress:
        def log(line: str) -> None:
            print(line, file=sys.stderr, flush=True)
    say = log or (lambda line: None)
    _check_config(config)
    t_start = time.perf_counter()
    keras().utils.set_random_seed(int(config.seed))
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
    # Build first: a missing weights file or an impossible download fails before the data load.
    model, gradcam_layer = build_model(config)
    x_train = load_views(train_records, boxes, config.input_size, progress, 'train views')
    x_val = load_views(val_records, boxes, config.input_size, progress, 'val views')
    y_train, y_val = labels_of(train_records), labels_of(val_records)
    if len(set(y_train.tolist())) < 2:
        raise DatasetError(f'{dataset.root}: the training split has only '
                           f'{"NG" if y_train.any() else "OK"} views; need both classes')
    history: dict[str, dict[str, list[float]]] = {}
    timings: dict[str, Any] = {}
    if config.measure_timings and not config.from_scratch:
        say('timing one stage-1 epoch: cached features vs recomputing the backbone ...')
        timings['stage1_epoch'] = measure_stage1_epoch_times(
            model, x_train, y_train, config.batch_size, config.timing_images)
        t = timings['stage1_epoch']
        say(f'stage-1 epoch on {t["images"]} images: cached {t["cached_epoch_s"]:.3f} s, '
            f'recompute {t["recompute_epoch_s"]:.3f} s -> {t["speedup"]:.1f}x faster')
    val = (x_val, y_val)
    weights = class_weights(y_train)
    if config.from_scratch:
        set_stage(model, 'scratch')
        history['scratch'] = _fit(model, x_train, y_train, val, epochs=config.epochs1,
                                  lr=config.lr_scratch, config=config, stage='scratch', log=say,
                                  weights=weights, augment=config.augment,
                                  progress=progress)
    else:
        if config.epochs1 > 0:
            history['stage1'], stage_t = run_stage1_cached(
                model, x_train, y_train, x_val, y_val, config, log=say, progress=progress)
            timings.update({'stage1_cache_s': stage_t['cache_s']})
        if config.epochs2 > 0:
            set_stage(model, 'stage2')
            history['stage2'] = _fit(model, x_train, y_train, val, epochs=config.epochs2,
                                     lr=config.lr2, config=config, stage='stage2', log=say,
                                     weights=weights, augment=config.augment,
                                     progress=progress)
    for name, stage_history in history.items():
        timings[f'{name}_s'] = float(sum(stage_history.get('seconds', [])))
    set_stage(model, 'scratch')  # a loaded model should not come back half frozen
    p_val = model.predict(x_val, batch_size=config.batch_size, verbose=0)[:, 1]
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
    timings['total_s'] = time.perf_counter() - t_start
    metadata = ModelMetadata(
        classes=('OK', 'NG'), input_size=tuple(config.input_size), roi_boxes=boxes,
        threshold=float(threshold), gradcam_layer=gradcam_layer,
        dataset_fingerprint=dataset.fingerprint(),
        training=_jsonable({'config': config.to_json(), 'roi_source': roi_source,
                            'dataset': str(dataset.root), 'dataset_kind': dataset.kind,
                            'train_views': len(train_records), 'val_views': len(val_records),
                            'val_bolts': sorted({r.bolt_id for r in val_records}),
                            'timings': timings}),
        metrics=_jsonable(metrics), frame_size=roi_frame)
    out = save_artifact(model, metadata, out_dir, history=history)
    v = metrics['view']
    say(f'threshold {threshold:.4f} (NG recall {metrics["threshold_recall_val"]:.3f} of the '
        f'validation {config.calibrate_on}s, target {config.target_recall}); val view '
        f'accuracy {v["accuracy"]:.3f}, NG recall {v["ng_recall"]:.3f}, OK recall '
        f'{v["ok_recall"]:.3f}; saved {out} '
        f'(model id {metadata.model_id}, {timings["total_s"]:.0f} s)')
    return out


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
        dataset: A loaded dataset (:func:`bolt_inspection.core.dataset.load_dataset`).
        target_recall: NG recall to reach, over bolts or views (``calibrate_on``); rule
            ``'recall'`` only.
        calibrate_on: ``'bolt'`` or ``'view'`` (see :class:`TrainConfig`).
        rule: ``'recall'``: the highest threshold reaching ``target_recall``. ``'sorting'``:
            the middle of the cuts with the best BOLT accuracy
            (:func:`~bolt_inspection.core.threshold.bolt_sorting_threshold`, what the demo
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
    from bolt_inspection.core.artifact import METADATA_FILE, load_artifact
    from bolt_inspection.core.evaluate import select_records
    from bolt_inspection.core.threshold import bolt_sorting_threshold, calibrate_threshold

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
