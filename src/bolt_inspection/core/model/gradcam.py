"""Grad-CAM (Selvaraju et al. 2017) exactly as the paper's Eq. 2-4, batched, plus drawing helpers.

For class c and the feature maps ``A^k`` of the Grad-CAM layer (``block5_conv3`` for VGG16)::

    a_k^c = 1/Z sum_ij d y^c / d A^k_ij           (Eq. 2, global average pooling of gradients)
    L^c   = ReLU(sum_k a_k^c A^k)                 (Eq. 3-4)

then ``L^c`` is upsampled (bilinear) to the input size and divided by its maximum, per image, so
every heatmap is in [0, 1]; a map that is zero everywhere (no positive evidence) stays zero.

``y^c`` is the **pre-softmax score** (logit) of class c, as in the original Grad-CAM paper: the
softmax probability saturates (its gradient ``p(1-p)`` vanishes for confident views, which is
exactly when the map is wanted) and it couples the classes. The logits are taken cleanly: when
the model's last layer is a ``Dense`` with softmax (our models), the Grad-CAM graph outputs that
layer's *input* and applies its kernel and bias itself, so probabilities and logits come from one
forward pass. If the last layer is a separate softmax ``Activation``, its input is the logit. For
any other model the class probability is used (documented fallback, see :attr:`GradCAM.score`).

One call runs ONE forward pass (under one ``tf.GradientTape``) for the whole batch and returns
both the probabilities and the heatmaps: no second inference for the explanation.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from bolt_inspection.core.errors import ImageError, ModelError
from bolt_inspection.core.model.keras_backend import keras, tf


class GradCAM:
    """Batched Grad-CAM over a Keras model.

    Args:
        model: A functional Keras model with a softmax output.
        layer_name: The conv layer whose feature maps are explained.
        class_index: The class c whose score is differentiated (1 = 'NG').
        heatmap_hw: ``(h, w)`` the heatmaps are upsampled to; default the model input. For a
            model that starts at cached features (the tail of a network, see
            ``core.study.train.split_at``), the image size those features were computed from.

    Call with a float32 batch ``(N, h, w, 3)`` (as
    :func:`~bolt_inspection.core.vision.roi.prepare_batch`
    makes it) to get ``(probs (N, n_classes), heatmaps (N, h, w))``.
    """

    def __init__(self, model, layer_name: str = 'block5_conv3', class_index: int = 1,
                 heatmap_hw: tuple[int, int] | None = None):
        k = keras()
        self.model = model
        self.layer_name = layer_name
        self.class_index = int(class_index)
        try:
            target = model.get_layer(layer_name)
        except ValueError:
            raise ModelError(f'Grad-CAM layer {layer_name!r} not found in model '
                             f'{model.name}') from None
        if len(target.output.shape) != 4:
            raise ModelError(f'Grad-CAM layer {layer_name!r} does not output feature maps')
        #: The feature-map grid (h, w) the heatmaps are upsampled from.
        self.grid_hw = (int(target.output.shape[1]), int(target.output.shape[2]))
        last = model.layers[-1]
        self._dense = None
        activation = getattr(last, 'activation', None)
        if isinstance(last, k.layers.Dense) and activation is k.activations.softmax:
            self._dense = last
            head_output = last.input
            self.score = 'logit'
        elif (isinstance(last, k.layers.Activation)
              and getattr(last, 'activation', None) is k.activations.softmax):
            head_output = last.input
            self.score = 'logit'
        else:
            head_output = model.output
            self.score = 'probability'
        self._grad_model = k.Model(model.input, [target.output, head_output])
        input_shape = tuple(int(v) for v in model.input_shape[1:])
        self.input_hw = input_shape[:2]
        self._input_shape = input_shape
        self.heatmap_hw = tuple(int(v) for v in (heatmap_hw or self.input_hw))
        self._fn = tf().function(
            self._compute, input_signature=[tf().TensorSpec([None, *input_shape],
                                                            tf().float32)],
            reduce_retracing=True)

    def _compute(self, batch):
        t = tf()
        with t.GradientTape() as tape:
            conv, head = self._grad_model(batch, training=False)
            logits, probs = self._scores(head)
            # Views are independent (no batch statistics at inference), so the gradient of the
            # summed class scores gives each view's own d y^c / d A^k.
            score = t.reduce_sum(logits[:, self.class_index])
        grads = tape.gradient(score, conv)
        return probs, self._heatmaps(conv, grads)

    def _scores(self, head):
        """``(logits, probs)`` from the head output (see :attr:`score`); inside the tape."""
        t = tf()
        if self._dense is not None:
            logits = t.matmul(head, self._dense.kernel) + self._dense.bias
            return logits, t.nn.softmax(logits, axis=-1)
        if self.score == 'logit':
            return head, t.nn.softmax(head, axis=-1)
        return head, head

    def _heatmaps(self, conv, grads):
        """Eq. 2-4 from the feature maps and their gradients, upsampled and normalised."""
        t = tf()
        weights = t.reduce_mean(grads, axis=(1, 2))                      # Eq. 2: (N, K)
        cam = t.nn.relu(t.einsum('nijk,nk->nij', conv, weights))        # Eq. 3-4: (N, i, j)
        cam = t.image.resize(cam[..., None], self.heatmap_hw, method='bilinear')[..., 0]
        cam = t.where(t.math.is_finite(cam), cam, t.zeros_like(cam))
        cam = t.nn.relu(cam)
        peak = t.reduce_max(cam, axis=(1, 2), keepdims=True)
        return t.math.divide_no_nan(cam, t.where(peak > 1e-12, peak, t.zeros_like(peak)))

    def __call__(self, batch) -> tuple[np.ndarray, np.ndarray]:
        """Explain a batch.

        Args:
            batch: ``(N, h, w, 3)`` float RGB 0..255 at the model's input size (or the
                cached features a tail model takes).

        Returns:
            ``(probs, heatmaps)``: ``(N, n_classes)`` float32 softmax outputs and ``(N, h, w)``
            float32 heatmaps in [0, 1] (``heatmap_hw``).

        Raises:
            ImageError: The batch has the wrong shape.
        """
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1:] != self._input_shape:
            raise ImageError(f'Grad-CAM batch shape {batch.shape} does not match the model input '
                             f'(N, {", ".join(str(v) for v in self._input_shape)})')
        if batch.shape[0] == 0:
            n_out = int(self.model.output_shape[-1])
            return (np.zeros((0, n_out), np.float32),
                    np.zeros((0, *self.heatmap_hw), np.float32))
        probs, cams = self._fn(tf().constant(batch))
        return probs.numpy(), cams.numpy()


def overlay(image_bgr: np.ndarray, heatmap: np.ndarray | None, alpha: float = 0.4) -> np.ndarray:
    """Blend a heatmap over an image with OpenCV's JET colormap (red = high).

    Args:
        image_bgr: HxWx3 uint8 BGR (grayscale is converted).
        heatmap: 2-D array in [0, 1] of any size (resized to the image); ``None`` = no overlay.
        alpha: Weight of the colour map.

    Returns:
        HxWx3 uint8 BGR.
    """
    from bolt_inspection.core.vision.roi import as_bgr

    image = as_bgr(image_bgr, 'overlay image')
    if heatmap is None:
        return image.copy()
    heat = np.nan_to_num(np.asarray(heatmap, np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    if heat.ndim != 2:
        raise ImageError(f'heatmap must be 2-D, got shape {heat.shape}')
    heat = cv2.resize(np.clip(heat, 0.0, 1.0), (image.shape[1], image.shape[0]),
                      interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.uint8(np.round(heat * 255.0)), cv2.COLORMAP_JET)
    return cv2.addWeighted(image, 1.0 - alpha, colour, alpha, 0.0)


_OK_BGR = (40, 160, 40)
_NG_BGR = (30, 30, 210)
_GREY = (110, 110, 110)


def _put_text(img, text, org, scale, colour=(255, 255, 255), thickness=1):
    # A dark outline made of offset copies: a thicker stroke would also widen OpenCV's letter
    # advance and leave ghost characters at the end of the text.
    x, y = org
    for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1), (1, 1)):
        cv2.putText(img, text, (x + dx, y + dy), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                    thickness, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)


def mosaic(crops_bgr: Sequence[np.ndarray | None], heatmaps: Sequence[np.ndarray | None] | None,
           banner: str, ok: bool, labels: Sequence[str] | None = None,
           tile_size: tuple[int, int] | None = None) -> np.ndarray:
    """A 2x2 mosaic of views with Grad-CAM overlays under a verdict banner.

    Args:
        crops_bgr: Up to 4 BGR crops in camera order; ``None`` = missing view (grey tile).
        heatmaps: Matching heatmaps in [0, 1] (or ``None`` entries / ``None`` for none).
        banner: Banner text, e.g. ``'bolt 17: NG'``; the first line is drawn large, further
            lines (after ``'\\n'``, e.g. the reasons) small.
        ok: Green banner if True, red if False.
        labels: Per-view caption (e.g. ``'cam0 p_ng 0.03'``).
        tile_size: ``(w, h)`` of each tile; default: the first crop's aspect, 320 px high
            (at least 160 px wide).

    Returns:
        ``(banner_h + 2*tile_h, 2*tile_w, 3)`` uint8 BGR, C-contiguous (ready for a bgr8 Image).
    """
    crops = list(crops_bgr)[:4] + [None] * max(0, 4 - len(crops_bgr))
    heats = list(heatmaps or [])[:4]
    heats += [None] * (4 - len(heats))
    caps = list(labels or [])[:4]
    caps += [''] * (4 - len(caps))
    if tile_size is None:
        first = next((c for c in crops if isinstance(c, np.ndarray) and c.ndim >= 2
                      and c.size), None)
        tile_h = 320
        aspect = first.shape[1] / first.shape[0] if first is not None else 0.5
        tile_w = int(np.clip(round(tile_h * aspect), 160, 640))
    else:
        tile_w, tile_h = int(tile_size[0]), int(tile_size[1])
    tiles = []
    for crop, heat, cap in zip(crops, heats, caps, strict=True):
        if crop is None:
            tile = np.full((tile_h, tile_w, 3), _GREY, np.uint8)
            _put_text(tile, 'no view', (8, tile_h // 2), 0.6)
        else:
            try:
                tile = cv2.resize(overlay(crop, heat), (tile_w, tile_h))
            except ImageError:
                tile = np.full((tile_h, tile_w, 3), _GREY, np.uint8)
                _put_text(tile, 'bad image', (8, tile_h // 2), 0.6)
        if cap:
            _put_text(tile, cap, (6, tile_h - 10), 0.45)
        cv2.rectangle(tile, (0, 0), (tile_w - 1, tile_h - 1), (0, 0, 0), 1)
        tiles.append(tile)
    grid = np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])
    lines = [line for line in str(banner).split('\n') if line] or ['']
    big_h = max(40, tile_h // 6)
    small_h = 18
    banner_h = big_h + small_h * (len(lines) - 1) + 6
    bar = np.full((banner_h, grid.shape[1], 3), _OK_BGR if ok else _NG_BGR, np.uint8)
    y = 0
    for i, line in enumerate(lines):
        line_h = big_h if i == 0 else small_h
        scale = line_h / 32.0 if i == 0 else 0.42
        thickness = 2 if i == 0 else 1
        (text_w, _), _ = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        if text_w > grid.shape[1] - 12:
            scale *= (grid.shape[1] - 12) / max(text_w, 1)
        y += line_h
        _put_text(bar, line, (6, y - max(4, line_h // 5)), scale, thickness=thickness)
    return np.ascontiguousarray(np.vstack([bar, grid]))


def heatmap_peak(heat: np.ndarray) -> tuple[int, int] | None:
    """(row, col) of a 2-D heatmap's maximum; None when it has no peak (all zero or not finite).

    Bilinear upsampling clamps at the borders, so when the maximum is at a cell on the top or
    left edge of the Grad-CAM grid, the upsampled heatmap is flat from that cell's centre out to
    the image edge, and ``argmax`` (the first pixel of the flat stretch) sits on the edge, half a
    cell from where the model looked. The peak walks inward along the flat stretch to the cell
    centre (at most to the middle of the image). On the bottom and right edges the first pixel
    of the flat stretch already is its inner end.
    """
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f'heatmap must be 2-D, got shape {heat.shape}')
    if not np.isfinite(heat).all() or heat.max() <= 0:
        return None
    # Equal within float rounding counts as flat (resizers round the clamped stretch unevenly).
    flat = heat.max() * (1 - 1e-6)
    row, col = (int(v) for v in np.unravel_index(int(np.argmax(heat >= flat)), heat.shape))
    if row == 0:
        while row < (heat.shape[0] - 1) // 2 and heat[row + 1, col] >= flat:
            row += 1
    if col == 0:
        while col < (heat.shape[1] - 1) // 2 and heat[row, col + 1] >= flat:
            col += 1
    return row, col
