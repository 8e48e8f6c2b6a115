"""The operator web page: an aiohttp app over an injected state provider and control callbacks.

Why aiohttp: one maintained package is the HTTP server, the streaming (SSE / WebSocket) and the
test client, with no separate ASGI server (FastAPI needs uvicorn + starlette + pydantic), and its
event loop runs in one thread beside the rclpy executor of a thin ``hmi_node``.

Why Server-Sent Events rather than a WebSocket: updates flow one way (server -> page), the
browser's ``EventSource`` reconnects by itself after a network blip or a restart, and commands
go over ordinary POST requests where the token and CSRF checks live.

Endpoints:

* ``GET /`` the page; ``GET /events`` SSE stream of state snapshots (``event: state``);
  ``GET /api/state`` the same snapshot once.
* ``GET /image/{gradcam|cam0..cam3}.jpg`` the latest mosaic / views as JPEG.
* ``GET /api/bolt/{bolt_id}`` a logged verdict and its stored evidence images
  (``GET /logimage/{verdict_id}/{index}.jpg``), from the inspection log.
* ``POST /api/start``, ``POST /api/stop`` call the injected callbacks (``/line/start`` and
  ``/line/stop`` in the node). They need ``Content-Type: application/json`` (a cross-site form
  cannot send it without a CORS preflight we never grant), a same-origin ``Origin`` when
  present, and the token (``X-HMI-Token`` or ``Authorization: Bearer``) when one is configured —
  which :func:`check_bind` makes mandatory for any address but loopback. ``GET /api/state``
  needs the token too when one is configured.

Every request must name an allowed host in its ``Host`` header: ``localhost``, a loopback
address, the bind address, or a name listed in ``allowed_hosts``. This defeats DNS rebinding: a
hostile page whose domain is re-pointed at 127.0.0.1 is same-origin with itself, so an Origin
check alone lets it through, but its requests carry its own name in ``Host``.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import ipaddress
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiohttp import web

from bolt_inspection.core.config import load_yaml, node_parameters
from bolt_inspection.core.errors import BoltInspectionError, ConfigError
from bolt_inspection.hmi.page import PAGE_HTML
from bolt_inspection.hmi.state import IMAGE_NAMES, encode_jpeg

_LOG = logging.getLogger(__name__)

ControlResult = tuple[bool, str]
ControlCallback = Callable[[], ControlResult | Awaitable[ControlResult]]


class StateProvider(Protocol):
    """What the app needs from the state (:class:`bolt_inspection.hmi.state.HmiState` has it)."""

    def snapshot(self) -> dict[str, Any]: ...

    def jpeg(self, name: str) -> tuple[bytes, int] | None: ...


@dataclass
class HmiConfig:
    """Parameters of the HMI (``hmi`` in config/hmi.yaml).

    Attributes:
        host: Bind address; loopback by default. Anything else requires ``token``.
        port: TCP port (0 = any free port).
        token: Secret for the control endpoints ('' = none; only allowed on loopback).
        log_db: Inspection log to show stored images of past verdicts ('' = none).
        log_image_dir: The log's image directory ('' = beside the database).
        jpeg_quality: JPEG quality of images sent to the browser.
        control_timeout_s: Give up on a start/stop callback after this long.
        allowed_hosts: Further names (or addresses) the page may be reached by, comma-separated
            (e.g. the panel PC's DNS name); localhost, loopback addresses and ``host`` are
            always allowed. Requests naming any other host are refused (DNS rebinding).
    """

    host: str = '127.0.0.1'
    port: int = 8080
    token: str = ''
    log_db: str = ''
    log_image_dir: str = ''
    jpeg_quality: int = 85
    control_timeout_s: float = 10.0
    allowed_hosts: str = ''


_LOOPBACK_NAMES = ('localhost', '127.0.0.1', '::1')
_WILDCARDS = ('', '0.0.0.0', '::')
# SQLite row ids are signed 64-bit.
_MAX_ROW_ID = 2**63 - 1


def allowed_host_names(config: HmiConfig) -> frozenset[str]:
    """The lower-case host names a request's ``Host`` header may carry."""
    names = set(_LOOPBACK_NAMES)
    if config.host not in _WILDCARDS:
        names.add(config.host.lower())
    names.update(n.strip().lower() for n in config.allowed_hosts.split(',') if n.strip())
    return frozenset(names)


def host_name(header: str | None) -> str | None:
    """The name in a ``Host`` header (no port, no brackets, lower case); None if unusable."""
    if not header:
        return None
    try:
        name = urlsplit('//' + header).hostname
    except ValueError:
        return None
    return name or None


def load_hmi_config(path: str | Path | None = None, node_name: str = 'hmi') -> HmiConfig:
    """Read :class:`HmiConfig` from a params file (default: the shipped config/hmi.yaml).

    Raises:
        ConfigError: Unknown keys, wrong types, or a non-loopback bind without a token.
    """
    from bolt_inspection.paths import config_path

    path = config_path('hmi.yaml') if path is None else Path(path)
    params = node_parameters(load_yaml(path), node_name)
    fields = HmiConfig.__dataclass_fields__
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ConfigError(f'{path}: {node_name}: unknown parameter(s) {", ".join(unknown)}')
    values = {}
    for key, value in params.items():
        kind = type(getattr(HmiConfig, key))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not kind:
            raise ConfigError(f'{path}: {node_name}.{key}: expected {kind.__name__}, '
                              f'got {value!r}')
        values[key] = value
    config = HmiConfig(**values)
    check_bind(config.host, config.token)
    if not 0 <= config.port <= 65535:
        raise ConfigError(f'{path}: {node_name}.port: expected 0..65535, got {config.port}')
    return config


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'."""
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_loopback_address(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str) -> None:
    """Refuse to expose the control endpoints beyond this machine without a token.

    Raises:
        ConfigError: ``host`` is not loopback and ``token`` is empty.
    """
    if not is_loopback(host) and not token:
        raise ConfigError(f'HMI bound to {host}: set a token (hmi.token) for any address '
                          f'other than 127.0.0.1')


STATE_KEY = web.AppKey('state', object)
CONFIG_KEY = web.AppKey('config', HmiConfig)
CONTROLS_KEY = web.AppKey('controls', dict)
STOPPING_KEY = web.AppKey('stopping', asyncio.Event)


def create_app(state: StateProvider, *, on_start: ControlCallback, on_stop: ControlCallback,
               config: HmiConfig | None = None, poll_s: float = 0.1,
               keepalive_s: float = 15.0) -> web.Application:
    """Build the web app.

    Args:
        state: Snapshot and JPEG provider, read from the event loop thread.
        on_start: Called by ``POST /api/start``; returns ``(ok, message)`` (may be a coroutine;
            a plain function runs in a worker thread, so it may block on a ROS service call).
        on_stop: Likewise for ``POST /api/stop``.
        config: Token, log location, timeouts (bind address is checked by :func:`check_bind`).
        poll_s: How often the SSE stream checks the state version.
        keepalive_s: SSE comment interval that keeps proxies from closing an idle stream.

    Raises:
        ConfigError: ``config.host`` is not loopback and there is no token.
    """
    config = config or HmiConfig()
    check_bind(config.host, config.token)
    allowed = allowed_host_names(config)

    @web.middleware
    async def check_host(request: web.Request, handler):
        name = host_name(request.headers.get('Host'))
        if name is None or (name not in allowed and not _is_loopback_address(name)):
            shown = (request.headers.get('Host') or '(none)')[:80]
            raise web.HTTPForbidden(text=f'Host {shown!r} is not a name of this HMI; add it '
                                         'to hmi.allowed_hosts if it is')
        return await handler(request)

    app = web.Application(middlewares=[check_host])
    app[STATE_KEY] = state
    app[CONFIG_KEY] = config
    app[CONTROLS_KEY] = {'start': on_start, 'stop': on_stop}

    async def on_startup(app: web.Application) -> None:
        app[STOPPING_KEY] = asyncio.Event()

    async def on_shutdown(app: web.Application) -> None:
        app[STOPPING_KEY].set()        # end the SSE streams so shutdown does not wait on them

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)

    async def page(request: web.Request) -> web.Response:
        html = PAGE_HTML.replace('__TOKEN_REQUIRED__', 'true' if config.token else 'false')
        return web.Response(text=html, content_type='text/html',
                            headers={'Cache-Control': 'no-cache'})

    async def api_state(request: web.Request) -> web.Response:
        _check_token(request)
        snap = state.snapshot()
        snap['token_required'] = bool(config.token)
        return web.json_response(snap)

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={'Content-Type': 'text/event-stream',
                                           'Cache-Control': 'no-cache',
                                           'X-Accel-Buffering': 'no'})
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        last_version, last_send = None, loop.time()
        stopping = request.app[STOPPING_KEY]
        try:
            while not stopping.is_set():
                snap = state.snapshot()
                if snap['version'] != last_version:
                    snap['token_required'] = bool(config.token)
                    payload = json.dumps(snap, separators=(',', ':'))
                    await resp.write(f'event: state\ndata: {payload}\n\n'.encode())
                    last_version, last_send = snap['version'], loop.time()
                elif loop.time() - last_send > keepalive_s:
                    await resp.write(b': keepalive\n\n')
                    last_send = loop.time()
                try:
                    await asyncio.wait_for(stopping.wait(), poll_s)
                except TimeoutError:
                    pass
        except (ConnectionResetError, ConnectionError):
            # The browser went away (tab closed, reload): the normal end of a stream.
            pass
        return resp

    async def image(request: web.Request) -> web.Response:
        name = request.match_info['name']
        if name not in IMAGE_NAMES:
            raise web.HTTPNotFound(text=f'no image {name!r}')
        got = await asyncio.get_running_loop().run_in_executor(None, state.jpeg, name)
        if got is None:
            raise web.HTTPNotFound(text=f'no {name} image yet')
        data, version = got
        return web.Response(body=data, content_type='image/jpeg',
                            headers={'Cache-Control': 'no-cache', 'ETag': f'"{version}"'})

    def _log_db() -> str:
        if not config.log_db:
            raise web.HTTPNotFound(text='no inspection log configured (hmi.log_db)')
        return config.log_db

    def _image_dir() -> str | None:
        return config.log_image_dir or None

    async def api_bolt(request: web.Request) -> web.Response:
        from bolt_inspection.core.log.inspection_log import read_verdicts

        db = _log_db()
        bolt_id = request.match_info['bolt_id']
        try:
            rows = await asyncio.get_running_loop().run_in_executor(
                None, lambda: read_verdicts(db, bolt_id=bolt_id, newest_first=True, limit=1,
                                            with_images=True, image_dir=_image_dir()))
        except BoltInspectionError as exc:
            raise web.HTTPServiceUnavailable(text=str(exc)) from None
        if not rows:
            raise web.HTTPNotFound(text=f'bolt {bolt_id} is not in the inspection log (yet)')
        v = rows[0]
        return web.json_response({
            'id': v.id, 'bolt_id': v.bolt_id, 'verdict': 'OK' if v.ok else 'NG',
            'message': v.message, 'reasons': v.reasons,
            'p_ng': {str(k): p for k, p in v.p_ng.items()}, 'latency_ms': v.latency_ms,
            'threshold': v.threshold, 'model_id': v.model_id, 'plc_state': v.plc_state,
            'created_ns': v.created_ns,
            'images': [{'kind': i.kind, 'cam': i.cam, 'state': i.state,
                        'url': f'/logimage/{v.id}/{n}.jpg' if i.state == 'stored' else None}
                       for n, i in enumerate(v.images)]})

    async def log_image(request: web.Request) -> web.Response:
        from bolt_inspection.core.log.inspection_log import read_verdict

        db = _log_db()
        try:
            verdict_id = int(request.match_info['verdict_id'])
            index = int(request.match_info['index'])
        except ValueError:
            raise web.HTTPNotFound() from None
        if not (0 <= verdict_id <= _MAX_ROW_ID and 0 <= index < 1000):
            raise web.HTTPNotFound(text='no such log image')

        def load() -> bytes | None:
            import cv2

            verdict = read_verdict(db, verdict_id, image_dir=_image_dir())
            if verdict is None or not 0 <= index < len(verdict.images):
                return None
            img = verdict.images[index]
            # The path comes from the log, never from the request: no traversal possible.
            try:
                bgr = cv2.imread(str(img.path)) if img.state == 'stored' else None
            except cv2.error:        # not a picture this page can show: same as missing
                bgr = None
            return None if bgr is None else encode_jpeg(bgr, config.jpeg_quality)

        try:
            data = await asyncio.get_running_loop().run_in_executor(None, load)
        except BoltInspectionError as exc:
            raise web.HTTPServiceUnavailable(text=str(exc)) from None
        if data is None:
            raise web.HTTPNotFound(text='image not stored (pruned, failed or unknown)')
        return web.Response(body=data, content_type='image/jpeg',
                            headers={'Cache-Control': 'max-age=3600'})

    def _check_token(request: web.Request) -> None:
        if config.token:
            given = request.headers.get('X-HMI-Token', '')
            auth = request.headers.get('Authorization', '')
            if auth.startswith('Bearer '):
                given = given or auth[len('Bearer '):]
            if not hmac.compare_digest(given.encode(), config.token.encode()):
                raise web.HTTPForbidden(text='missing or wrong HMI token')

    def _authorise(request: web.Request) -> None:
        if request.content_type != 'application/json':
            raise web.HTTPUnsupportedMediaType(text='control requests must be application/json')
        origin = request.headers.get('Origin')
        if origin and urlsplit(origin).netloc.lower() != request.host.lower():
            raise web.HTTPForbidden(text=f'cross-origin control request from {origin} refused')
        _check_token(request)

    async def control(request: web.Request) -> web.Response:
        what = request.match_info['what']
        callback = request.app[CONTROLS_KEY].get(what)
        if callback is None:
            raise web.HTTPNotFound()
        _authorise(request)
        try:
            if inspect.iscoroutinefunction(callback):
                call = callback()
            else:
                call = asyncio.get_running_loop().run_in_executor(None, callback)
            ok, message = await asyncio.wait_for(call, config.control_timeout_s)
        except TimeoutError:
            return web.json_response({'ok': False, 'message': f'{what}: no answer within '
                                      f'{config.control_timeout_s:g} s'}, status=504)
        except Exception as exc:  # noqa: BLE001 - the operator sees why, the server keeps going
            _LOG.error('HMI %s failed: %s', what, exc)
            return web.json_response({'ok': False, 'message': f'{what}: {exc}'}, status=502)
        _LOG.info('HMI %s from %s: ok=%s %s', what, request.remote, ok, message)
        return web.json_response({'ok': bool(ok), 'message': str(message)},
                                 status=200 if ok else 409)

    app.router.add_get('/', page)
    app.router.add_get('/api/state', api_state)
    app.router.add_get('/events', events)
    app.router.add_get('/image/{name}.jpg', image)
    app.router.add_get('/api/bolt/{bolt_id}', api_bolt)
    app.router.add_get('/logimage/{verdict_id}/{index}.jpg', log_image)
    app.router.add_post('/api/{what}', control)
    return app


class HmiServer:
    """Serve an app from a background thread with its own event loop (beside an rclpy executor).

    Example::

        server = HmiServer(create_app(state, on_start=..., on_stop=...), '127.0.0.1', 8080)
        port = server.start()
        ...
        server.stop()
    """

    def __init__(self, app: web.Application, host: str = '127.0.0.1', port: int = 8080):
        self.app, self.host, self.port = app, host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f'[{self.host}]' if ':' in self.host else self.host
        return f'http://{host}:{self.port}'

    def start(self, timeout: float = 10.0) -> int:
        """Start serving; return the bound port.

        Raises:
            ConfigError: The address cannot be bound (in use, not local, ...).
        """
        self._thread = threading.Thread(target=self._serve, name='hmi-http', daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise ConfigError(f'HMI did not start within {timeout:g} s')
        if self._error is not None:
            raise ConfigError(f'HMI cannot listen on {self.host}:{self.port} '
                              f'({self._error})') from None
        return self.port

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.port)
            loop.run_until_complete(site.start())
            self.port = self._runner.addresses[0][1]
        except OSError as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and join the thread."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
