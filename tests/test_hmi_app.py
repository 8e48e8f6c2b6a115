"""Operator HMI core: state counters, and the real HTTP server (page, SSE, images, controls)."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
from hmi_browser import browser_page, needs_chromium, text, until

from bolt_inspection.core.errors import ConfigError
from bolt_inspection.hmi.state import HmiState


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_counters_rate_throughput_latency_and_history():
    clock = FakeClock()
    state = HmiState(clock=clock)
    for i in range(60):                                   # one bolt per second for a minute
        clock.t += 1.0
        state.on_verdict(i, ok=i % 4 != 0, message='OK' if i % 4 else 'NG: missing view cam1',
                         p_ng={0: 0.1}, latency_ms=float(i + 1))
    snap = state.snapshot()
    c = snap['counters']
    assert (c['total'], c['ok'], c['ng']) == (60, 45, 15)
    assert c['ng_rate'] == pytest.approx(0.25)
    assert c['latency_p99_ms'] == 60.0                    # nearest rank of 1..60
    assert c['throughput_per_min'] == pytest.approx(60.0)
    assert len(snap['verdicts']) == 50                    # the last 50, newest first
    assert snap['verdicts'][0]['bolt_id'] == '59' and snap['verdicts'][-1]['bolt_id'] == '10'
    assert snap['latest']['bolt_id'] == '59' and snap['latest']['verdict'] == 'OK'
    clock.t += 120.0                                      # line stopped for two minutes
    assert state.snapshot()['counters']['throughput_per_min'] == 0.0
    state.reset_counters()
    assert state.snapshot()['counters']['total'] == 0


def test_health_goes_stale_and_versions_bump():
    clock = FakeClock()
    state = HmiState(clock=clock, stale_after_s=5.0)
    v0 = state.snapshot()['version']
    state.on_status('plc_bridge: PLC', 0, 'connected 127.0.0.1:5020', 'plc')
    state.on_status('cam2: camera', 2, 'device lost')
    snap = state.snapshot()
    assert snap['version'] == v0 + 2
    assert snap['health']['plc_bridge: PLC']['level_name'] == 'OK'
    assert snap['health']['cam2: camera']['level_name'] == 'ERROR'
    clock.t += 6.0
    stale = state.snapshot()['health']['plc_bridge: PLC']
    assert stale['level_name'] == 'STALE' and 'no update for 6 s' in stale['message']
    state.on_running(True)
    assert state.snapshot()['running'] is True


def test_images_are_jpeg_on_demand():
    state = HmiState()
    assert state.jpeg('gradcam') is None
    frame = np.zeros((96, 128, 3), np.uint8)
    frame[:, 64:] = (0, 0, 255)
    state.on_image('cam2', frame)
    data, version = state.jpeg('cam2')
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == frame.shape and decoded[50, 100, 2] > 200
    assert state.snapshot()['images'] == {'cam2': version}
    assert state.jpeg('cam2') == (data, version)          # cached until the next frame
    with pytest.raises(ValueError, match='image name'):
        state.on_image('cam9', frame)


# -- the web app over real HTTP ------------------------------------------------------------------

class Controls:
    def __init__(self, result=(True, 'conveyor started')):
        self.calls: list[str] = []
        self.result = result
        self.delay = 0.0

    def start(self):
        self.calls.append('start')
        time.sleep(self.delay)                            # a blocking ROS service call
        if isinstance(self.result, Exception):
            raise self.result
        return self.result

    def stop(self):
        self.calls.append('stop')
        return True, 'conveyor stopped'


@pytest.fixture
def serve():
    pytest.importorskip('aiohttp')
    from bolt_inspection.hmi.app import HmiConfig, HmiServer, create_app

    servers = []

    def _serve(state=None, controls=None, **config):
        state = state or HmiState()
        controls = controls or Controls()
        cfg = HmiConfig(**config)
        server = HmiServer(create_app(state, on_start=controls.start, on_stop=controls.stop,
                                      config=cfg, poll_s=0.02), '127.0.0.1', 0)
        server.start()
        servers.append(server)
        return server.url, state, controls

    yield _serve
    for server in servers:
        server.stop()


def _get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.headers.get('Content-Type'), resp.read()


def _get_status(url, *, headers=None, timeout=10) -> int:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _post(url, *, headers=None, content_type='application/json', timeout=10):
    hdrs = {'Content-Type': content_type, **(headers or {})}
    req = urllib.request.Request(url, data=b'{}', method='POST', headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_page_state_and_images(serve):
    url, state, _ = serve()
    status, ctype, body = _get(url + '/')
    html = body.decode()
    assert status == 200 and ctype.startswith('text/html')
    for element in ('id="verdict"', 'id="img-gradcam"', 'id="img-cam3"', 'id="count-total"',
                    'id="btn-start"', 'id="btn-stop"', 'id="verdicts"', 'id="health"',
                    "new EventSource('/events')"):
        assert element in html
    assert 'innerHTML' not in html                        # untrusted text never becomes markup
    assert 'const TOKEN_REQUIRED = false;' in html

    with pytest.raises(urllib.error.HTTPError) as exc:
        _get(url + '/image/gradcam.jpg')
    assert exc.value.code == 404
    state.on_image('gradcam', np.full((64, 64, 3), 200, np.uint8))
    state.on_verdict('7', False, 'NG', {0: 0.97}, 321.0)
    status, ctype, body = _get(url + '/image/gradcam.jpg')
    assert status == 200 and ctype == 'image/jpeg' and body[:2] == b'\xff\xd8'
    snap = json.loads(_get(url + '/api/state')[2])
    assert snap['latest']['bolt_id'] == '7' and snap['counters']['ng'] == 1
    assert snap['images']['gradcam'] > 0 and snap['token_required'] is False


def _next_event(resp, deadline):
    """Read one SSE 'state' event (skipping keepalives) and return its JSON."""
    event, data = None, None
    while time.monotonic() < deadline:
        line = resp.readline().decode().rstrip('\n')
        if line.startswith('event: '):
            event = line[7:]
        elif line.startswith('data: '):
            data = line[6:]
        elif line == '' and event == 'state' and data:
            return json.loads(data)
    raise AssertionError('no SSE event in time')


def test_server_sent_events_push_every_change(serve):
    url, state, _ = serve()
    deadline = time.monotonic() + 20
    with urllib.request.urlopen(url + '/events', timeout=10) as resp:
        assert resp.headers['Content-Type'] == 'text/event-stream'
        first = _next_event(resp, deadline)
        assert first['counters']['total'] == 0
        state.on_verdict('1', True, 'OK', {0: 0.01}, 100.0)
        second = _next_event(resp, deadline)
        assert second['counters']['total'] == 1 and second['latest']['bolt_id'] == '1'
        state.on_status('classifier', 0, 'ready')
        third = _next_event(resp, deadline)
        assert third['health']['classifier']['message'] == 'ready'
        assert third['version'] > second['version'] > first['version']


def test_controls_call_callbacks_with_csrf_checks(serve):
    url, _, controls = serve()
    assert _post(url + '/api/start') == (200, json.dumps(
        {'ok': True, 'message': 'conveyor started'}))
    status, body = _post(url + '/api/stop')
    assert status == 200 and json.loads(body)['message'] == 'conveyor stopped'
    assert controls.calls == ['start', 'stop']
    # A cross-site form post cannot set a JSON content type, and a foreign Origin is refused.
    assert _post(url + '/api/stop', content_type='application/x-www-form-urlencoded')[0] == 415
    assert _post(url + '/api/stop', headers={'Origin': 'http://evil.example'})[0] == 403
    assert _post(url + '/api/stop', headers={'Origin': url})[0] == 200
    assert _post(url + '/api/explode')[0] == 404
    assert controls.calls == ['start', 'stop', 'stop']


def test_control_failures_are_reported(serve):
    controls = Controls(result=(False, 'PLC not connected'))
    url, _, _ = serve(controls=controls, control_timeout_s=0.3)
    status, body = _post(url + '/api/start')
    assert status == 409 and json.loads(body) == {'ok': False, 'message': 'PLC not connected'}
    controls.result = RuntimeError('service /line/start not available')
    status, body = _post(url + '/api/start')
    assert status == 502 and 'not available' in json.loads(body)['message']
    controls.result, controls.delay = (True, 'late'), 1.0
    status, body = _post(url + '/api/start')
    assert status == 504 and 'no answer within 0.3 s' in json.loads(body)['message']


def test_token_protects_controls(serve):
    url, _, controls = serve(token='s3cret')
    assert 'const TOKEN_REQUIRED = true;' in _get(url + '/')[2].decode()
    assert _post(url + '/api/stop')[0] == 403
    assert _post(url + '/api/stop', headers={'X-HMI-Token': 'wrong'})[0] == 403
    assert controls.calls == []
    assert _post(url + '/api/stop', headers={'X-HMI-Token': 's3cret'})[0] == 200
    assert _post(url + '/api/stop', headers={'Authorization': 'Bearer s3cret'})[0] == 200
    assert controls.calls == ['stop', 'stop']
    # Issue 17: with a token configured, the state API needs it too.
    assert _get_status(url + '/api/state') == 403
    assert _get_status(url + '/api/state', headers={'X-HMI-Token': 's3cret'}) == 200
    assert _get_status(url + '/api/state', headers={'Authorization': 'Bearer s3cret'}) == 200


def test_non_loopback_bind_needs_token(tmp_path):
    pytest.importorskip('aiohttp')
    from bolt_inspection.hmi.app import HmiConfig, create_app, is_loopback, load_hmi_config

    assert is_loopback('127.0.0.1') and is_loopback('::1') and is_loopback('localhost')
    assert not is_loopback('0.0.0.0') and not is_loopback('192.168.0.10')
    with pytest.raises(ConfigError, match='set a token'):
        create_app(HmiState(), on_start=Controls().start, on_stop=Controls().stop,
                   config=HmiConfig(host='0.0.0.0'))
    shipped = load_hmi_config()
    assert shipped.host == '127.0.0.1' and shipped.port == 8080 and shipped.token == ''
    bad = tmp_path / 'hmi.yaml'
    bad.write_text("hmi:\n  ros__parameters:\n    host: '0.0.0.0'\n")
    with pytest.raises(ConfigError, match='set a token'):
        load_hmi_config(bad)
    bad.write_text('hmi:\n  ros__parameters:\n    port: eighty\n')
    with pytest.raises(ConfigError, match='port: expected int'):
        load_hmi_config(bad)
    bad.write_text('hmi:\n  ros__parameters:\n    colour: red\n')
    with pytest.raises(ConfigError, match='unknown parameter'):
        load_hmi_config(bad)


def test_port_in_use_is_a_one_line_error():
    pytest.importorskip('aiohttp')
    from bolt_inspection.hmi.app import HmiServer, create_app

    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        port = busy.getsockname()[1]
        app = create_app(HmiState(), on_start=Controls().start, on_stop=Controls().stop)
        with pytest.raises(ConfigError, match=f'cannot listen on 127.0.0.1:{port}'):
            HmiServer(app, '127.0.0.1', port).start()


def test_clicked_bolt_shows_stored_log_images(serve, tmp_path):
    from bolt_inspection.core.log.inspection_log import InspectionLog, VerdictRecord

    db = tmp_path / 'inspection.db'
    crop = np.zeros((80, 40, 3), np.uint8)
    crop[:, :, 1] = 180
    with InspectionLog(db) as log:
        log.record(VerdictRecord(bolt_id='12', trigger_ns=1, code=2, message='NG',
                                 p_ng={0: 0.9}, crops={0: crop, 1: crop},
                                 mosaic=np.zeros((64, 64, 3), np.uint8)))
        log.record(VerdictRecord(bolt_id='13', trigger_ns=2, code=1, message='OK'))
    url, _, _ = serve(log_db=str(db))
    info = json.loads(_get(url + '/api/bolt/12')[2])
    assert info['verdict'] == 'NG' and info['plc_state'] == 'pending'
    assert [(i['kind'], i['cam']) for i in info['images']] == [
        ('crop', 0), ('crop', 1), ('mosaic', None)]
    status, ctype, body = _get(url + info['images'][1]['url'])
    decoded = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert ctype == 'image/jpeg' and decoded.shape == crop.shape and decoded[40, 20, 1] > 150
    assert json.loads(_get(url + '/api/bolt/13')[2])['images'] == []
    for missing in ('/api/bolt/99', '/logimage/1/7.jpg', '/logimage/99/0.jpg'):
        with pytest.raises(urllib.error.HTTPError) as exc:
            _get(url + missing)
        assert exc.value.code == 404, missing


def test_no_log_configured_is_404(serve):
    url, _, _ = serve()
    with pytest.raises(urllib.error.HTTPError) as exc:
        _get(url + '/api/bolt/1')
    assert exc.value.code == 404 and b'hmi.log_db' in exc.value.read()


def test_state_is_safe_under_concurrent_updates(serve):
    url, state, _ = serve()
    frame = np.zeros((48, 64, 3), np.uint8)

    def feed(offset):
        for i in range(200):
            state.on_verdict(offset + i, True, 'OK', {0: 0.1}, 50.0)
            state.on_image(f'cam{offset // 1000}', frame)

    threads = [threading.Thread(target=feed, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        assert _get(url + '/api/state')[0] == 200
    for t in threads:
        t.join()
    assert json.loads(_get(url + '/api/state')[2])['counters']['total'] == 800


# -- the page in a real browser (Debian's chromium, driven by playwright) ----------------------

@pytest.mark.slow
@needs_chromium
def test_page_in_headless_chromium(serve, tmp_path):
    url, state, controls = serve()
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[60:180, 120:200] = (200, 90, 20)
    with browser_page() as page:
        page.goto(url + '/')
        until(lambda: text(page, 'conn') == 'live', 'page never went live')
        for n in range(1, 8):                           # verdicts arrive while the page is open
            state.on_verdict(n, n % 3 != 0, 'OK' if n % 3 else 'NG: missing view cam1',
                             {0: 0.1, 1: None}, 100.0 + n)
            state.on_image('gradcam', frame)
            time.sleep(0.05)
        state.on_status('plc_bridge', 0, 'connected')
        until(lambda: text(page, 'count-total') == '7', 'counter never reached 7')
        assert [text(page, 'count-ok'), text(page, 'count-ng')] == ['5', '2']
        assert page.locator('#verdicts tr').count() == 7
        assert text(page, 'verdict') == 'OK'
        assert page.locator('#verdicts tr').first.get_attribute('data-bolt') == '7'
        assert 'missing view cam1' in text(page, 'verdicts')
        until(lambda: page.evaluate("document.getElementById('img-gradcam').naturalWidth")
              == 320, 'mosaic not shown')
        page.click('#btn-stop')
        until(lambda: text(page, 'control-msg') == 'stop: conveyor stopped', 'stop failed')
        page.screenshot(path=str(tmp_path / 'hmi.png'))
    assert controls.calls == ['stop']
    screenshot = cv2.imread(str(tmp_path / 'hmi.png'))
    assert screenshot.shape[:2] == (1000, 1600)
    # The big verdict banner is green (OK) somewhere in the upper left.
    banner = screenshot[60:180, 20:1100]
    green = (banner[:, :, 1] > 110) & (banner[:, :, 2] < 60) & (banner[:, :, 0] < 90)
    assert green.mean() > 0.3


def test_message_field_adapters():
    clock = FakeClock()
    state = HmiState(clock=clock)
    from bolt_inspection.core.line.verdict import Decision, Verdict, ViewResult, ViewStatus

    state.on_verdict_message(Verdict(
        '42', Decision.FAILSAFE_NG, ('missing view cam1',),
        (ViewResult(0, ViewStatus.SCORED, 0.91), ViewResult(1, ViewStatus.MISSING)),
        latency_ms=231.5, threshold=0.5, model_id='m'))
    state.on_verdict_message(Verdict('43', Decision.OK))
    state.on_bad_verdict()                                  # a malformed one, dropped
    snap = state.snapshot()
    assert snap['verdicts'][1]['p_ng'] == {'0': 0.91, '1': None}
    assert snap['verdicts'][1]['latency_ms'] == 231.5
    assert [v['ok'] for v in snap['verdicts']] == [True, False]
    assert snap['counters']['total'] == 2 and snap['counters']['bad_verdicts'] == 1
    state.on_plc_status(b'\x00', 'connected', '127.0.0.1:5020/1', running=True)
    state.on_status('classifier', b'\x02', 'model missing')          # rclpy's byte level
    snap = state.snapshot()
    assert snap['running'] is True
    assert snap['health']['classifier']['level_name'] == 'ERROR'
    clock.t += 60                                                    # latched: never stale
    snap = state.snapshot()
    assert snap['health']['PLC']['level_name'] == 'OK'
    assert snap['health']['classifier']['level_name'] == 'STALE'
    state.on_plc_status(0, 'connected', running=False)
    assert state.snapshot()['running'] is False
    state.on_plc_status(2, 'PLC not connected')                      # not read: unknown
    assert state.snapshot()['running'] is None


def test_dns_rebinding_is_refused_by_a_host_allowlist(serve):
    """Issue 17, defect 3: a page on evil.example whose name is rebound to 127.0.0.1 sends
    Host: evil.example:PORT and a matching Origin; the old Origin == Host check let it press
    Start/Stop. Requests for any name but the allowed ones are refused, reads included."""
    url, _, controls = serve(allowed_hosts='panel.line.local, HMI-2')
    port = url.rsplit(':', 1)[1]
    evil = {'Host': f'evil.example:{port}', 'Origin': f'http://evil.example:{port}'}
    assert _post(url + '/api/start', headers=evil)[0] == 403
    assert _post(url + '/api/stop', headers=evil)[0] == 403
    for path in ('/', '/api/state', '/events', '/image/gradcam.jpg', '/api/bolt/1'):
        assert _get_status(url + path, headers={'Host': f'evil.example:{port}'}) == 403, path
    assert controls.calls == []
    for host in (f'localhost:{port}', f'127.0.0.1:{port}', f'[::1]:{port}',
                 f'panel.line.local:{port}', f'hmi-2:{port}', 'LOCALHOST'):
        origin = {'Origin': f'http://{host}'} if ':' in host else {}
        assert _post(url + '/api/stop', headers={'Host': host, **origin})[0] == 200, host
    assert _post(url + '/api/stop', headers={'Host': ''})[0] == 403
    assert len(controls.calls) == 6


def test_a_huge_log_image_id_is_not_found_not_a_server_error(serve, tmp_path):
    from bolt_inspection.core.log.inspection_log import InspectionLog, VerdictRecord

    db = tmp_path / 'inspection.db'
    with InspectionLog(db) as log:
        log.record(VerdictRecord(bolt_id='1', trigger_ns=1, code=1, message='OK'))
    url, _, _ = serve(log_db=str(db))
    for path in ('/logimage/99999999999999999999999/0.jpg', '/logimage/1/99999999999999999999.jpg',
                 '/logimage/' + '9' * 5000 + '/0.jpg', '/logimage/-1/0.jpg',
                 '/api/bolt/' + '9' * 5000):
        assert _get_status(url + path) == 404, path[:40]
