"""Model artifacts: a directory with ``model.keras`` and ``metadata.json``.

The metadata says everything needed to use the model correctly on the line without guessing:
the class order, the input size, which ROI boxes the model was trained on (and for which frame
size), the calibrated NG threshold, the Grad-CAM layer, the dataset fingerprint, the training
configuration and metrics, and the library versions. :func:`load_artifact` checks the two files
against each other and refuses anything inconsistent with a one-line :class:`ModelError`.

``model_id`` is the first 12 hex digits of the SHA-256 of ``model.keras``: it changes whenever
the weights change, and it is what the verdict messages report.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bolt_inspection.core.errors import ModelError
from bolt_inspection.core.files import file_sha256
from bolt_inspection.core.vision.roi import Box

MODEL_FILE = 'model.keras'
METADATA_FILE = 'metadata.json'
HISTORY_FILE = 'history.json'
FORMAT_VERSION = 1


@dataclass
class ModelMetadata:
    """What a model needs around it to be used correctly.

    Attributes:
        classes: Output class names in output order; ``('OK', 'NG')``.
        input_size: Model input ``(width, height)``.
        roi_boxes: Camera -> ``(x, y, w, h)`` crop used in training; ``None`` = full frames.
        threshold: A view is NG when its NG probability is >= this.
        gradcam_layer: Name of the conv layer Grad-CAM differentiates against.
        dataset_fingerprint: SHA-256 of the training label table ('' if unknown).
        training: The training configuration (and history summary, timings).
        metrics: Validation metrics at the threshold.
        versions: Package / TensorFlow / Keras / NumPy versions that trained the model.
        frame_size: ``(width, height)`` of the camera frames ``roi_boxes`` refer to.
        model_id: Short hash of ``model.keras``; filled by :func:`save_artifact`.
    """

    classes: tuple[str, ...] = ('OK', 'NG')
    input_size: tuple[int, int] = (112, 224)
    roi_boxes: dict[int, tuple[int, int, int, int]] | None = None
    threshold: float = 0.5
    gradcam_layer: str = 'block5_conv3'
    dataset_fingerprint: str = ''
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    frame_size: tuple[int, int] | None = None
    model_id: str = ''

    @property
    def ng_index(self) -> int:
        """Index of the 'NG' class in the model output."""
        return self.classes.index('NG')

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (camera keys become strings, tuples lists)."""
        data = dataclasses.asdict(self)
        data['classes'] = list(self.classes)
        data['input_size'] = list(self.input_size)
        data['frame_size'] = list(self.frame_size) if self.frame_size else None
        data['roi_boxes'] = (None if self.roi_boxes is None else
                             {str(cam): list(box) for cam, box in sorted(self.roi_boxes.items())})
        data['format_version'] = FORMAT_VERSION
        return data

    @classmethod
    def from_json(cls, data: Any, where: str = METADATA_FILE) -> ModelMetadata:
        """Parse and validate what :meth:`to_json` wrote.

        Raises:
            ModelError: A field is missing or has the wrong type; the message names it.
        """
        if not isinstance(data, dict):
            raise ModelError(f'{where}: expected a JSON object')
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            classes = tuple(str(c) for c in data['classes'])
            if 'NG' not in classes or 'OK' not in classes:
                raise ValueError('classes must contain OK and NG')
            width, height = (int(v) for v in data['input_size'])
            boxes = data.get('roi_boxes')
            roi_boxes = None if boxes is None else {
                int(cam): tuple(int(v) for v in box) for cam, box in boxes.items()}
            if roi_boxes is not None and any(len(b) != 4 for b in roi_boxes.values()):
                raise ValueError('roi_boxes entries must be [x, y, w, h]')
            frame = _frame_size(data.get('frame_size'))
            threshold = float(data['threshold'])
            if not (0.0 <= threshold <= 1.0) or math.isnan(threshold):
                raise ValueError(f'threshold {threshold} not in [0, 1]')
            gradcam_layer = str(data['gradcam_layer'])
        except KeyError as exc:
            raise ModelError(f'{where}: missing field {exc.args[0]}') from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f'{where}: bad value: {exc}') from None
        extra = {k: data[k] for k in ('dataset_fingerprint', 'training', 'metrics', 'versions',
                                      'model_id') if k in data and k in known}
        return cls(classes=classes, input_size=(width, height), roi_boxes=roi_boxes,
                   threshold=threshold, gradcam_layer=gradcam_layer,
                   frame_size=frame, **extra)


def _frame_size(value: Any) -> tuple[int, int] | None:
    """``frame_size`` of metadata.json: null or [width, height], two whole numbers > 0."""
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 2
            or not all(type(v) is int and 0 < v <= 65535 for v in value)):
        raise ValueError(f'frame_size must be [width, height] in pixels or null, got '
                         f'{json.dumps(value)[:40]}')
    return value[0], value[1]


def _check_keras_file(model_path: Path) -> None:
    """A ``.keras`` file is a zip archive: say 'corrupt' rather than let Keras say 'not found'."""
    import zipfile

    try:
        with zipfile.ZipFile(model_path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise ModelError(f'{model_path}: cannot load model: the file is corrupt or truncated '
                         f'(not a .keras zip archive: {exc})') from None
    if bad is not None:
        raise ModelError(f'{model_path}: cannot load model: the file is corrupt (damaged '
                         f'entry {bad})')


@dataclass
class ModelArtifact:
    """A loaded, checked model with its metadata."""

    model: Any
    metadata: ModelMetadata
    path: Path
    model_id: str


def save_artifact(model, metadata: ModelMetadata, out_dir: str | Path,
                  history: dict[str, list[float]] | None = None) -> Path:
    """Write ``out_dir/model.keras`` and ``out_dir/metadata.json`` (and ``history.json``).

    Args:
        model: The Keras model.
        metadata: Its metadata; ``versions`` is filled in if empty, ``model_id`` is set.
        out_dir: Directory to create or overwrite.
        history: Per-epoch training history, also written as ``history.json``.

    Returns:
        ``out_dir``.

    Raises:
        ModelError: The metadata does not fit the model (checked before writing).
    """
    from bolt_inspection.core.model.keras_backend import versions

    out_dir = Path(out_dir)
    _check_model_matches(model, metadata, str(out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_FILE
    tmp_path = out_dir / ('.tmp-' + MODEL_FILE)
    model.save(tmp_path)
    tmp_path.replace(model_path)
    metadata.versions = metadata.versions or versions()
    metadata.model_id = file_sha256(model_path)[:12]
    if history is not None:
        metadata.training = {**metadata.training, 'history': history}
        (out_dir / HISTORY_FILE).write_text(json.dumps(history, indent=1) + '\n')
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata.to_json(), indent=2) + '\n')
    return out_dir


def read_metadata(path: str | Path) -> ModelMetadata:
    """Read and validate ``metadata.json`` of an artifact directory (no TensorFlow needed)."""
    path = Path(path)
    meta_path = path / METADATA_FILE
    if not path.is_dir():
        raise ModelError(f'{path}: model directory not found')
    if not meta_path.is_file():
        raise ModelError(f'{path}: no {METADATA_FILE} (not a model directory?)')
    try:
        data = json.loads(meta_path.read_text(encoding='utf-8'))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f'{meta_path}: invalid JSON ({exc})') from None
    return ModelMetadata.from_json(data, str(meta_path))


def load_artifact(path: str | Path) -> ModelArtifact:
    """Load and check a model directory written by :func:`save_artifact`.

    Raises:
        ModelError: Missing directory, missing or corrupt ``model.keras``, invalid metadata,
            or metadata that does not match the model (input shape, classes, Grad-CAM layer,
            or the model file was replaced).
    """
    from bolt_inspection.core.model.keras_backend import keras
    from bolt_inspection.core.model.layers import custom_objects

    path = Path(path)
    metadata = read_metadata(path)
    model_path = path / MODEL_FILE
    if not model_path.is_file():
        raise ModelError(f'{path}: no {MODEL_FILE}')
    model_id = file_sha256(model_path)[:12]
    if metadata.model_id and metadata.model_id != model_id:
        raise ModelError(f'{model_path}: file hash {model_id} does not match metadata model_id '
                         f'{metadata.model_id} (model replaced without its metadata?)')
    _check_keras_file(model_path)
    try:
        model = keras().models.load_model(model_path, compile=False,
                                          custom_objects=custom_objects())
    except Exception as exc:  # noqa: BLE001 - zip, h5py and Keras raise many types
        text = ' '.join(str(exc).split())[:160] or type(exc).__name__
        raise ModelError(f'{model_path}: cannot load model ({text})') from None
    _check_model_matches(model, metadata, str(path))
    return ModelArtifact(model=model, metadata=metadata, path=path, model_id=model_id)


def _check_model_matches(model, metadata: ModelMetadata, where: str) -> None:
    shape = tuple(model.input_shape)
    width, height = metadata.input_size
    if len(shape) != 4 or shape[1:] != (height, width, 3):
        raise ModelError(f'{where}: model input {shape[1:]} does not match metadata input_size '
                         f'{width}x{height} (expected ({height}, {width}, 3))')
    out = tuple(model.output_shape)
    if len(out) != 2 or out[1] != len(metadata.classes):
        raise ModelError(f'{where}: model output {out[1:]} does not match the '
                         f'{len(metadata.classes)} classes {list(metadata.classes)}')
    try:
        layer = model.get_layer(metadata.gradcam_layer)
    except ValueError:
        raise ModelError(f'{where}: gradcam_layer {metadata.gradcam_layer!r} is not a layer of '
                         'the model') from None
    if len(layer.output.shape) != 4:
        raise ModelError(f'{where}: gradcam_layer {metadata.gradcam_layer!r} is not a 2-D '
                         'feature map layer')


def model_boxes(metadata, frame_size: tuple[int, int]) -> dict[int, Box] | None:
    """The artifact's ROI boxes scaled to frames of ``frame_size`` (None = full-frame model)."""
    from bolt_inspection.core.vision.roi import scale_boxes

    if not metadata.roi_boxes:
        return None
    boxes = {int(c): tuple(b) for c, b in metadata.roi_boxes.items()}
    if metadata.frame_size and tuple(metadata.frame_size) != tuple(frame_size):
        boxes = scale_boxes(boxes, tuple(metadata.frame_size), tuple(frame_size))
    return boxes
