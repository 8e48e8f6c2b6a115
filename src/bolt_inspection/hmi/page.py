"""The operator page: one self-contained HTML document (no CDN, works on an offline line PC).

Kept as a Python string so it installs with the package (setup.py ships only Python modules).
All data goes into the DOM with ``textContent``, never ``innerHTML``: bolt ids and messages come
from the line and are not trusted as markup. Element ids are stable: the browser test uses them.
"""

PAGE_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Bolt inspection</title>
<style>
  :root { --ok: #1b8a3a; --ng: #c62828; --warn: #e0a100; --stale: #777; --bg: #15181c;
          --panel: #20252b; --text: #e8e8e8; --muted: #9aa3ad; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.35 system-ui, sans-serif; background: var(--bg);
         color: var(--text); }
  header { display: flex; align-items: center; gap: 12px; padding: 8px 14px;
           background: var(--panel); border-bottom: 1px solid #333; }
  header h1 { font-size: 18px; margin: 0 12px 0 0; }
  button { font-size: 16px; padding: 8px 22px; border: 0; border-radius: 6px; cursor: pointer;
           color: white; font-weight: 600; }
  #btn-start { background: var(--ok); } #btn-stop { background: var(--ng); }
  button:disabled { opacity: .5; cursor: default; }
  #token { padding: 6px; width: 160px; }
  .pill { padding: 3px 10px; border-radius: 10px; background: #333; font-size: 13px; }
  .pill.ok { background: var(--ok); } .pill.ng { background: var(--ng); }
  .pill.warn { background: var(--warn); color: #111; }
  #control-msg { color: var(--muted); font-size: 13px; }
  main { display: grid; grid-template-columns: minmax(0, 1fr) 440px; gap: 12px; padding: 12px;
         height: calc(100vh - 58px); }
  .panel { background: var(--panel); border-radius: 8px; padding: 10px; min-height: 0; }
  section.panel { display: flex; flex-direction: column; }
  #verdict { font-size: 72px; font-weight: 800; text-align: center; border-radius: 8px;
             padding: 2px; background: #333; letter-spacing: 6px; line-height: 1.25; }
  #verdict.ok { background: var(--ok); } #verdict.ng { background: var(--ng); }
  #verdict-detail { text-align: center; color: var(--text); margin: 6px 0 10px; font-size: 18px;
                    min-height: 24px; }
  #verdict-detail .reason { color: #ff8a80; font-weight: 700; }
  /* The mosaic (the decision, with Grad-CAM) beside the four live camera views. */
  .views { flex: 1; min-height: 0; display: grid; grid-template-columns: 1fr 1fr; gap: 10px; }
  .views figure { margin: 0; display: flex; flex-direction: column; min-height: 0; }
  .views figcaption { color: var(--muted); font-size: 12px; padding-top: 3px; }
  .frame { flex: 1; min-height: 0; background: #000; border-radius: 6px; }
  .frame img { display: block; width: 100%; height: 100%; object-fit: contain; }
  .cams { display: grid; grid-template-columns: 1fr 1fr; grid-template-rows: 1fr 1fr; gap: 8px;
          min-height: 0; }
  /* No frame yet: keep the layout, hide the browser's broken-image icon and alt text. */
  img:not([src]) { visibility: hidden; }
  aside.panel { display: flex; flex-direction: column; }
  .counters { display: grid; grid-template-columns: repeat(3, 1fr); gap: 8px; }
  .counter { background: #2a3037; border-radius: 6px; padding: 6px 8px; }
  .counter .v { font-size: 26px; font-weight: 700; } .counter .k { color: var(--muted);
                font-size: 12px; }
  h2 { font-size: 14px; color: var(--muted); margin: 12px 0 6px; text-transform: uppercase; }
  table { width: 100%; border-collapse: collapse; font-size: 13px; }
  td, th { padding: 3px 5px; text-align: left; border-bottom: 1px solid #2c323a; }
  th { color: var(--muted); font-weight: 500; }
  #verdicts-wrap { flex: 1; min-height: 0; overflow-y: auto; }
  #verdicts tr { cursor: pointer; } #verdicts tr:hover { background: #2a3037; }
  .lvl { font-weight: 700; } .lvl-0 { color: var(--ok); } .lvl-1 { color: var(--warn); }
  .lvl-2 { color: var(--ng); } .lvl-3 { color: var(--stale); }
  .v-OK { color: var(--ok); font-weight: 700; } .v-NG { color: var(--ng); font-weight: 700; }
  #detail { position: fixed; inset: 5vh 5vw; background: var(--panel); border-radius: 10px;
            padding: 14px; overflow: auto; box-shadow: 0 0 0 100vmax rgba(0,0,0,.6);
            display: none; }
  #detail.open { display: block; }
  #detail-images { display: flex; gap: 10px; overflow-x: auto; }
  #detail-images figure { margin: 0; }
  #detail-images img { height: 50vh; object-fit: contain; background: #000; }
  #clock { margin-left: auto; color: var(--muted); font-variant-numeric: tabular-nums; }
  .counter .v, #verdicts td { font-variant-numeric: tabular-nums; }
</style>
</head>
<body>
<header>
  <h1>Bolt inspection</h1>
  <span id="conn" class="pill warn">connecting</span>
  <span id="running" class="pill">conveyor ?</span>
  <button id="btn-start" type="button">Start</button>
  <button id="btn-stop" type="button">Stop</button>
  <input id="token" type="password" placeholder="HMI token" autocomplete="off" hidden>
  <span id="control-msg"></span>
  <span id="clock"></span>
</header>
<main>
  <section class="panel">
    <div id="verdict">&mdash;</div>
    <div id="verdict-detail">waiting for the first bolt</div>
    <div class="views">
      <figure><div class="frame"><img id="img-gradcam" alt="Grad-CAM mosaic"></div>
        <figcaption>Grad-CAM of the last inspected bolt (red = where the model looked)
        </figcaption></figure>
      <div class="cams">
        <figure><div class="frame"><img id="img-cam0" alt="cam0"></div>
          <figcaption>cam0 live</figcaption></figure>
        <figure><div class="frame"><img id="img-cam1" alt="cam1"></div>
          <figcaption>cam1 live</figcaption></figure>
        <figure><div class="frame"><img id="img-cam2" alt="cam2"></div>
          <figcaption>cam2 live</figcaption></figure>
        <figure><div class="frame"><img id="img-cam3" alt="cam3"></div>
          <figcaption>cam3 live</figcaption></figure>
      </div>
    </div>
  </section>
  <aside class="panel">
    <div class="counters">
      <div class="counter"><div class="v" id="count-total">0</div><div class="k">bolts</div></div>
      <div class="counter"><div class="v" id="count-ok">0</div><div class="k">OK</div></div>
      <div class="counter"><div class="v" id="count-ng">0</div><div class="k">NG</div></div>
      <div class="counter"><div class="v" id="ng-rate">-</div><div class="k">NG rate</div></div>
      <div class="counter"><div class="v" id="throughput">-</div>
        <div class="k">bolts / min</div></div>
      <div class="counter"><div class="v" id="latency-p99">-</div>
        <div class="k">latency p99 (ms)</div></div>
    </div>
    <h2>Health</h2>
    <table><tbody id="health"><tr><td>no status yet</td></tr></tbody></table>
    <h2>Last 50 bolts</h2>
    <div id="verdicts-wrap">
      <table>
        <thead><tr><th>time</th><th>bolt</th><th></th><th>reason</th><th>max p</th>
          <th>ms</th></tr></thead>
        <tbody id="verdicts"></tbody>
      </table>
    </div>
  </aside>
</main>
<div id="detail" role="dialog">
  <button id="detail-close" type="button" style="float:right;background:#444">Close</button>
  <h2 id="detail-title"></h2>
  <div id="detail-info"></div>
  <div id="detail-images"></div>
</div>
<script>
'use strict';
const TOKEN_REQUIRED = __TOKEN_REQUIRED__;
const $ = (id) => document.getElementById(id);
const shown = {};

function text(el, value) { el.textContent = value; return el; }
function cell(row, value, cls) {
  const td = row.insertCell(); text(td, value); if (cls) td.className = cls; return td;
}
function fmt(v, digits) { return v === null || v === undefined ? '-' : v.toFixed(digits); }
function maxP(p) {
  const vals = Object.values(p || {}).filter((x) => x !== null);
  return vals.length ? Math.max(...vals) : null;
}

function render(s) {
  const c = s.counters;
  text($('count-total'), c.total); text($('count-ok'), c.ok); text($('count-ng'), c.ng);
  text($('ng-rate'), c.ng_rate === null ? '-' : (100 * c.ng_rate).toFixed(1) + ' %');
  text($('throughput'), fmt(c.throughput_per_min, 1));
  text($('latency-p99'), fmt(c.latency_p99_ms, 0));
  const v = s.latest;
  if (v) {
    text($('verdict'), v.verdict).className = v.ok ? 'ok' : 'ng';
    const detail = $('verdict-detail'); detail.replaceChildren();
    const parts = ['bolt ' + v.bolt_id, v.time, 'max p(NG) ' + fmt(maxP(v.p_ng), 2),
                   fmt(v.latency_ms, 0) + ' ms'];
    detail.append(parts.join('   \u00b7   '));
    if (v.message.startsWith('NG: ')) {
      const reason = document.createElement('div'); reason.className = 'reason';
      detail.append(text(reason, v.message.slice(4)));
    }
  }
  for (const [name, version] of Object.entries(s.images)) {
    if (shown[name] !== version) {
      shown[name] = version;
      $('img-' + name).src = '/image/' + name + '.jpg?v=' + version;
    }
  }
  // Start is pointless while the PLC reports the conveyor running; Stop always stays live.
  $('btn-start').disabled = s.running === true;
  const running = $('running');
  if (s.running === null || s.running === undefined) {
    text(running, 'conveyor ?').className = 'pill';
  } else {
    text(running, s.running ? 'conveyor running' : 'conveyor stopped').className =
      'pill ' + (s.running ? 'ok' : 'warn');
  }
  const health = $('health'); health.replaceChildren();
  for (const [name, h] of Object.entries(s.health)) {
    const row = health.insertRow();
    cell(row, h.level_name, 'lvl lvl-' + h.level); cell(row, name);
    // The sorting gate's own tally, as the PLC counts it (/plc/status).
    const gate = name === 'PLC' && h.values.pass_count !== undefined
      && h.values.pass_count !== 'n/a'
      ? '  \u00b7  gate: ' + h.values.pass_count + ' passed, ' + h.values.reject_count +
        ' rejected' : '';
    cell(row, h.message + gate);
  }
  if (!Object.keys(s.health).length) cell(health.insertRow(), 'no status yet');
  const rows = $('verdicts'); rows.replaceChildren();
  for (const r of s.verdicts) {
    const row = rows.insertRow();
    row.dataset.bolt = r.bolt_id;
    cell(row, r.time); cell(row, r.bolt_id); cell(row, r.verdict, 'v-' + r.verdict);
    cell(row, r.message.startsWith('NG: ') ? r.message.slice(4) : '');
    cell(row, fmt(maxP(r.p_ng), 2)); cell(row, fmt(r.latency_ms, 0));
    row.addEventListener('click', () => showBolt(r.bolt_id));
  }
  $('token').hidden = !s.token_required;
}

async function showBolt(boltId) {
  const dlg = $('detail'); dlg.classList.add('open');
  text($('detail-title'), 'bolt ' + boltId); text($('detail-info'), 'loading...');
  const images = $('detail-images'); images.replaceChildren();
  const resp = await fetch('/api/bolt/' + encodeURIComponent(boltId));
  if (!resp.ok) { text($('detail-info'), await resp.text()); return; }
  const d = await resp.json();
  const probs = Object.entries(d.p_ng)
    .map(([cam, p]) => 'cam' + cam + ' ' + (p === null ? 'n/a' : p.toFixed(2))).join(', ');
  text($('detail-info'), [d.message, 'p(NG) ' + (probs || '-'), 'PLC ' + d.plc_state,
                          'model ' + (d.model_id || '-'),
                          new Date(d.created_ns / 1e6).toLocaleString()].join('   |   '));
  // The Grad-CAM mosaic (the decision) first, then the ROI crops the model saw.
  const ordered = d.images.filter((i) => i.kind === 'mosaic')
    .concat(d.images.filter((i) => i.kind !== 'mosaic'));
  for (const img of ordered) {
    const fig = document.createElement('figure');
    const cap = document.createElement('figcaption');
    text(cap, (img.kind === 'mosaic' ? 'Grad-CAM mosaic' : 'cam' + img.cam + ' ROI') +
         (img.url ? '' : ' (' + img.state + ')'));
    if (img.url) { const el = document.createElement('img'); el.src = img.url; fig.append(el); }
    fig.append(cap); images.append(fig);
  }
  if (!d.images.length) text(cap0(images), 'no stored images (OK bolts keep none)');
}
function cap0(parent) { const p = document.createElement('p'); parent.append(p); return p; }

async function control(what) {
  text($('control-msg'), what + '...');
  const headers = { 'Content-Type': 'application/json' };
  if (TOKEN_REQUIRED || $('token').value) headers['X-HMI-Token'] = $('token').value;
  try {
    const resp = await fetch('/api/' + what, { method: 'POST', headers, body: '{}' });
    const body = (resp.headers.get('Content-Type') || '').includes('json')
      ? (await resp.json()).message : await resp.text();
    text($('control-msg'), what + ': ' + body);
  } catch (err) {
    text($('control-msg'), what + ': ' + err);
  }
}

function tick() { text($('clock'), new Date().toLocaleTimeString()); }
tick(); setInterval(tick, 1000);
$('btn-start').addEventListener('click', () => control('start'));
$('btn-stop').addEventListener('click', () => control('stop'));
$('detail-close').addEventListener('click', () => $('detail').classList.remove('open'));
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape') $('detail').classList.remove('open');
});
const events = new EventSource('/events');
events.addEventListener('state', (e) => render(JSON.parse(e.data)));
events.onopen = () => { text($('conn'), 'live').className = 'pill ok'; };
events.onerror = () => { text($('conn'), 'reconnecting').className = 'pill ng'; };
</script>
</body>
</html>
"""
