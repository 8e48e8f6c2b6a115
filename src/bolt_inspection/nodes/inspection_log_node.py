"""Inspection log node: every /inspection/verdict into the SQLite traceability log.

A thin adapter over :class:`bolt_inspection.core.log.inspection_log.InspectionLog` (which owns the
writer thread, WAL, pruning and crash safety). This node only joins messages:

* ``/inspection/verdict`` (bolt_inspection_msgs/Verdict, reliable depth 100) becomes one row,
  decoded by the one decoder (:mod:`bolt_inspection.core.line.verdict`); a malformed message is
  dropped, counted (``bad_verdicts`` on /diagnostics) and warned about. Its header stamp is
  the bolt's trigger stamp, the key of the joins below. Every verdict is handed to the writer at
  once, which commits it before anything else: a kill -9 right after loses no row.
* ``/inspection/gradcam`` (bgr8 mosaic, sensor data) carries ``header.stamp`` = the trigger
  stamp, so it joins its verdict exactly by stamp. The classifier publishes it right after the
  verdict, on another topic, best effort: a mosaic that arrives within ``mosaic_wait_s`` after
  an NG verdict is added to that row (:meth:`InspectionLog.add_images`); one that overtook its
  verdict is kept a moment and written with it.
* ``/camN/image_raw`` (reliable, ``header.stamp`` = the trigger stamp): each view is cut to
  its ROI box from ``camera_config`` (config/cameras.yaml, scaled to the frame size) on arrival
  and kept for a few bolts, so an NG row gets the four ROI crops the classifier judged.
* ``/plc/delivery`` (bolt_inspection_msgs/PlcDelivery per verdict: bolt id, acknowledged by
  the PLC or not) sets the row's PLC delivery state. Until the PLC bridge publishes it, rows
  stay ``pending``.

Lifecycle: ``configure`` opens the database (a failure logs one line and returns FAILURE),
``activate`` subscribes, ``deactivate`` writes what is held and flushes, ``cleanup`` closes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import Image

from bolt_inspection.core.errors import BoltInspectionError
from bolt_inspection.core.line.verdict import BOLT_ID
from bolt_inspection.core.log.inspection_log import (
    DEFAULT_DB_PATH,
    DEFAULT_MAX_IMAGE_BYTES,
    InspectionLog,
    VerdictRecord,
)
from bolt_inspection.nodes import topics
from bolt_inspection.nodes.lifecycle_util import (
    declare,
    destroy_entities,
    exit_main,
    key_values,
    publish_diagnostics,
    stamp_to_ns,
)
from bolt_inspection.nodes.verdict_msg import BAD_VERDICTS, decode_or_drop

VERDICT_QOS = topics.VERDICT_QOS
_MOSAICS_KEPT = 16
_CROPS_KEPT = 16          # bolts whose ROI crops are kept waiting for their verdict


@dataclass
class _Awaiting:
    """A committed verdict whose Grad-CAM mosaic has not arrived yet."""

    bolt_id: str
    deadline: float


class InspectionLogNode(LifecycleNode):
    """Writes every verdict (and the Grad-CAM mosaic of NG bolts) to the inspection log."""

    def __init__(self, node_name: str = 'inspection_log', *, context=None,
                 parameter_overrides=None, **kw) -> None:
        super().__init__(node_name, context=context, parameter_overrides=parameter_overrides,
                         **kw)
        # Everything destroy_node() touches exists before the first declare: a parameter of
        # the wrong type raises there, and the context still destroys this half-built node.
        self.log: InspectionLog | None = None
        self._lock = threading.Lock()
        self._mosaics: OrderedDict[int, Image] = OrderedDict()  # trigger stamp ns -> mosaic
        self._awaiting: dict[int, _Awaiting] = {}               # trigger stamp ns -> NG bolt
        self._crops: OrderedDict[int, dict] = OrderedDict()     # trigger stamp ns -> cam -> crop
        # Rows already committed that still take evidence: trigger stamp ns -> bolt id. A view
        # can reach this node after its verdict (separate topics); its crop is added to the row.
        self._written: OrderedDict[int, str] = OrderedDict()
        self.camera_config = None
        self.counts = {'verdicts': 0, 'mosaics_joined': 0, 'without_mosaic': 0,
                       'unknown_trigger': 0, 'deliveries': 0, 'crops_stored': 0,
                       'crop_errors': 0, 'errors': 0, BAD_VERDICTS: 0, 'bad_deliveries': 0}
        self._entities: list = []
        self._diag_pub = None
        p = self._params = {}
        # Writable: a database that cannot be opened is fixed by pointing db_path elsewhere
        # and configuring again, no restart needed.
        p['db_path'] = declare(self, 'db_path', DEFAULT_DB_PATH, 'SQLite database (WAL); ~ is '
                               'expanded; read on configure')
        p['image_dir'] = declare(self, 'image_dir', '', "Evidence PNG folder; '' = <db stem>"
                                 '_images beside the database', read_only=True)
        p['max_image_bytes'] = declare(self, 'max_image_bytes', DEFAULT_MAX_IMAGE_BYTES,
                                       'Prune the oldest evidence images past this many bytes '
                                       '(rows are kept)', int_range=(0, 2**62), read_only=True)
        p['store_ok_images'] = declare(self, 'store_ok_images', False, 'Also keep the mosaic '
                                       'of OK bolts', read_only=True)
        p['synchronous'] = declare(self, 'synchronous', 'FULL', 'SQLite synchronous pragma: '
                                   'FULL survives power cuts, NORMAL only process crashes',
                                   read_only=True, constraints='OFF | NORMAL | FULL | EXTRA')
        p['mosaic_wait_s'] = declare(self, 'mosaic_wait_s', 1.0, 'How long after an NG verdict '
                                     'its Grad-CAM mosaic is still added to its row (the row '
                                     'itself is written at once)', float_range=(0.0, 30.0),
                                     read_only=True)
        p['store_crops'] = declare(self, 'store_crops', True, 'Keep the ROI crop of every view '
                                   'of an NG bolt (from /camN/image_raw)', read_only=True)
        p['camera_config'] = declare(self, 'camera_config', '', "cameras.yaml with the ROI "
                                     "boxes; '' = the shipped one (boxes scale with the frame "
                                     'size)', read_only=True)
        p['cams'] = declare(self, 'cams', [0, 1, 2, 3], 'Cameras whose crops are kept',
                            read_only=True)
        p['camera_topic'] = declare(self, 'camera_topic', '/cam{}/image_raw', 'Camera topic '
                                    'pattern; {} = camera index', read_only=True)
        p['diagnostics_period_s'] = declare(self, 'diagnostics_period_s', 1.0, 'Period of '
                                            '/diagnostics', float_range=(0.1, 60.0),
                                            read_only=True)

    # -- lifecycle ---------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self._params
        p['db_path'] = self.get_parameter('db_path').value
        if p['store_crops']:
            from bolt_inspection.core.vision.roi import load_camera_config
            try:
                self.camera_config = load_camera_config(p['camera_config'] or None)
            except BoltInspectionError as exc:
                self.get_logger().error(f'cannot read the ROI boxes: {exc}')
                return TransitionCallbackReturn.FAILURE
        try:
            self.log = InspectionLog(p['db_path'], p['image_dir'] or None,
                                     int(p['max_image_bytes']),
                                     store_ok_images=bool(p['store_ok_images']),
                                     synchronous=str(p['synchronous']))
        except (BoltInspectionError, ValueError) as exc:
            self.get_logger().error(f'cannot open the inspection log: {exc}')
            return TransitionCallbackReturn.FAILURE
        self._diag_pub = self.create_lifecycle_publisher(
            topics.DIAGNOSTICS_TYPE, topics.DIAGNOSTICS, topics.DIAGNOSTICS_QOS)
        self.get_logger().info(f'inspection log {self.log.path} (images {self.log.image_dir})')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)
        self._entities = [
            self.create_subscription(topics.VERDICT_TYPE, topics.VERDICT, self._on_verdict,
                                     VERDICT_QOS),
            self.create_subscription(topics.IMAGE_TYPE, topics.GRADCAM, self._on_mosaic,
                                     topics.PREVIEW_QOS),
            self.create_subscription(topics.PLC_DELIVERY_TYPE, topics.PLC_DELIVERY,
                                     self._on_delivery, topics.DELIVERY_QOS),
            self.create_timer(0.1, self._write_overdue),
            # Evidence must be complete: reliable like the cameras publish (nodes/topics.py);
            # best effort only for a best-effort camera driver, which it matches.
            *[self.create_subscription(
                Image, topics.camera_topic(cam, self._params['camera_topic']),
                self._view_callback(int(cam)), topics.subscription_qos(
                    self, topics.camera_topic(cam, self._params['camera_topic']),
                    'sensor_msgs/msg/Image'))
              for cam in (self._params['cams'] if self.camera_config is not None else ())],
            self.create_timer(self._params['diagnostics_period_s'], self._publish_diagnostics),
        ]
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._close()
        if self._diag_pub is not None:
            self.destroy_lifecycle_publisher(self._diag_pub)
            self._diag_pub = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._close()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self):
        self._stop_inputs()
        self._close()
        return super().destroy_node()

    def _stop_inputs(self) -> None:
        destroy_entities(self, self._entities)
        # The rows are written already; stop waiting for mosaics that will not come now.
        self._write_overdue(force=True)
        if self.log is not None:
            self.log.flush(timeout=10.0)

    def _close(self) -> None:
        log, self.log = self.log, None
        if log is not None:
            log.close()

    # -- inputs ------------------------------------------------------------------------------
    def _on_verdict(self, msg) -> None:
        verdict = decode_or_drop(self, msg, self.counts, self._lock)
        if verdict is None:
            return
        now_ns = time.time_ns()
        trigger_ns = verdict.stamp_ns
        exact = trigger_ns > 0
        if not exact:
            # A verdict without its trigger stamp (not one of the classifier's): estimate it
            # from the trigger -> verdict latency; such a row cannot be joined to a mosaic.
            trigger_ns = now_ns - int((verdict.latency_ms or 0.0) * 1e6)
            self.counts['unknown_trigger'] += 1
        record = VerdictRecord.from_verdict(verdict, trigger_ns=trigger_ns, created_ns=now_ns)
        self.counts['verdicts'] += 1
        wants_mosaic = exact and (not record.ok or self._params['store_ok_images'])
        mosaic = None
        if wants_mosaic:
            with self._lock:
                mosaic = self._mosaics.pop(trigger_ns, None)
            if mosaic is not None:
                self._attach(record, mosaic)
        # Committed now, not after the mosaic: a crash must not take the verdict with it.
        self._write(record)
        if wants_mosaic and mosaic is None:
            # Queued after its row, so the writer always finds the row for the mosaic.
            with self._lock:
                self._awaiting[trigger_ns] = _Awaiting(
                    record.bolt_id, time.monotonic() + self._params['mosaic_wait_s'])

    def _on_mosaic(self, msg: Image) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        with self._lock:
            awaiting = self._awaiting.pop(stamp, None)
            if awaiting is None:
                # The mosaic overtook its verdict (different topics): keep it a moment.
                self._mosaics[stamp] = msg
                while len(self._mosaics) > _MOSAICS_KEPT:
                    self._mosaics.popitem(last=False)
                return
        bgr = self._mosaic_pixels(awaiting.bolt_id, msg)
        log = self.log
        if bgr is not None and log is not None:
            try:
                log.add_images(awaiting.bolt_id, stamp, mosaic=bgr)
            except RuntimeError as exc:
                self.counts['errors'] += 1
                self.get_logger().error(f'bolt {awaiting.bolt_id}: mosaic not logged: {exc}',
                                        throttle_duration_sec=5.0)

    def _view_callback(self, cam: int):
        from bolt_inspection.core.vision.roi import crop_roi, scale_boxes
        from bolt_inspection.nodes.image_conv import image_to_bgr

        def callback(msg: Image) -> None:
            config = self.camera_config
            if config is None or cam not in config.boxes:
                return
            try:
                frame = image_to_bgr(msg)
                size = (frame.shape[1], frame.shape[0])
                box = (config.boxes[cam] if size == tuple(config.frame_size) else
                       scale_boxes({cam: config.boxes[cam]}, config.frame_size, size)[cam])
                # A copy: the crop must not keep the whole frame alive while it waits.
                crop = crop_roi(frame, box, f'cam{cam}').copy()
            except BoltInspectionError as exc:
                self.counts['crop_errors'] += 1
                self.get_logger().warning(f'cam{cam}: no ROI crop: {exc}',
                                          throttle_duration_sec=10.0)
                return
            stamp = stamp_to_ns(msg.header.stamp)
            with self._lock:
                bolt_id = self._written.get(stamp)
                if bolt_id is None:
                    self._crops.setdefault(stamp, {})[cam] = crop
                    while len(self._crops) > _CROPS_KEPT:
                        self._crops.popitem(last=False)
            if bolt_id is not None and self.log is not None:
                self.counts['crops_stored'] += 1
                self.log.add_images(bolt_id, stamp, crops={cam: crop})
        return callback

    def _on_delivery(self, msg) -> None:
        if not BOLT_ID.fullmatch(msg.bolt_id):
            with self._lock:
                self.counts['bad_deliveries'] += 1
            self.get_logger().warning('malformed /plc/delivery dropped: the bolt id is not '
                                      '1-20 decimal digits', throttle_duration_sec=5.0)
            return
        state = 'delivered' if msg.acknowledged else 'undelivered'
        if self.log is not None:
            self.log.set_delivery(msg.bolt_id, state)
            self.counts['deliveries'] += 1

    def _mosaic_pixels(self, bolt_id: str, mosaic: Image):
        from bolt_inspection.nodes.image_conv import image_to_bgr
        try:
            bgr = image_to_bgr(mosaic)
        except BoltInspectionError as exc:
            self.get_logger().warning(f'bolt {bolt_id}: mosaic not stored: {exc}',
                                      throttle_duration_sec=5.0)
            return None
        self.counts['mosaics_joined'] += 1
        return bgr

    def _attach(self, record: VerdictRecord, mosaic: Image) -> None:
        record.mosaic = self._mosaic_pixels(record.bolt_id, mosaic)

    def _write_overdue(self, force: bool = False) -> None:
        """Stop waiting for the mosaics that did not come in time (their rows are written)."""
        now = time.monotonic()
        with self._lock:
            overdue = [k for k, a in self._awaiting.items() if force or a.deadline <= now]
            for key in overdue:
                del self._awaiting[key]
        self.counts['without_mosaic'] += len(overdue)

    def _write(self, record: VerdictRecord) -> None:
        log = self.log
        if log is None:
            return
        wants_images = not record.ok or self._params['store_ok_images']
        with self._lock:
            crops = self._crops.pop(record.trigger_ns, None)
            if wants_images:
                self._written[record.trigger_ns] = record.bolt_id
                while len(self._written) > _CROPS_KEPT:
                    self._written.popitem(last=False)
        if crops and wants_images:
            record.crops = crops
            self.counts['crops_stored'] += len(crops)
        try:
            log.record(record)
        except (RuntimeError, ValueError) as exc:
            self.counts['errors'] += 1
            self.get_logger().error(f'bolt {record.bolt_id}: not logged: {exc}',
                                    throttle_duration_sec=5.0)

    # -- health ------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        if self._diag_pub is None or self.log is None:
            return
        stats = self.log.stats()
        if not stats['alive']:
            level, message = DiagnosticStatus.ERROR, f'writer stopped: {stats["last_error"]}'
        elif stats['errors'] or self.counts['errors']:
            level, message = DiagnosticStatus.WARN, (
                f'{stats["written"]} verdicts logged, {stats["errors"] + self.counts["errors"]}'
                f' error(s): {stats["last_error"]}')
        else:
            level, message = DiagnosticStatus.OK, f'{stats["written"]} verdicts logged'
        with self._lock:
            awaiting = len(self._awaiting)
        values = {**self.counts, **{k: v for k, v in stats.items() if k != 'last_error'},
                  'last_error': stats['last_error'], 'waiting_for_mosaic': awaiting,
                  'db_path': str(self.log.path)}
        status = DiagnosticStatus(level=level, name=f'{self.get_name()}: inspection log',
                                  hardware_id=str(self.log.path), message=message,
                                  values=key_values(values))
        publish_diagnostics(self, self._diag_pub, status)


def main(args=None) -> None:
    exit_main(InspectionLogNode, args)


if __name__ == '__main__':
    main()
