"""Loading labelled bolt images: synthetic rig output or a real ``OK/`` + ``NG/`` folder.

Two layouts are recognised:

* ``DIR/labels.csv`` (what :func:`bolt_inspection.core.vision.synth.generate_dataset` writes): one
row
  per view with the bolt id, camera, bolt and view labels, defect type, thread box, image and
  mask paths relative to ``DIR``.
* ``DIR/OK/*`` and ``DIR/NG/*`` (the Keras ``image_dataset_from_directory`` convention, what a
  user with real photographs has). Files named ``<bolt>_cam<k>.<ext>`` are grouped into one bolt
  (its views may sit in either folder; the bolt is NG if any view is); other files are each
  their own bolt.

Splits are always by bolt so no view of a validation bolt is seen in training.
"""

from __future__ import annotations

import csv
import hashlib
import re
import struct
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bolt_inspection.core.errors import DatasetError, ImageError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp')
LABELS = ('OK', 'NG')
_REQUIRED_COLUMNS = ('bolt_id', 'cam', 'view_label', 'image')
_VIEW_NAME = re.compile(r'^(?P<bolt>.+)_cam(?P<cam>\d+)$')


@dataclass(frozen=True)
class ViewRecord:
    """One labelled camera view.

    Attributes:
        bolt_id: The bolt the view belongs to (a string; synthetic ids are decimal numbers).
        cam: Camera index.
        image_path: Absolute path of the image.
        label: The VIEW label, ``'OK'`` or ``'NG'`` (NG iff a defect is visible in this view).
        bolt_label: ``'OK'`` or ``'NG'`` for the whole bolt.
        defect: Defect type (``'ok'``, ``'insufficient'``, ...) or ``'unknown'`` for folders.
        mask_path: The defect mask (synthetic data only), else None.
        thread_box: ``(x, y, w, h)`` of the coated thread when known, else None.
    """

    bolt_id: str
    cam: int
    image_path: Path
    label: str
    bolt_label: str
    defect: str
    mask_path: Path | None
    thread_box: tuple | None


@dataclass
class Dataset:
    """A loaded dataset.

    Attributes:
        root: The dataset folder.
        records: All views, sorted by bolt id then camera.
        kind: ``'synthetic'`` (labels.csv) or ``'folders'`` (OK/ + NG/).
    """

    root: Path
    records: list[ViewRecord]
    kind: str

    def bolts(self) -> dict[str, list[ViewRecord]]:
        """Views grouped by bolt id, in record order."""
        return _group(self.records)

    def fingerprint(self) -> str:
        """SHA-256 hex digest of the label table (paths relative to the root, labels)."""
        digest = hashlib.sha256()
        for r in self.records:
            try:
                rel = r.image_path.relative_to(self.root).as_posix()
            except ValueError:
                rel = r.image_path.as_posix()
            digest.update(f'{r.bolt_id},{r.cam},{rel},{r.label},{r.bolt_label},{r.defect}\n'
                          .encode())
        return digest.hexdigest()


def _group(records: list[ViewRecord]) -> dict[str, list[ViewRecord]]:
    groups: dict[str, list[ViewRecord]] = defaultdict(list)
    for r in records:
        groups[r.bolt_id].append(r)
    return dict(groups)


def _sort_key(r: ViewRecord) -> tuple:
    # Numeric bolt ids sort numerically, others after them alphabetically.
    return (0, int(r.bolt_id), '', r.cam) if r.bolt_id.isdigit() else (1, 0, r.bolt_id, r.cam)


def load_dataset(path) -> Dataset:
    """Load a dataset folder in either layout (see the module docstring).

    Args:
        path: The dataset folder.

    Returns:
        The :class:`Dataset`.

    Raises:
        DatasetError: The folder is missing or holds no images, ``labels.csv`` lacks columns
            or names files that do not exist, or neither layout is present.
    """
    root = Path(path)
    if not root.exists():
        raise DatasetError(f'{root}: no such dataset folder')
    if not root.is_dir():
        raise DatasetError(f'{root}: not a folder (expected a dataset folder)')
    root = root.resolve()
    if (root / 'labels.csv').is_file():
        return _load_labels_csv(root)
    if any((root / label).is_dir() for label in LABELS):
        return _load_folders(root)
    if not any(root.iterdir()):
        raise DatasetError(f'{root}: dataset folder is empty')
    raise DatasetError(f'{root}: no labels.csv and no OK/ or NG/ subfolders (expected '
                       'a synthetic dataset or DIR/OK/*.png + DIR/NG/*.png)')


def _load_labels_csv(root: Path) -> Dataset:
    table = root / 'labels.csv'
    try:
        with open(table, newline='', encoding='utf-8') as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            missing = [c for c in _REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise DatasetError(f'{table}: missing column(s) {", ".join(missing)} '
                                   f'(has: {", ".join(columns) or "nothing"})')
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f'{table}: cannot read ({exc})') from None
    if not rows:
        raise DatasetError(f'{table}: no rows (the dataset is empty)')
    records = []
    missing_files = []
    for line, row in enumerate(rows, start=2):
        try:
            records.append(_row_record(root, row))
        except (ValueError, TypeError, KeyError) as exc:
            raise DatasetError(f'{table}: line {line}: {exc}') from None
        if not records[-1].image_path.is_file():
            missing_files.append(row['image'])
    if missing_files:
        more = f' and {len(missing_files) - 1} more' if len(missing_files) > 1 else ''
        raise DatasetError(f'{table}: references missing image {missing_files[0]}{more}')
    records.sort(key=_sort_key)
    return Dataset(root=root, records=records, kind='synthetic')


def _row_record(root: Path, row: dict) -> ViewRecord:
    label = (row.get('view_label') or '').strip().upper()
    if label not in LABELS:
        raise ValueError(f'view_label must be OK or NG, got {row.get("view_label")!r}')
    bolt_label = (row.get('bolt_label') or label).strip().upper()
    if bolt_label not in LABELS:
        raise ValueError(f'bolt_label must be OK or NG, got {row.get("bolt_label")!r}')
    image = (row.get('image') or '').strip()
    if not image:
        raise ValueError('empty image path')
    mask = (row.get('mask') or '').strip()
    box = None
    if all((row.get(k) or '').strip() for k in ('x', 'y', 'w', 'h')):
        box = tuple(int(row[k]) for k in ('x', 'y', 'w', 'h'))
    bolt_id = str(row['bolt_id']).strip()
    if not bolt_id:
        raise ValueError('empty bolt_id')
    if bolt_id.isdigit():
        bolt_id = str(int(bolt_id))   # '000012' and '12' are the same bolt
    return ViewRecord(bolt_id=bolt_id, cam=int(row['cam']), image_path=root / image,
                      label=label, bolt_label=bolt_label,
                      defect=(row.get('defect') or 'unknown').strip() or 'unknown',
                      mask_path=root / mask if mask else None, thread_box=box)


def _load_folders(root: Path) -> Dataset:
    files: list[tuple[str, Path]] = []
    for label in LABELS:
        folder = root / label
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                files.append((label, f))
    if not files:
        raise DatasetError(f'{root}: no images in OK/ or NG/ (looked for '
                           f'{", ".join(IMAGE_EXTENSIONS)})')
    views = []
    for label, f in files:
        m = _VIEW_NAME.match(f.stem)
        if m:
            bolt, cam = m.group('bolt'), int(m.group('cam'))
            if bolt.isdigit():
                bolt = str(int(bolt))
        else:
            # No view pattern: the file is a bolt of its own (named by folder, so an OK and an
            # NG file with the same name stay two bolts).
            bolt, cam = f'{label}/{f.stem}', 0
        views.append((bolt, cam, label, f))
    seen: dict[tuple[str, int], Path] = {}
    for bolt, cam, _, f in views:
        if (bolt, cam) in seen:
            raise DatasetError(f'{f}: view {cam} of bolt {bolt} appears twice '
                               f'(also {seen[(bolt, cam)]})')
        seen[(bolt, cam)] = f
    ng_bolts = {bolt for bolt, _, label, _ in views if label == 'NG'}
    records = [ViewRecord(bolt_id=bolt, cam=cam, image_path=f, label=label,
                          bolt_label='NG' if bolt in ng_bolts else 'OK', defect='unknown',
                          mask_path=None, thread_box=None)
               for bolt, cam, label, f in views]
    records.sort(key=_sort_key)
    return Dataset(root=root, records=records, kind='folders')


def split_by_bolt(records: list[ViewRecord], val_fraction: float = 0.2,
                  seed: int = 0) -> tuple[list[ViewRecord], list[ViewRecord]]:
    """Split views into train and validation sets by bolt, stratified by bolt label.

    Every bolt's views go to the same side. Within each bolt label, ``round(n * val_fraction)``
    bolts (at least one when there are two or more and ``val_fraction > 0``) go to validation.
    Deterministic for a given ``seed`` and set of records.

    Args:
        records: The views to split.
        val_fraction: Fraction of bolts for validation, in [0, 1).
        seed: Shuffle seed.

    Returns:
        ``(train, val)`` view lists, each in the input order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f'val_fraction must be in [0, 1), got {val_fraction}')
    groups = _group(records)
    by_label: dict[str, list[str]] = defaultdict(list)
    for bolt, views in groups.items():
        label = 'NG' if any(v.bolt_label == 'NG' for v in views) else 'OK'
        by_label[label].append(bolt)
    rng = np.random.default_rng(seed)
    val_bolts: set[str] = set()
    for label in sorted(by_label):
        bolts = sorted(by_label[label], key=lambda b: (not b.isdigit(), int(b) if b.isdigit()
                                                       else 0, b))
        n_val = int(round(len(bolts) * val_fraction))
        if val_fraction > 0 and len(bolts) >= 2:
            n_val = min(max(n_val, 1), len(bolts) - 1)
        order = rng.permutation(len(bolts))
        val_bolts.update(bolts[i] for i in order[:n_val])
    train = [r for r in records if r.bolt_id not in val_bolts]
    val = [r for r in records if r.bolt_id in val_bolts]
    return train, val


# OpenCV refuses to decode more pixels than this (CV_IO_MAX_IMAGE_PIXELS, 2^30 by default).
MAX_IMAGE_PIXELS = 1 << 30
_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _cv_reason(exc: Exception) -> str:
    """The assertion text of a cv2.error, one line."""
    text = ' '.join(str(exc).split())
    return text.split(') ', 1)[-1][:160] if text else type(exc).__name__


def check_image_size(header: bytes, path) -> None:
    """Refuse a PNG whose header declares more pixels than OpenCV decodes, before decoding.

    Raises:
        ImageError: One line with the declared size.
    """
    if len(header) >= 24 and header[:8] == _PNG_MAGIC and header[12:16] == b'IHDR':
        width, height = struct.unpack('>II', header[16:24])
        if width * height > MAX_IMAGE_PIXELS:
            raise ImageError(f'{path}: {width}x{height} image ({width * height / 1e9:.2f} '
                             f'Gpx) is above the {MAX_IMAGE_PIXELS / 1e9:.2f} Gpx an image may '
                             'have')


def read_image(path) -> np.ndarray:
    """Read an image file as BGR uint8 ``HxWx3``.

    Grey images are expanded to three channels, an alpha channel is dropped and 16-bit images
    are scaled to 8 bits, so every caller gets the same format.

    Raises:
        ImageError: The file is missing, unreadable or not a decodable image (names the file).
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageError(f'{path}: no such image file') from None
    except OSError as exc:
        raise ImageError(f'{path}: cannot read ({exc.strerror or exc})') from None
    if data.size == 0:
        raise ImageError(f'{path}: empty file, not an image')
    check_image_size(data[:32].tobytes(), path)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        # OpenCV asserts on what it refuses to decode (e.g. a size past its pixel limit).
        raise ImageError(f'{path}: cannot decode ({_cv_reason(exc)})') from None
    if image is None:
        raise ImageError(f'{path}: not a decodable image (corrupt or unsupported format)')
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f'{path}: unsupported pixel type {image.dtype}')
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.shape[2] != 3:
        raise ImageError(f'{path}: unsupported channel count {image.shape[2]}')
    return image
