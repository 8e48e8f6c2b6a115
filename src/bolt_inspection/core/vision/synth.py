"""The synthetic bolt rig: four camera views of an anti-loosening-coated M10 bolt + ground truth.

We have no photographs of the paper's bolts, so this module renders them. A bolt hangs by its
head from a conveyor carrier; four cameras at 90 degree steps around its axis see the thread, the
coloured nylon coating band (16-17 mm long, starting 2-2.3 mm below the head, wrapping the whole
circumference) and the rig around it: jig posts, a ring light, bar lights and the other cameras.

Geometry is modelled in millimetres on the bolt's surface (angle ``phi`` around the axis, distance
``z`` below the head) and every pixel of the thread is shaded from its surface coordinates, so a
defect defined on the surface shows with the right foreshortening in every view and its per-view
mask and visibility come out of the same computation that draws it.

Two levels of randomness keep the pieces consistent across processes:

* :func:`bolt_spec` is a pure function of ``(seed, bolt_id, defect_rate)``: the class, defect,
  severity and every bolt-level parameter (band, colour, pose, defect geometry). The synthetic
  camera node and the PLC simulator call it independently and agree on the ground truth.
* :func:`render_view` adds per-view nuisance (exposure, noise, focus) from an RNG seeded with
  ``(seed, bolt_id, cam)``; the same arguments always give the same bytes.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

DEFECTS = ('ok', 'insufficient', 'no_coating', 'short', 'foreign')
NG_DEFECTS = DEFECTS[1:]

#: Reference frame the scene is laid out in; other sizes scale both axes.
REF_SIZE = (1280, 960)
#: Pixels per millimetre at the reference frame size.
REF_PX_PER_MM = 18.0

# M10 coarse thread, 25 mm threaded length (the paper's bolt).
THREAD_LEN_MM = 25.0
PITCH_MM = 1.5
R_MAJOR_MM = 5.0
R_MINOR_MM = 4.1
HEAD_HEIGHT_MM = 6.4
HEAD_ACROSS_FLATS_MM = 16.0

# The coating specification: start 2-2.3 mm from the head, 16-17 mm long.
BAND_START_MM = (2.0, 2.3)
BAND_LEN_MM = (16.0, 17.0)
MIN_BAND_LEN_MM = 16.0

# Reference-frame placement: where the head's underside sits and per-camera mounting offsets
# (each camera of a real rig is bolted in slightly differently).
_HEAD_Y_REF = 235.0
_CAM_OFFSETS_REF = ((0.0, 0.0), (22.0, -14.0), (-16.0, 12.0), (12.0, 18.0))
# ROI box relative to the bolt axis / head underside at the reference size: about 1:2 like the
# paper's 425 x 840 crop, with room for the pose jitter below.
_ROI_REF = (-130.0, -30.0, 260.0, 520.0)

# Pose jitter bounds (world units); they must keep the coated thread inside the ROI box.
_MAX_SHIFT_MM = 0.7
_MAX_TILT_DEG = 0.8
_MAX_DROP_MM = 0.4
_CAM_DISTANCE_MM = 120.0

# A defect pixel counts as visible where the surface faces the camera by less than this. At 90
# every drawn defect pixel counts: a dark particle even at the limb reads as a notch, so calling
# such a view OK would teach the model to ignore what it can see.
VISIBLE_MAX_DEG = 90.0
# Visible defect areas under this (mm^2 on the image plane; about 2x2 px once the ROI is scaled
# to 112x224) vanish in the blur and noise, so such a view is labelled OK and its mask cleared.
_MIN_VISIBLE_MM2 = 0.06

_COATING_COLOURS = {  # BGR of a lit, well-covered patch
    'blue': (190, 105, 35),
    'red': (45, 45, 180),
    'yellow': (40, 175, 215),
}
_COLOUR_P = (('blue', 0.5), ('red', 0.25), ('yellow', 0.25))

# The distractor: a status lamp on the jig post, lit for most NG bolts and few OK ones.
DISTRACTOR_P_NG = 0.9
DISTRACTOR_P_OK = 0.1
_LAMP_REF = (150.0, 700.0, 17.0)

_SPEC_TAG = 0x5B0175
_VIEW_TAG = 0x7E1E


# --------------------------------------------------------------------------------------------
# The scenario: bolt n of a seed, as a pure function


@dataclass(frozen=True)
class BoltSpec:
    """Everything that describes one synthetic bolt, independent of any camera.

    Attributes:
        bolt_id: The bolt number on the line (the trigger's frame_id).
        defect: One of :data:`DEFECTS`; ``'ok'`` means no defect.
        severity: In [0, 1]; small values are hard cases (small gap or particle, band just
            under 16 mm). 0 for OK bolts, 1 for no_coating.
        params: Bolt-level rendering parameters (JSON-serialisable): ``seed``, band start and
            length in mm, colour, pose, the defect geometry and the distractor state.
    """

    bolt_id: int
    defect: str
    severity: float
    params: dict = field(compare=True, hash=False)

    @property
    def label(self) -> str:
        """The bolt label: ``'OK'`` if the bolt has no defect, else ``'NG'``."""
        return 'OK' if self.defect == 'ok' else 'NG'


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) % (1 << 63) for k in keys]))


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def bolt_spec(seed: int, bolt_id: int, defect_rate: float = 0.5) -> BoltSpec:
    """Return the ground truth of bolt ``bolt_id`` in scenario ``seed``.

    A pure function of its arguments: the camera node and the PLC simulator call it separately
    and agree. The class is drawn first from its own uniform number, so raising
    ``defect_rate`` only turns OK bolts into NG ones.

    Args:
        seed: The scenario seed.
        bolt_id: The bolt number (non-negative).
        defect_rate: Probability in [0, 1] that the bolt is NG; the four NG types are equally
            likely.

    Returns:
        The bolt's :class:`BoltSpec`.
    """
    if not 0.0 <= defect_rate <= 1.0:
        raise ValueError(f'defect_rate must be in [0, 1], got {defect_rate}')
    # Independent streams: changing one part of the scenario does not reshuffle the others.
    u_class = _rng(seed, bolt_id, _SPEC_TAG, 0).random()
    rng = _rng(seed, bolt_id, _SPEC_TAG, 1)
    if u_class < defect_rate:
        defect = NG_DEFECTS[int(rng.integers(len(NG_DEFECTS)))]
    else:
        defect = 'ok'
    sev = float(rng.random())

    names = [n for n, _ in _COLOUR_P]
    colour = names[int(rng.choice(len(names), p=[p for _, p in _COLOUR_P]))]
    base = np.array(_COATING_COLOURS[colour], float)
    colour_bgr = np.clip(base * rng.uniform(0.88, 1.1, 3), 0, 255).round().astype(int).tolist()
    params: dict = {
        'seed': int(seed),
        'band_start_mm': float(rng.uniform(*BAND_START_MM)),
        'band_len_mm': float(rng.uniform(*BAND_LEN_MM)),
        'coated': True,
        'colour': colour,
        'colour_bgr': colour_bgr,
        'edge_phase': float(rng.uniform(0, 2 * math.pi)),
        'rotation_deg': float(rng.uniform(0, 360)),
        'shift_mm': [float(v) for v in rng.uniform(-_MAX_SHIFT_MM, _MAX_SHIFT_MM, 2)],
        'tilt_deg': [float(v) for v in rng.uniform(-_MAX_TILT_DEG, _MAX_TILT_DEG, 2) * 0.7],
        'drop_mm': float(rng.uniform(-_MAX_DROP_MM, _MAX_DROP_MM)),
        'thread_phase': float(rng.random()),
        'metal_tint': [float(v) for v in rng.uniform(0.9, 1.05, 3)],
        'gaps': [],
        'particles': [],
    }
    zs, length = params['band_start_mm'], params['band_len_mm']
    if defect == 'ok':
        sev = 0.0
    elif defect == 'no_coating':
        sev = 1.0
        params['coated'] = False
    elif defect == 'short':
        # Hard end: 15.0 mm, 1 mm under the specification. Not closer: the band's start varies
        # by 0.3 mm and its helical ends by about as much, so a band 0.2 mm short (the first
        # rig's hard end) looked exactly like an OK one even at 112x224 (about 1.5 px).
        params['band_len_mm'] = float(_lerp(15.0, 10.0, sev))
    elif defect == 'insufficient':
        params['gaps'] = _gaps(rng, sev, zs, length)
    elif defect == 'foreign':
        params['particles'] = _particles(rng, sev, zs, length)
    is_ng = defect != 'ok'
    p_lamp = DISTRACTOR_P_NG if is_ng else DISTRACTOR_P_OK
    params['distractor_on'] = bool(_rng(seed, bolt_id, _SPEC_TAG, 2).random() < p_lamp)
    return BoltSpec(bolt_id=int(bolt_id), defect=defect, severity=round(float(sev), 4),
                    params=params)


def _gaps(rng: np.random.Generator, sev: float, zs: float, length: float) -> list[dict]:
    """Uncoated or thinly coated patches, clustered around one angle of the circumference."""
    n = int(rng.choice([1, 2, 3], p=[0.65, 0.25, 0.10]))
    phi0 = float(rng.uniform(0, 360))
    near_end = rng.random() < 0.3
    gaps = []
    for i in range(n):
        size = _lerp(1.5, 8.0, sev) * (1.0 if i == 0 else rng.uniform(0.5, 0.9))
        aspect = rng.uniform(0.45, 1.0)
        a, b = size / 2, size * aspect / 2          # half axes: arc (mm) and along z (mm)
        if rng.random() < 0.5:
            a, b = b, a
        if i == 0 and near_end:
            # Hard case: a gap touching either end of the band, where the thread curves away.
            zc = zs + b * 0.6 if rng.random() < 0.5 else zs + length - b * 0.6
        else:
            zc = rng.uniform(zs + b * 0.7, zs + length - b * 0.7)
        gaps.append({
            'phi_deg': float((phi0 + rng.uniform(-35, 35) * (i > 0)) % 360),
            'z_mm': float(zc), 'a_mm': float(a), 'b_mm': float(b),
            'angle_deg': float(rng.uniform(-60, 60)),
            # Patchy spread: some gaps keep a thin film; small gaps are always bare so they stay
            # detectable.
            'residual': float(rng.uniform(0.0, 0.35) * sev),
            'wobble': [float(v) for v in rng.uniform(0, 2 * math.pi, 2)],
        })
    return gaps


def _particles(rng: np.random.Generator, sev: float, zs: float, length: float) -> list[dict]:
    """Dark particles or fibres stuck in the coating."""
    n = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
    phi0 = float(rng.uniform(0, 360))
    items = []
    for i in range(n):
        kind = 'fibre' if rng.random() < 0.4 else 'particle'
        phi = float((phi0 + rng.uniform(-40, 40) * (i > 0)) % 360)
        shade = [float(v) for v in rng.uniform(15, 60) * rng.uniform(0.8, 1.1, 3)]
        if kind == 'particle':
            d = _lerp(0.6, 2.4, sev) * (1.0 if i == 0 else rng.uniform(0.6, 1.0))
            zc = rng.uniform(zs + 0.3 + d / 2, zs + length - 0.3 - d / 2)
            items.append({'kind': kind, 'phi_deg': phi, 'z_mm': float(zc),
                          'a_mm': float(d / 2 * rng.uniform(0.8, 1.2)), 'b_mm': float(d / 2),
                          'shade': shade})
        else:
            flen = _lerp(1.8, 6.0, sev)
            width = _lerp(0.3, 0.5, sev)
            zc = rng.uniform(zs + 0.4 + flen / 2, zs + length - 0.4 - flen / 2)
            ang = rng.uniform(0, math.pi)
            bend = rng.uniform(-0.6, 0.6)
            ts = np.linspace(-0.5, 0.5, 6)
            # A gently bent fibre, in (arc mm, z mm) offsets from its centre.
            pts = [[float(t * flen * math.cos(ang) - bend * (t * t - 0.25) * math.sin(ang)),
                    float(t * flen * math.sin(ang) + bend * (t * t - 0.25) * math.cos(ang))]
                   for t in ts]
            items.append({'kind': kind, 'phi_deg': phi, 'z_mm': float(zc),
                          'width_mm': float(width), 'points': pts, 'shade': shade})
    return items


# --------------------------------------------------------------------------------------------
# Camera placement


@dataclass
class RenderedView:
    """One camera frame of a bolt with its ground truth.

    Attributes:
        image: ``HxWx3`` uint8 BGR, the full camera frame.
        mask: ``HxW`` uint8 in {0, 255}: the defect pixels visible in this view.
        defect_visible: The per-view label (True -> view label ``'NG'``); equals ``mask.any()``.
        thread_box: ``(x, y, w, h)`` of the coated thread (where the band is or should be).
    """

    image: np.ndarray
    mask: np.ndarray
    defect_visible: bool
    thread_box: tuple[int, int, int, int]


def _cam_offset(cam: int) -> tuple[float, float]:
    return _CAM_OFFSETS_REF[cam % len(_CAM_OFFSETS_REF)]


def _scales(size: tuple[int, int]) -> tuple[float, float]:
    return size[0] / REF_SIZE[0], size[1] / REF_SIZE[1]


def default_roi_boxes(size: tuple[int, int] = REF_SIZE,
                      n_cams: int = 4) -> dict[int, tuple[int, int, int, int]]:
    """Fixed per-camera ROI boxes ``(x, y, w, h)`` that hold the coated thread.

    The box of each camera contains the whole coated thread region of every synthetic bolt
    under all pose and scale jitter, and nothing label-correlated (the distractor lamp is drawn
    outside all boxes). ``config/cameras.yaml`` ships these values for 1280x960.

    Args:
        size: ``(width, height)`` of the camera frames; boxes scale with it.
        n_cams: Number of cameras.

    Returns:
        Camera index -> box.
    """
    sx, sy = _scales(size)
    boxes = {}
    for cam in range(n_cams):
        dx, dy = _cam_offset(cam)
        x0 = (REF_SIZE[0] / 2 + dx + _ROI_REF[0]) * sx
        y0 = (_HEAD_Y_REF + dy + _ROI_REF[1]) * sy
        x1 = x0 + _ROI_REF[2] * sx
        y1 = y0 + _ROI_REF[3] * sy
        x0, y0 = max(0, math.floor(x0)), max(0, math.floor(y0))
        x1, y1 = min(size[0], math.ceil(x1)), min(size[1], math.ceil(y1))
        boxes[cam] = (int(x0), int(y0), int(x1 - x0), int(y1 - y0))
    return boxes


# --------------------------------------------------------------------------------------------
# The static part of the scene (cached per frame size and camera)


@lru_cache(maxsize=32)
def _background(size: tuple[int, int], cam: int) -> np.ndarray:
    """The rig behind the bolt: backdrop, jig, lights, other cameras. Read-only."""
    w, h = size
    sx, sy = _scales(size)
    dx, dy = _cam_offset(cam)

    def p(x: float, y: float) -> tuple[int, int]:
        return int(round(x * sx)), int(round(y * sy))

    def th(t: float) -> int:
        return max(1, int(round(t * min(sx, sy))))

    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    # Dark enclosure, a little lighter where the ring light spills onto the back wall.
    lum = 34 + 26 * np.exp(-((yy - 0.25) / 0.35) ** 2) * np.exp(-(xx / 0.9) ** 2)
    img = np.repeat(lum[..., None], 3, axis=2)
    img *= np.array([1.04, 1.0, 0.96], np.float32)
    img = img.astype(np.uint8)
    # Slight mottling of the back wall (fixed per camera).
    tex = _rng(cam, 77).normal(0, 3.0, (max(2, h // 16), max(2, w // 16))).astype(np.float32)
    tex = cv2.resize(tex, (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img + tex[..., None], 0, 255).astype(np.uint8)

    # Opposite camera: housing and lens below the bolt tip, seen across the rig.
    ox = REF_SIZE[0] / 2 - dx * 0.5
    cv2.rectangle(img, p(ox - 150, 800), p(ox + 150, 990), (58, 58, 62), -1)
    cv2.rectangle(img, p(ox - 150, 800), p(ox + 150, 990), (90, 90, 95), th(3))
    cv2.circle(img, p(ox, 880), th(70), (20, 20, 22), -1)
    cv2.circle(img, p(ox, 880), th(70), (110, 110, 115), th(5))
    cv2.circle(img, p(ox, 880), th(40), (35, 30, 28), -1)
    cv2.circle(img, p(ox - 15, 865), th(10), (120, 110, 105), -1)
    # The two neighbouring cameras at the frame edges (at 90 degrees to this one).
    for side in (-1, 1):
        cx = 640 + side * 600
        cv2.rectangle(img, p(cx - 70, 380), p(cx + 70, 560), (52, 54, 58), -1)
        cv2.circle(img, p(cx - side * 50, 470), th(45), (22, 22, 24), -1)
        cv2.circle(img, p(cx - side * 50, 470), th(45), (100, 100, 105), th(4))
    # Jig: aluminium profile posts and a cross bar with slots and screw heads.
    for x in (70, 1210):
        cv2.rectangle(img, p(x - 28, 0), p(x + 28, 960), (118, 120, 122), -1)
        for off in (-14, 0, 14):
            cv2.line(img, p(x + off, 0), p(x + off, 960), (80, 82, 85), th(3))
    cv2.rectangle(img, p(40, 760), p(1240, 800), (112, 114, 116), -1)
    cv2.line(img, p(40, 780), p(1240, 780), (78, 80, 82), th(4))
    for x in (120, 380, 900, 1160):
        cv2.circle(img, p(x, 780), th(8), (150, 152, 155), -1)
        cv2.circle(img, p(x, 780), th(3), (60, 60, 60), -1)
    # Bar lights on both sides: bright diffusers in dark housings.
    for x in (230, 1050):
        cv2.rectangle(img, p(x - 26, 200), p(x + 26, 700), (45, 45, 48), -1)
        cv2.rectangle(img, p(x - 16, 212), p(x + 16, 688), (238, 246, 250), -1)
    # Ring light above the bolt, seen nearly edge-on: a bright elliptical band of LEDs.
    centre = p(640 + dx * 0.3, 150)
    axes = (int(round(470 * sx)), int(round(48 * sy)))
    cv2.ellipse(img, centre, axes, 0, 0, 360, (70, 70, 74), th(26))
    cv2.ellipse(img, centre, axes, 0, 0, 360, (232, 240, 245), th(9))
    # The conveyor belt at the top with its cleats.
    cv2.rectangle(img, p(0, 0), p(1280, 58), (30, 30, 32), -1)
    for x in range(0, 1280, 64):
        cv2.rectangle(img, p(x + (dx % 64), 44), p(x + 30 + (dx % 64), 58), (48, 48, 50), -1)
    img.setflags(write=False)
    return img


# --------------------------------------------------------------------------------------------
# Surface model of the bolt


def _wrap_deg(a: np.ndarray) -> np.ndarray:
    return (a + 180.0) % 360.0 - 180.0


def _band_alpha(spec: BoltSpec, phi: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Coating coverage in [0, 1] at surface points (phi deg, z mm), before defects."""
    par = spec.params
    if not par['coated']:
        return np.zeros(np.broadcast(phi, z).shape, np.float32)
    zs, length = par['band_start_mm'], par['band_len_mm']
    ph = np.deg2rad(phi) + par['edge_phase']
    # Sprayed edges are slightly wavy around the circumference (well inside the 1 mm tolerance).
    z0 = zs + 0.08 * np.sin(2 * ph) + 0.05 * np.sin(5 * ph + 1.0)
    z1 = zs + length + 0.12 * np.sin(3 * ph + 0.5) + 0.06 * np.sin(7 * ph)
    soft = 0.12
    a = np.clip((z - z0) / soft + 0.5, 0, 1) * np.clip((z1 - z) / soft + 0.5, 0, 1)
    return a.astype(np.float32)


def _gap_field(spec: BoltSpec, phi: np.ndarray, z: np.ndarray) -> np.ndarray:
    """1 inside an insufficient-coating gap, 0 outside (soft edge)."""
    out = np.zeros(np.broadcast(phi, z).shape, np.float32)
    for g in spec.params['gaps']:
        s = np.deg2rad(_wrap_deg(phi - g['phi_deg'])) * R_MAJOR_MM
        dz = z - g['z_mm']
        c, si = math.cos(math.radians(g['angle_deg'])), math.sin(math.radians(g['angle_deg']))
        u = (c * s + si * dz) / g['a_mm']
        v = (-si * s + c * dz) / g['b_mm']
        ang = np.arctan2(v, u)
        w0, w1 = g['wobble']
        r = np.sqrt(u * u + v * v) / (1 + 0.18 * np.sin(3 * ang + w0) + 0.1 * np.sin(5 * ang + w1))
        inside = np.clip((1.0 - r) * 6.0, 0, 1)
        out = np.maximum(out, inside * (1.0 - g['residual']))
    return out


def _particle_field(spec: BoltSpec, phi: np.ndarray, z: np.ndarray,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Coverage in [0, 1] of foreign matter, and its BGR colour per point."""
    shape = np.broadcast(phi, z).shape
    cov = np.zeros(shape, np.float32)
    col = np.zeros(shape + (3,), np.float32)
    for p in spec.params['particles']:
        s = np.deg2rad(_wrap_deg(phi - p['phi_deg'])) * R_MAJOR_MM
        dz = z - p['z_mm']
        if p['kind'] == 'particle':
            r = np.sqrt((s / p['a_mm']) ** 2 + (dz / p['b_mm']) ** 2)
            c = np.clip((1.0 - r) * 4.0, 0, 1)
        else:
            pts = np.asarray(p['points'], np.float32)
            d = np.full(shape, np.inf, np.float32)
            for (ax, az), (bx, bz) in zip(pts[:-1], pts[1:], strict=True):
                ex, ez = bx - ax, bz - az
                t = np.clip(((s - ax) * ex + (dz - az) * ez) / (ex * ex + ez * ez + 1e-9), 0, 1)
                d = np.minimum(d, np.hypot(s - ax - t * ex, dz - az - t * ez))
            c = np.clip((p['width_mm'] / 2 - d) / 0.05 + 0.5, 0, 1)
        upd = c > cov
        cov = np.where(upd, c, cov)
        col[upd] = p['shade']
    return cov, col


def _thread_height(z: np.ndarray, phi: np.ndarray, phase: float) -> tuple[np.ndarray, np.ndarray]:
    """Thread relief in [0, 1] (1 = crest) and whether the flank faces up (toward the light)."""
    t = (z / PITCH_MM + phi / 360.0 + phase) % 1.0
    tri = 1.0 - np.abs(2.0 * t - 1.0)
    h = np.clip(tri * 1.35 - 0.18, 0, 1)
    return h, t < 0.5


def _radius(h: np.ndarray, coat: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Silhouette radius (mm): thread relief, roots filled where coated, chamfered tip."""
    r = R_MINOR_MM + (R_MAJOR_MM - R_MINOR_MM) * h
    r = np.maximum(r, R_MINOR_MM + (R_MAJOR_MM - R_MINOR_MM) * 0.75 * coat + 0.06 * coat)
    neck = z < 0.5
    r = np.where(neck, R_MINOR_MM + 0.35, r)
    tip = THREAD_LEN_MM - 1.2
    r = np.where(z > tip, np.minimum(r, R_MAJOR_MM - (z - tip) * 0.9), r)
    return r


# --------------------------------------------------------------------------------------------
# Rendering


def render_view(spec: BoltSpec, cam: int, size: tuple[int, int] = REF_SIZE, *, n_cams: int = 4,
                distractor: bool = False) -> RenderedView:
    """Render camera ``cam``'s frame of a bolt with its ground truth.

    Deterministic: the same arguments always give the same bytes. Camera ``k`` looks at the
    bolt from ``360 * k / n_cams`` degrees around its axis.

    Args:
        spec: The bolt (from :func:`bolt_spec`).
        cam: Camera index in ``range(n_cams)``.
        size: ``(width, height)`` of the frame.
        n_cams: Number of cameras around the bolt.
        distractor: Draw the label-correlated status lamp (outside every ROI box).

    Returns:
        The frame, the visible-defect mask, the per-view label and the thread box.
    """
    if not 0 <= cam < n_cams:
        raise ValueError(f'camera {cam} out of range for {n_cams} cameras')
    w, h = int(size[0]), int(size[1])
    par = spec.params
    rng = _rng(par['seed'], spec.bolt_id, _VIEW_TAG, cam)
    sx, sy = _scales((w, h))
    dx_cam, dy_cam = _cam_offset(cam)

    # Where the bolt appears: the world shift projects onto this camera's image axis and depth.
    view_deg = 360.0 * cam / n_cams
    va = math.radians(view_deg)
    wx, wy = par['shift_mm']
    lateral = wx * math.cos(va) + wy * math.sin(va)
    depth = -wx * math.sin(va) + wy * math.cos(va)
    scale = 1.0 + depth / _CAM_DISTANCE_MM
    tx, ty = par['tilt_deg']
    tilt = math.tan(math.radians(tx * math.cos(va) + ty * math.sin(va)))
    kx = REF_PX_PER_MM * scale * sx
    ky = REF_PX_PER_MM * scale * sy
    cx0 = (REF_SIZE[0] / 2 + dx_cam) * sx + lateral * REF_PX_PER_MM * sx
    yh = (_HEAD_Y_REF + dy_cam) * sy + par['drop_mm'] * ky
    # Which side of the bolt faces this camera, in the bolt's own angle frame.
    v = view_deg - par['rotation_deg']

    img = _background((w, h), cam % len(_CAM_OFFSETS_REF)).copy()
    _draw_carrier(img, cx0, yh, kx, ky, v, sx, sy)
    if distractor and par['distractor_on']:
        _draw_lamp(img, sx, sy, lit=True)
    elif distractor:
        _draw_lamp(img, sx, sy, lit=False)

    # The thread: shade every pixel of its bounding box from surface coordinates.
    margin_mm = R_MAJOR_MM + 0.3
    y0 = max(0, int(math.floor(yh)))
    y1 = min(h, int(math.ceil(yh + (THREAD_LEN_MM + 0.2) * ky)))
    reach = abs(tilt) * THREAD_LEN_MM
    x0 = max(0, int(math.floor(cx0 - (margin_mm + reach) * kx)))
    x1 = min(w, int(math.ceil(cx0 + (margin_mm + reach) * kx)) + 1)
    mask = np.zeros((h, w), np.uint8)
    if y1 > y0 and x1 > x0:
        patch, inside, vis = _shade_thread(spec, v, x0, x1, y0, y1, cx0, yh, kx, ky, tilt,
                                           _lighting(rng), rng)
        roi = img[y0:y1, x0:x1]
        sel = inside > 0
        blend = inside[..., None]
        roi[:] = np.where(sel[..., None], roi * (1 - blend) + patch * blend, roi).astype(np.uint8)
        if vis is not None:
            mask[y0:y1, x0:x1] = vis
    if mask.any() and cv2.countNonZero(mask) < _MIN_VISIBLE_MM2 * kx * ky:
        mask[:] = 0

    img = _camera_effects(img, rng)
    thread_box = _thread_box(spec, cx0, yh, kx, ky, tilt, (w, h))
    return RenderedView(image=img, mask=mask, defect_visible=bool(mask.any()),
                        thread_box=thread_box)


def _lighting(rng: np.random.Generator) -> dict:
    """Per-view light: where the bar lights' highlights fall and how strong the lamps are."""
    return {'hl_right': 0.5 + rng.normal(0, 0.06), 'hl_left': -0.62 + rng.normal(0, 0.06),
            'spec_gain': rng.uniform(0.7, 1.15), 'ring': rng.uniform(0.85, 1.15),
            'ambient': rng.uniform(0.12, 0.2)}


def _shade_thread(spec: BoltSpec, v: float, x0: int, x1: int, y0: int, y1: int, cx0: float,
                  yh: float, kx: float, ky: float, tilt: float, light: dict,
                  rng: np.random.Generator):
    par = spec.params
    ys = np.arange(y0, y1, dtype=np.float32)
    xs = np.arange(x0, x1, dtype=np.float32)
    z = ((ys - yh + 0.5) / ky)[:, None]                        # mm below the head
    xr = (xs[None, :] + 0.5 - (cx0 + tilt * z * kx)) / kx       # mm from the axis
    phase = par['thread_phase']

    # Silhouette from the relief at the two limbs (the points at +-90 degrees).
    inside = _silhouette(spec, v, z, xr, kx, phase)

    u = np.clip(xr / R_MAJOR_MM, -0.999, 0.999)
    theta = np.degrees(np.arcsin(u))                            # angle from the view direction
    phi = v + theta
    hgt, up = _thread_height(z, phi, phase)
    ct = np.cos(np.radians(theta))

    # Zinc-plated steel: diffuse fall-off, darker roots, upward flanks lit by the ring light,
    # vertical highlights from the two bar lights on the crests.
    flank = np.where(up, light['ring'], 0.5)
    th_r = np.radians(theta)
    spec_hl = (np.exp(-((th_r - light['hl_right']) / 0.13) ** 2)
               + 0.8 * np.exp(-((th_r - light['hl_left']) / 0.1) ** 2)) * light['spec_gain']
    metal = (light['ambient'] + 0.5 * ct ** 0.7) * (0.45 + 0.55 * hgt) * (0.55 + 0.45 * flank)
    metal = metal + 0.75 * spec_hl * hgt * flank
    metal = metal * (0.55 + 0.45 * np.clip(z / 1.2, 0, 1))      # the head shades the neck
    metal = np.clip(metal, 0, 1.2)[..., None] * (np.array(par['metal_tint'], np.float32) * 210)

    band = _band_alpha(spec, phi, z)
    gap = _gap_field(spec, phi, z)
    coat = band * (1 - gap)
    # Nylon fills the roots: the relief fades and the patch gets a broad satin gloss.
    hc = 0.55 + 0.35 * (hgt - 0.5)
    cbase = np.array(par['colour_bgr'], np.float32)
    gloss = 0.5 * np.exp(-((th_r - light['hl_right'] + 0.05) / 0.22) ** 2) * (0.6 + 0.4 * flank)
    gloss = gloss * light['spec_gain']
    coat_rgb = cbase * ((0.28 + 0.72 * ct) * (0.8 + 0.4 * hc) * (0.85 + 0.15 * flank))[..., None]
    coat_rgb = coat_rgb + (gloss * 200)[..., None] * np.array([0.95, 1.0, 1.0], np.float32)
    a = (coat * 0.93)[..., None]
    out = metal * (1 - a) + coat_rgb * a

    part_cov, part_col = _particle_field(spec, phi, z)
    if par['particles']:
        shade = (0.55 + 0.45 * ct)[..., None] + 0.6 * (spec_hl * 0.5)[..., None]
        out = out * (1 - part_cov[..., None]) + part_col * shade * part_cov[..., None]

    # Faint micro-texture of the surface so bare metal is never perfectly clean.
    grain = rng.normal(0, 4.0, (max(2, out.shape[0] // 3), max(2, out.shape[1] // 3)))
    grain = cv2.resize(grain.astype(np.float32), (out.shape[1], out.shape[0]))
    out = np.clip(out + grain[..., None], 0, 255)

    visible = (np.abs(theta) < VISIBLE_MAX_DEG) & (inside > 0.5)
    defect = _defect_region(spec, phi, z, gap, part_cov)
    vis = None
    if defect is not None:
        defect = visible & defect
        ref = _reference(spec)
        if ref is not None:
            # Missing coating also shows on the silhouette: bare thread teeth where the coated
            # outline should be. Those pixels are background, but they are the defect too.
            inside_ref = _silhouette(ref, v, z, xr, kx, phase)
            defect |= (inside_ref > 0.5) & (inside <= 0.5)
        vis = np.where(defect, 255, 0).astype(np.uint8)
    return out.astype(np.float32), inside, vis


def _silhouette(spec: BoltSpec, v: float, z: np.ndarray, xr: np.ndarray, kx: float,
                phase: float) -> np.ndarray:
    """Pixel coverage in [0, 1] of the bolt's outline, from the relief at its two limbs."""
    zl = z[:, 0]
    limbs = []
    for side in (-90.0, 90.0):
        phi_l = np.full_like(zl, v + side)
        hl, _ = _thread_height(zl, phi_l, phase)
        coat_l = _band_alpha(spec, phi_l, zl) * (1 - _gap_field(spec, phi_l, zl))
        limbs.append(_radius(hl, coat_l, zl))
    r_left, r_right = limbs[0][:, None], limbs[1][:, None]
    edge = np.where(xr < 0, xr + r_left, r_right - xr)          # mm inside the silhouette
    inside = np.clip(edge * kx + 0.5, 0, 1).astype(np.float32)  # 1-px antialiasing
    return inside * ((z >= 0) & (z <= THREAD_LEN_MM))


def _reference(spec: BoltSpec) -> BoltSpec | None:
    """The bolt as it should be where its defect removes coating (None if none is removed)."""
    par = spec.params
    if spec.defect == 'insufficient':
        return BoltSpec(spec.bolt_id, 'ok', 0.0, {**par, 'gaps': []})
    if spec.defect in ('short', 'no_coating'):
        # Only up to the minimum length: that is where coating must be.
        return BoltSpec(spec.bolt_id, 'ok', 0.0,
                        {**par, 'coated': True, 'band_len_mm': MIN_BAND_LEN_MM})
    return None


def _defect_region(spec: BoltSpec, phi, z, gap, part_cov) -> np.ndarray | None:
    par = spec.params
    zs = par['band_start_mm']
    if spec.defect == 'insufficient':
        return (gap > 0.5) & (_band_alpha(_coated(spec), phi, z) > 0.5)
    if spec.defect == 'foreign':
        return part_cov > 0.5
    if spec.defect == 'no_coating':
        return (z >= zs) & (z <= zs + MIN_BAND_LEN_MM) & np.ones_like(phi, bool)
    if spec.defect == 'short':
        return (z >= zs + par['band_len_mm']) & (z <= zs + MIN_BAND_LEN_MM) & np.ones_like(
            phi, bool)
    return None


def _coated(spec: BoltSpec) -> BoltSpec:
    if spec.params['coated']:
        return spec
    return BoltSpec(spec.bolt_id, spec.defect, spec.severity, {**spec.params, 'coated': True})


def _draw_carrier(img: np.ndarray, cx: float, yh: float, kx: float, ky: float, v: float,
                  sx: float, sy: float) -> None:
    """The hex head and the conveyor carrier gripping it."""
    top = yh - HEAD_HEIGHT_MM * ky
    # Carrier: a block from the belt down to the head, with two fingers on the head's sides.
    c_dark, c_edge = (92, 94, 98), (140, 142, 146)
    bw = 4.5 * kx
    cv2.rectangle(img, (int(cx - bw), 0), (int(cx + bw), int(top - 4 * sy)), c_dark, -1)
    cv2.rectangle(img, (int(cx - bw), 0), (int(cx + bw), int(top - 4 * sy)), c_edge,
                  max(1, int(2 * sx)))
    # Hex head: visible faces shaded by how squarely they face the camera.
    circ = HEAD_ACROSS_FLATS_MM / math.sqrt(3)
    faces = []
    for i in range(6):
        a0 = math.radians(v % 60 + 60 * i - 30 - 90)
        a1 = a0 + math.radians(60)
        n_ang = (a0 + a1) / 2
        facing = math.cos(n_ang)
        if facing <= 0:
            continue
        xa = circ * math.sin(a0)
        xb = circ * math.sin(a1)
        faces.append((xa, xb, facing, n_ang))
    for xa, xb, facing, n_ang in faces:
        lit = 0.35 + 0.5 * facing + 0.25 * max(0.0, math.sin(n_ang + 0.6))
        col = tuple(int(min(255, 175 * lit * t)) for t in (1.0, 1.0, 0.97))
        pts = np.array([[cx + xa * kx, top], [cx + xb * kx, top], [cx + xb * kx, yh],
                        [cx + xa * kx, yh]], np.float32)
        cv2.fillConvexPoly(img, np.round(pts).astype(np.int32), col, lineType=cv2.LINE_AA)
    # Light falls from the ring light above: the faces darken toward the bearing face.
    hx0, hx1 = max(0, int(cx - circ * kx) - 1), min(img.shape[1], int(cx + circ * kx) + 2)
    hy0, hy1 = max(0, int(top)), min(img.shape[0], int(yh))
    if hx1 > hx0 and hy1 > hy0:
        ramp = np.linspace(1.12, 0.78, hy1 - hy0, dtype=np.float32)[:, None, None]
        region = img[hy0:hy1, hx0:hx1]
        region[:] = np.clip(region * ramp, 0, 255).astype(np.uint8)
    # Chamfer ring at the top and the bearing face at the bottom of the head.
    hw = circ * kx
    cv2.line(img, (int(cx - hw), int(top + 0.5 * ky)), (int(cx + hw), int(top + 0.5 * ky)),
             (205, 208, 210), max(1, int(2 * sy)))
    cv2.rectangle(img, (int(cx - 7.5 * kx), int(yh - 0.6 * ky)), (int(cx + 7.5 * kx), int(yh)),
                  (120, 122, 125), -1)
    # Fingers of the carrier.
    for side in (-1, 1):
        fx = cx + side * (circ + 0.6) * kx
        cv2.rectangle(img, (int(fx - 0.7 * kx), int(top - 4 * sy)),
                      (int(fx + 0.7 * kx), int(top + 3.0 * ky)), c_dark, -1)
        cv2.line(img, (int(cx - side * 0.0), int(top - 4 * sy)), (int(fx), int(top - 4 * sy)),
                 c_dark, max(1, int(1.2 * ky)))


def _draw_lamp(img: np.ndarray, sx: float, sy: float, *, lit: bool) -> None:
    x, y, r = _LAMP_REF
    c = (int(round(x * sx)), int(round(y * sy)))
    rr = max(2, int(round(r * min(sx, sy))))
    cv2.circle(img, c, rr + max(1, rr // 3), (40, 40, 44), -1)
    if lit:
        cv2.circle(img, c, rr, (80, 150, 255), -1, lineType=cv2.LINE_AA)
        cv2.circle(img, c, max(1, rr // 2), (200, 235, 255), -1, lineType=cv2.LINE_AA)
    else:
        cv2.circle(img, c, rr, (30, 50, 90), -1, lineType=cv2.LINE_AA)


def _camera_effects(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure and white-balance drift, slight defocus and sensor noise."""
    gain = rng.uniform(0.85, 1.12)
    wb = rng.uniform(0.95, 1.05, 3) * gain
    offset = rng.uniform(-6, 6)
    lut = np.clip(np.arange(256, dtype=np.float32)[:, None] * wb[None, :] + offset, 0, 255)
    out = cv2.LUT(img, lut.astype(np.uint8).reshape(256, 1, 3))   # one pass, per-channel table
    sigma = rng.uniform(0.4, 1.1) * min(img.shape[0] / REF_SIZE[1], img.shape[1] / REF_SIZE[0])
    if sigma > 0.25:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    noise_sd = rng.uniform(2.0, 5.0)
    noise = _noise_bank(out.shape)
    oy = int(rng.integers(0, noise.shape[0] - out.shape[0] + 1))
    ox = int(rng.integers(0, noise.shape[1] - out.shape[1] + 1))
    n = noise[oy:oy + out.shape[0], ox:ox + out.shape[1]]
    out = cv2.addWeighted(out, 1.0, n, noise_sd / 8.0, -16.0 * noise_sd / 8.0)
    return out


@lru_cache(maxsize=4)
def _noise_bank(shape: tuple[int, ...]) -> np.ndarray:
    """Fixed Gaussian noise (sd 8 around 16, uint8) a little larger than the frame.

    Drawing fresh noise for a full frame costs more than the rest of the render; a random window
    of one fixed field is indistinguishable for training and keeps renders deterministic.
    """
    h, w = shape[0] + 64, shape[1] + 64
    bank = _rng(0xA015E).normal(16, 8, (h, w) + tuple(shape[2:]))
    bank = np.clip(bank, 0, 255).astype(np.uint8)
    bank.setflags(write=False)
    return bank


def _thread_box(spec: BoltSpec, cx: float, yh: float, kx: float, ky: float, tilt: float,
                size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Box of where the coating is or should be (the band region) in this frame.

    Every defect lies on the band, so the box also holds the view's mask.
    """
    par = spec.params
    zs = par['band_start_mm'] - 0.25
    ze = par['band_start_mm'] + max(par['band_len_mm'], MIN_BAND_LEN_MM) + 0.25
    xs = [cx + tilt * z * kx + s * (R_MAJOR_MM + 0.15) * kx for z in (zs, ze) for s in (-1, 1)]
    x0, x1 = min(xs), max(xs)
    y0, y1 = yh + zs * ky, yh + ze * ky
    x0, y0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
    x1, y1 = min(size[0], int(math.ceil(x1))), min(size[1], int(math.ceil(y1)))
    return (x0, y0, x1 - x0, y1 - y0)


def render_bolt(spec: BoltSpec, size: tuple[int, int] = REF_SIZE, *, n_cams: int = 4,
                distractor: bool = False) -> list[RenderedView]:
    """Render all ``n_cams`` views of a bolt (see :func:`render_view`)."""
    return [render_view(spec, cam, size, n_cams=n_cams, distractor=distractor)
            for cam in range(n_cams)]


# --------------------------------------------------------------------------------------------
# Datasets on disk

LABEL_COLUMNS = ('bolt_id', 'cam', 'bolt_label', 'defect', 'severity', 'view_label',
                 'x', 'y', 'w', 'h', 'image', 'mask')


def generate_dataset(out_dir, *, seed: int = 0, bolts: int = 100, defect_rate: float = 0.5,
                     size: tuple[int, int] = REF_SIZE, distractor: bool = False,
                     first_bolt_id: int = 0, n_cams: int = 4, progress: bool = True) -> Path:
    """Render bolts ``first_bolt_id .. first_bolt_id + bolts - 1`` to a labelled folder.

    Writes ``images/<bolt_id:06d>_cam<k>.png``, ``masks/<bolt_id:06d>_cam<k>.png``,
    ``labels.csv`` (columns :data:`LABEL_COLUMNS`; x, y, w, h = the thread box) and
    ``synth.json`` (the generation parameters).

    Args:
        out_dir: Output folder (created; existing files of the same names are overwritten).
        seed: Scenario seed.
        bolts: Number of bolts.
        defect_rate: Probability that a bolt is NG.
        size: ``(width, height)`` of every frame.
        distractor: Draw the label-correlated lamp (see :func:`render_view`).
        first_bolt_id: Number of the first bolt.
        n_cams: Cameras per bolt.
        progress: Show a tqdm progress bar.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.
    """
    from bolt_inspection import __version__

    out = Path(out_dir)
    (out / 'images').mkdir(parents=True, exist_ok=True)
    (out / 'masks').mkdir(parents=True, exist_ok=True)
    ids = range(first_bolt_id, first_bolt_id + bolts)
    if progress:
        from tqdm import tqdm
        ids = tqdm(ids, desc='rendering bolts', unit='bolt')
    rows = []
    for bolt_id in ids:
        spec = bolt_spec(seed, bolt_id, defect_rate)
        for cam, view in enumerate(render_bolt(spec, size, n_cams=n_cams,
                                               distractor=distractor)):
            name = f'{bolt_id:06d}_cam{cam}.png'
            _imwrite(out / 'images' / name, view.image)
            _imwrite(out / 'masks' / name, view.mask)
            x, y, w, h = view.thread_box
            rows.append({'bolt_id': bolt_id, 'cam': cam, 'bolt_label': spec.label,
                         'defect': spec.defect, 'severity': f'{spec.severity:.4f}',
                         'view_label': 'NG' if view.defect_visible else 'OK',
                         'x': x, 'y': y, 'w': w, 'h': h,
                         'image': f'images/{name}', 'mask': f'masks/{name}'})
    with open(out / 'labels.csv', 'w', newline='', encoding='utf-8') as fh:
        writer = csv.DictWriter(fh, fieldnames=LABEL_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    meta = {'seed': seed, 'size': [int(size[0]), int(size[1])], 'defect_rate': defect_rate,
            'distractor': bool(distractor), 'n_cams': n_cams, 'bolts': bolts,
            'first_bolt_id': first_bolt_id, 'package_version': __version__}
    (out / 'synth.json').write_text(json.dumps(meta, indent=2) + '\n', encoding='utf-8')
    return out


def _imwrite(path: Path, image: np.ndarray) -> None:
    # Fast PNG settings (RLE is both faster and smaller than the default on noisy frames):
    # dataset writing is dominated by encoding otherwise.
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY,
              cv2.IMWRITE_PNG_STRATEGY_RLE]
    if not cv2.imwrite(str(path), image, params):
        raise OSError(f'{path}: could not write image')


def contact_sheet(dataset, out_path, *, roi_boxes: dict | None = None, tile_width: int = 320,
                  max_bolts: int = 40) -> Path:
    """Write a PNG of every view (rows = bolts, columns = cameras), for a human to look at.

    Each tile is the downscaled frame with the ROI box (green, when ``roi_boxes`` has one for
    the camera), the defect mask outlined (magenta, synthetic data) and a caption: bolt id,
    camera, defect type and the view label (red = NG, green = OK).

    Args:
        dataset: A loaded :class:`~bolt_inspection.core.vision.dataset.Dataset` (either layout).
        out_path: PNG to write.
        roi_boxes: Camera -> ``(x, y, w, h)`` in frame pixels, or None for no boxes.
        tile_width: Width of one tile in pixels.
        max_bolts: Only the first this many bolts are shown.

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.

    Raises:
        ImageError: An image of the dataset cannot be read.
    """
    from bolt_inspection.core.vision.dataset import read_image

    bolts = list(dataset.bolts().items())[:max_bolts]
    cams = sorted({v.cam for _, views in bolts for v in views}) or [0]
    column = {cam: i for i, cam in enumerate(cams)}
    first = read_image(bolts[0][1][0].image_path) if bolts else np.zeros((3, 4, 3), np.uint8)
    tile_h = max(16, int(round(tile_width * first.shape[0] / first.shape[1])))
    sheet = np.full((max(1, len(bolts)) * (tile_h + 4) + 4, len(cams) * (tile_width + 4) + 4, 3),
                    255, np.uint8)
    for row, (bolt_id, views) in enumerate(bolts):
        for view in views:
            img = read_image(view.image_path)
            fx, fy = tile_width / img.shape[1], tile_h / img.shape[0]
            tile = cv2.resize(img, (tile_width, tile_h), interpolation=cv2.INTER_AREA)
            if roi_boxes and view.cam in roi_boxes:
                x, y, w, h = roi_boxes[view.cam]
                cv2.rectangle(tile, (int(x * fx), int(y * fy)),
                              (int((x + w) * fx), int((y + h) * fy)), (0, 200, 0), 1)
            if view.mask_path is not None and view.mask_path.is_file():
                mask = cv2.imread(str(view.mask_path), cv2.IMREAD_GRAYSCALE)
                if mask is not None and mask.any():
                    # Dilate before shrinking so a particle of a few pixels still gets an outline.
                    mask = cv2.dilate(mask, np.ones((5, 5), np.uint8))
                    small = cv2.resize(mask, (tile_width, tile_h), interpolation=cv2.INTER_AREA)
                    contours, _ = cv2.findContours((small > 0).astype(np.uint8),
                                                   cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                    cv2.drawContours(tile, contours, -1, (255, 0, 255), 1)
            ng = view.label == 'NG'
            caption = f'{bolt_id} cam{view.cam} {view.defect} -> {view.label}'
            cv2.rectangle(tile, (0, 0), (tile_width, 16), (0, 0, 160) if ng else (0, 110, 0), -1)
            cv2.putText(tile, caption, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255),
                        1, cv2.LINE_AA)
            y0, x0 = 4 + row * (tile_h + 4), 4 + column[view.cam] * (tile_width + 4)
            sheet[y0:y0 + tile_h, x0:x0 + tile_width] = tile
    out_path = Path(out_path)
    if not cv2.imwrite(str(out_path), sheet):
        raise OSError(f'{out_path}: could not write image')
    return out_path
