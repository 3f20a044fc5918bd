// drvkit registry explorer. Reads /api/tree once, then applies the
// lifecycle steps pushed on /api/events as they come; re-reads the tree a
// moment after a burst to pick up what steps do not carry (retain counts).
'use strict';

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'hue') e.style.setProperty('--h', v); // CSSOM: allowed by the page's CSP, a style attribute is not
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
};

const S = {
  nodes: new Map(),    // id → node (as /api/tree gives it)
  els: new Map(),      // id → <li>
  selected: null,
  seq: 0,              // last step applied
  ready: false,        // the tree is loaded
  pending: [],         // steps received before it was
  refreshTimer: null,
  lastRefreshMS: 0,
  detailTimer: null,
  timelineLoaded: false,
  names: new Map(),    // id → {class, name}, also of services gone (for timelines)
};

function remember(id, cls, name) {
  if (!id || !cls) return;
  if (S.names.size > 50000) S.names.clear();
  S.names.set(id, { class: cls, name: name || '' });
}

// Measured in this page: lifecycle step (daemon clock) → tree updated.
window.drvkitLatency = [];
window.drvkitStats = { steps: 0, resyncs: 0, treeLoads: 0 };

const hue = (s) => { let h = 0; for (const c of s) h = (h * 31 + c.charCodeAt(0)) >>> 0; return h % 360; };

// ---- the tree ----

function rowOf(n) {
  const row = el('div', { class: 'row', role: 'treeitem' },
    el('span', { class: 'twisty', text: '▾' }),
    el('i', { class: 'dot st-' + n.state, title: n.state }),
    el('span', { class: 'cls', hue: hue(n.class), text: n.class }),
    el('span', { class: 'name', text: n.name || '' }),
    el('span', { class: 'sid', text: '#' + n.id }));
  if (n.driver) row.append(el('span', { class: 'tag', text: n.driver }));
  if (n.open_by && n.open_by.length) row.append(el('span', { class: 'tag tag-open', text: 'open ×' + n.open_by.length }));
  row.append(el('span', { class: 'rc', title: 'retain count', text: n.retain ? 'rc ' + n.retain : '' }));
  if (n.state === 'terminating' || n.state === 'stopped') row.classList.add('dead');
  if (S.selected === n.id) row.classList.add('selected');
  return row;
}

function makeLi(n) {
  const li = el('li', { 'data-id': String(n.id), 'data-class': n.class, 'data-name': n.name || '', 'data-state': n.state, class: 'leaf' });
  li.append(rowOf(n), el('ul', { role: 'group' }));
  return li;
}

function updateRow(n) {
  const li = S.els.get(n.id);
  if (!li) return;
  li.dataset.state = n.state;
  const row = rowOf(n);
  if (li.classList.contains('collapsed')) row.firstChild.textContent = '▸';
  li.replaceChild(row, li.firstChild);
}

function parentList(n) {
  for (const p of n.providers || []) {
    const pli = S.els.get(p);
    if (pli) return pli.lastChild;
  }
  return $('#tree');
}

// place puts n's <li> under its first provider shown, ordered by ID.
function place(n) {
  let li = S.els.get(n.id);
  if (!li) { li = makeLi(n); S.els.set(n.id, li); }
  const ul = parentList(n);
  if (li.parentNode === ul) return li;
  const old = li.parentNode;
  let before = null;
  for (const sib of ul.children) { if (Number(sib.dataset.id) > n.id) { before = sib; break; } }
  ul.insertBefore(li, before);
  markLeaf(ul.parentNode);
  if (old) markLeaf(old.parentNode);
  return li;
}

function markLeaf(li) {
  if (!li || li.tagName !== 'LI') return;
  li.classList.toggle('leaf', li.lastChild.children.length === 0);
}

function ensureNode(ev, state) {
  let n = S.nodes.get(ev.id);
  const fresh = !n;
  if (fresh) {
    n = { id: ev.id, class: ev.class, name: ev.name, driver: '', state, retain: 0, busy: 0, providers: [], clients: [], open_by: [] };
    S.nodes.set(n.id, n);
  }
  return [n, fresh];
}

function addEdge(n, pid) {
  if (!pid || n.providers.includes(pid)) return;
  n.providers.push(pid);
  const p = S.nodes.get(pid);
  if (p && !p.clients.includes(n.id)) p.clients.push(n.id);
}

function removeNode(id) {
  const n = S.nodes.get(id);
  S.nodes.delete(id);
  const li = S.els.get(id);
  S.els.delete(id);
  if (li) {
    // Clients still shown under it (there should be none: leaves go first).
    for (const c of [...li.lastChild.children]) $('#tree').append(c);
    const parent = li.parentNode;
    li.remove();
    if (parent) markLeaf(parent.parentNode);
  }
  if (n) for (const pid of n.providers) {
    const p = S.nodes.get(pid);
    if (p) p.clients = p.clients.filter((c) => c !== id);
  }
}

function apply(ev) {
  if (ev.seq <= S.seq) return;
  remember(ev.id, ev.class, ev.name);
  S.seq = ev.seq;
  window.drvkitStats.steps++;
  let changed = null, added = false;
  switch (ev.step) {
    case 'publish': {
      const [n, fresh] = ensureNode(ev, 'active');
      n.state = 'active'; addEdge(n, ev.provider); changed = n; added = fresh;
      break;
    }
    case 'attach': {
      const [n, fresh] = ensureNode(ev, 'starting');
      addEdge(n, ev.provider); changed = n; added = fresh;
      break;
    }
    case 'start': {
      const n = S.nodes.get(ev.id);
      if (n) { n.state = ev.err ? 'stopped' : 'active'; changed = n; }
      break;
    }
    case 'terminate': {
      const n = S.nodes.get(ev.id);
      if (n) { n.state = 'terminating'; changed = n; }
      break;
    }
    case 'stop': {
      const n = S.nodes.get(ev.id);
      if (n) { n.state = 'stopped'; changed = n; }
      break;
    }
    case 'detach': {
      const n = S.nodes.get(ev.id);
      if (n) {
        n.providers = n.providers.filter((p) => p !== ev.provider);
        const p = S.nodes.get(ev.provider);
        if (p) p.clients = p.clients.filter((c) => c !== n.id);
        changed = n;
      }
      break;
    }
    case 'free':
      removeNode(ev.id);
      noteLatency(ev, 'remove');
      break;
  }
  if (changed) {
    const li = place(changed);
    updateRow(changed);
    if (added) {
      li.firstChild.classList.add('flash');
      noteLatency(ev, 'add');
    }
  }
  if (S.selected === ev.id || S.selected === ev.provider) scheduleDetail();
  appendRegistryTimeline(ev);
  updateCounts();
  applyFilter();
  scheduleRefresh();
}

function noteLatency(ev, kind) {
  const applied = Date.now() - ev.time_ms;
  const rec = { kind, step: ev.step, id: ev.id, class: ev.class, name: ev.name, applied_ms: applied, painted_ms: null };
  window.drvkitLatency.push(rec);
  if (window.drvkitLatency.length > 1000) window.drvkitLatency.shift();
  requestAnimationFrame(() => {
    rec.painted_ms = Date.now() - ev.time_ms;
    $('#latency').textContent = Math.max(0, Math.round(rec.painted_ms)) + ' ms';
  });
}

function renderTree(t) {
  const seen = new Set();
  for (const n of t.services) {
    seen.add(n.id);
    remember(n.id, n.class, n.name);
    const old = S.nodes.get(n.id);
    S.nodes.set(n.id, n);
    if (!old) continue;
  }
  for (const id of [...S.nodes.keys()]) if (!seen.has(id)) removeNode(id);
  // Providers before clients: IDs grow with creation.
  const sorted = [...S.nodes.values()].sort((a, b) => a.id - b.id);
  for (const n of sorted) { place(n); updateRow(n); }
  for (const li of S.els.values()) markLeaf(li);
  updateCounts();
  applyFilter();
}

async function loadTree() {
  const started = performance.now();
  let t;
  try {
    const r = await fetch('/api/tree', { cache: 'no-store' });
    if (!r.ok) throw new Error(r.status + ' ' + r.statusText);
    t = await r.json();
  } catch (err) {
    setConn('down', 'tree: ' + err.message);
    return;
  }
  S.lastRefreshMS = performance.now() - started;
  if (S.ready && t.seq < S.seq) {
    // Steps arrived while it was read: it may predate some of them. Try
    // again once things are quiet rather than undo what they showed.
    scheduleRefresh();
    return;
  }
  window.drvkitStats.treeLoads++;
  renderTree(t);
  S.seq = Math.max(S.seq, t.seq);
  S.ready = true;
  const pend = S.pending; S.pending = [];
  for (const ev of pend) apply(ev);
  if (S.selected != null) scheduleDetail();
}

// After a burst of steps, read the whole tree again (never more often
// than a few times the cost of reading it).
function scheduleRefresh() {
  if (S.refreshTimer) return;
  const wait = Math.max(400, 5 * S.lastRefreshMS);
  S.refreshTimer = setTimeout(() => { S.refreshTimer = null; loadTree(); }, wait);
}

function updateCounts() {
  let active = 0, dying = 0;
  for (const n of S.nodes.values()) {
    if (n.state === 'active' || n.state === 'starting') active++; else dying++;
  }
  $('#count-services').textContent = S.nodes.size;
  $('#count-active').textContent = active;
  $('#count-dying').textContent = dying;
}

// ---- filter and expand ----

function applyFilter() {
  const q = $('#filter').value.trim().toLowerCase();
  const tree = $('#tree');
  if (!q) {
    if (tree.dataset.filtered) { for (const li of S.els.values()) li.classList.remove('filtered'); delete tree.dataset.filtered; }
    return;
  }
  tree.dataset.filtered = '1';
  const match = (n) => n.class.toLowerCase().includes(q) || (n.name || '').toLowerCase().includes(q) || ('#' + n.id) === q || String(n.id) === q;
  const visit = (li) => {
    let any = match(S.nodes.get(Number(li.dataset.id)) || { class: '', name: '' });
    for (const c of li.lastChild.children) any = visit(c) || any;
    li.classList.toggle('filtered', !any);
    return any;
  };
  for (const li of tree.children) visit(li);
}

// ---- the service pane ----

function scheduleDetail() {
  clearTimeout(S.detailTimer);
  S.detailTimer = setTimeout(() => showService(S.selected, false), 120);
}

function select(id) {
  if (S.selected != null) { const o = S.els.get(S.selected); if (o) o.firstChild.classList.remove('selected'); }
  S.selected = id;
  const li = S.els.get(id);
  if (li) li.firstChild.classList.add('selected');
  if (location.hash !== '#service=' + id) history.replaceState(null, '', '#service=' + id);
  showTab('service');
  showService(id, true);
}

const svcLink = (id) => {
  const n = S.nodes.get(id) || S.names.get(id);
  const label = n ? `${n.class}#${id}${n.name ? ' ' + n.name : ''}` : '#' + id;
  return el('a', { 'data-goto': String(id), text: label, onclick: (e) => { e.preventDefault(); select(id); } });
};

const card = (k, v, small) => el('div', { class: 'card' }, el('div', { class: 'k', text: k }), el('div', { class: 'v' + (small ? ' small' : ''), text: String(v) }));

function propValue(v) {
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) {
    return el('span', {}, String(v), el('span', { class: 'hex', text: '0x' + v.toString(16).padStart(4, '0') }));
  }
  if (typeof v === 'string') return el('span', { text: v });
  return el('span', { text: JSON.stringify(v) });
}

function fmtTime(ms) {
  const d = new Date(ms);
  const p = (x, n = 2) => String(x).padStart(n, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

function timelineRow(ev, prev, withService) {
  const what = el('span', { class: 'what' });
  if (withService) what.append(svcLink(ev.id), ' ');
  if (ev.provider) what.append((ev.step === 'detach' ? 'from ' : ev.step === 'publish' ? 'under ' : 'to '), svcLink(ev.provider), ' ');
  if (ev.step === 'probe') what.append(`score ${ev.score} `);
  if (ev.err) what.append(el('span', { class: 'err', text: ev.err }));
  const dt = prev ? ev.time_ms - prev.time_ms : 0;
  return el('li', { class: 's-' + ev.step, 'data-step': ev.step, 'data-seq': String(ev.seq) },
    el('span', { class: 't', text: fmtTime(ev.time_ms) }),
    el('span', { class: 'dt', text: prev ? '+' + fmtDelta(dt) : '' }),
    el('span', { class: 'step', text: ev.step }),
    what);
}

function fmtDelta(ms) {
  if (ms < 1) return (ms * 1000).toFixed(0) + 'µs';
  if (ms < 1000) return ms.toFixed(1) + 'ms';
  return (ms / 1000).toFixed(2) + 's';
}

async function showService(id, reset) {
  if (id == null) return;
  const pane = $('#tab-service');
  let d;
  try {
    const r = await fetch('/api/services/' + id, { cache: 'no-store' });
    if (r.status === 404) {
      pane.replaceChildren(el('div', { class: 'empty', text: `Service #${id} is gone and its history has scrolled out.` }));
      return;
    }
    if (!r.ok) throw new Error(r.status + ' ' + r.statusText);
    d = await r.json();
  } catch (err) {
    pane.replaceChildren(el('div', { class: 'empty', text: 'Could not read service #' + id + ': ' + err.message }));
    return;
  }
  if (S.selected !== id) return;
  const scroll = reset ? 0 : $('.detail-pane').scrollTop;
  const title = el('div', { class: 'svc-title', id: 'service-title' },
    el('span', { class: 'cls', hue: hue(d.class), text: d.class }),
    el('h2', { text: d.name || '(unnamed)' }),
    el('span', { class: 'sid', text: '#' + d.id }),
    el('span', { class: 'chip', id: 'service-state' }, el('i', { class: 'dot st-' + d.state }), d.state));
  if (d.registered) title.append(el('span', { class: 'chip', text: 'registered' }));
  if (d.matched) title.append(el('span', { class: 'chip', text: 'matched' }));
  if (d.driver) title.append(el('span', { class: 'chip', text: 'driver ' + d.driver }));

  const cards = el('div', { class: 'cards' },
    card('retain count', d.retain), card('busy', d.busy), card('open by', d.open_by.length),
    card('clients', d.clients.length), card('traced', d.traced ? 'yes' : 'no', true));

  const rel = (label, list) => el('div', { class: 'links' }, el('h3', { text: label }),
    list.length ? el('div', {}, ...list.map(svcLink)) : el('span', { class: 'muted', text: 'none' }));

  const props = el('table', { class: 'props', id: 'service-properties' });
  const keys = Object.keys(d.properties).sort();
  for (const k of keys) props.append(el('tr', {}, el('td', { text: k }), el('td', {}, propValue(d.properties[k]))));
  if (!keys.length) props.append(el('tr', {}, el('td', { class: 'muted', text: 'no properties' }), el('td')));

  const holders = el('ul', { class: 'plain', id: 'service-holders' });
  for (const h of d.holders) {
    const li = el('li', {}, el('div', { text: h.what }));
    if (h.stacks.length) li.append(el('details', {}, el('summary', { class: 'muted', text: `${h.stacks.length} stack(s)` }), el('pre', { text: h.stacks.join('\n\n') })));
    holders.append(li);
  }
  if (!d.holders.length) holders.append(el('li', { class: 'muted', text: d.state === 'active' || d.state === 'starting' ? 'active: held by the registry (nothing blocks it)' : 'nothing blocks it' }));

  const why = el('ul', { class: 'plain', id: 'service-why' });
  for (const c of d.why) why.append(el('li', { text: c }));
  if (!d.why.length) why.append(el('li', { class: 'muted', text: d.traced ? 'no chain from a root' : 'not traced: start the daemon with --trace all' }));

  const tl = el('ol', { class: 'timeline', id: 'service-timeline' });
  let prev = null;
  for (const ev of d.timeline) remember(ev.id, ev.class, ev.name);
  for (const ev of d.timeline) { tl.append(timelineRow(ev, prev, false)); prev = ev; }
  if (!d.timeline.length) tl.append(el('li', { class: 'muted', text: 'no steps recorded' }));

  pane.replaceChildren(title, cards,
    rel('Providers', d.providers), rel('Clients', d.clients), rel('Open by', d.open_by),
    el('h3', { text: 'Properties' }), props,
    el('h3', { text: 'Holders (what keeps it from being freed)' }), holders,
    el('h3', { text: 'Why alive (chains of holders to a root)' }), why,
    el('h3', { text: 'Lifecycle timeline' }), tl);
  $('.detail-pane').scrollTop = scroll;
}

// ---- registry timeline and leaks ----

async function loadRegistryTimeline() {
  const r = await fetch('/api/timeline?limit=500', { cache: 'no-store' });
  if (!r.ok) return;
  const t = await r.json();
  const ol = $('#registry-timeline');
  ol.replaceChildren();
  let prev = null;
  const rows = [];
  for (const ev of t.events) remember(ev.id, ev.class, ev.name);
  for (const ev of t.events) { rows.push(timelineRow(ev, prev, true)); prev = ev; }
  ol.append(...rows.reverse());
  ol.dataset.last = JSON.stringify(prev);
  S.timelineLoaded = true;
}

function appendRegistryTimeline(ev) {
  if (!S.timelineLoaded) return;
  const ol = $('#registry-timeline');
  const prev = ol.dataset.last ? JSON.parse(ol.dataset.last) : null;
  ol.prepend(timelineRow(ev, prev, true));
  ol.dataset.last = JSON.stringify(ev);
  while (ol.children.length > 1000) ol.lastChild.remove();
}

async function loadLeaks() {
  const box = $('#leaks');
  const all = $('#leaks-all').checked ? '?all=1' : '';
  const r = await fetch('/api/leaks' + all, { cache: 'no-store' });
  if (!r.ok) { box.replaceChildren(el('div', { class: 'empty', text: 'leak report: ' + r.status })); return; }
  const l = await r.json();
  const head = l.objects === 0
    ? el('p', { class: 'leak-ok', text: all ? 'No live traced object.' : 'Nothing leaked: every live traced object is an active service.' })
    : el('p', { class: 'leak-bad', text: `${l.objects} live object(s) ${all ? '' : 'that should be gone '}— holders and stacks below.` });
  const classes = el('div', { class: 'cards' });
  for (const c of (l.report && l.report.live) || []) classes.append(card(c.class, c.count));
  box.replaceChildren(head, classes, el('pre', { id: 'leak-text', text: l.text }));
}

// ---- tabs, connection ----

function showTab(name) {
  for (const b of document.querySelectorAll('.tabs button')) b.classList.toggle('active', b.dataset.tab === name);
  for (const t of document.querySelectorAll('.tab')) t.classList.toggle('active', t.id === 'tab-' + name);
  if (name === 'timeline' && !S.timelineLoaded) loadRegistryTimeline();
  if (name === 'leaks') loadLeaks();
}

function setConn(kind, text) {
  const c = $('#conn');
  c.className = 'pill pill-' + kind;
  c.textContent = text;
}

function connect() {
  const es = new EventSource('/api/events');
  es.addEventListener('hello', () => {
    setConn('live', 'live');
    S.ready = false;
    loadTree();
  });
  es.addEventListener('step', (m) => {
    const ev = JSON.parse(m.data);
    if (!S.ready) { S.pending.push(ev); return; }
    apply(ev);
  });
  es.addEventListener('resync', () => { window.drvkitStats.resyncs++; loadTree(); });
  es.onerror = () => setConn(es.readyState === EventSource.CLOSED ? 'down' : 'wait', es.readyState === EventSource.CLOSED ? 'disconnected' : 'reconnecting…');
}

document.addEventListener('DOMContentLoaded', () => {
  $('#tree').addEventListener('click', (e) => {
    const row = e.target.closest('.row');
    if (!row) return;
    const li = row.parentNode;
    if (e.target.classList.contains('twisty')) { li.classList.toggle('collapsed'); row.firstChild.textContent = li.classList.contains('collapsed') ? '▸' : '▾'; return; }
    select(Number(li.dataset.id));
  });
  $('#filter').addEventListener('input', applyFilter);
  $('#expand-all').addEventListener('click', () => { for (const li of S.els.values()) { li.classList.remove('collapsed'); li.firstChild.firstChild.textContent = '▾'; } });
  $('#collapse-all').addEventListener('click', () => { for (const li of S.els.values()) if (li.parentNode && li.parentNode.id !== 'tree') { li.classList.add('collapsed'); li.firstChild.firstChild.textContent = '▸'; } });
  for (const b of document.querySelectorAll('.tabs button')) b.addEventListener('click', () => showTab(b.dataset.tab));
  $('#leaks-refresh').addEventListener('click', loadLeaks);
  $('#leaks-all').addEventListener('change', loadLeaks);
  const m = /^#service=(\d+)$/.exec(location.hash);
  if (m) { S.selected = Number(m[1]); showService(S.selected, true); }
  connect();
});
