// modbus-detect dashboard. Lays out what the detector computed (the
// dashboard JSON): it never builds markup from strings, text goes in
// through textContent, and the charts are parsed as SVG documents.
'use strict';
(function () {
  var SEVERITIES = ['CRITICAL', 'HIGH', 'MEDIUM', 'LOW'];
  var PAGE = 100;
  var data = null;
  var state = { view: 'overview', sort: null, dir: 1, page: 0, rows: [], matching: 0, detail: null };
  var urls = {};
  var $ = page.$, shown = page.shown, el = page.el, clear = page.clear, api = page.api;
  function fmt(v) { return typeof v === 'number' ? v.toLocaleString('en-US') : String(v); }
  function svgInto(fig, svg) {
    clear(fig);
    if (!svg) return;
    var doc = new DOMParser().parseFromString(svg, 'image/svg+xml');
    var root = doc.documentElement;
    if (root && root.nodeName === 'svg') fig.appendChild(document.importNode(root, true));
  }
  function download(id, name, text) {
    if (urls[id]) URL.revokeObjectURL(urls[id]);
    urls[id] = URL.createObjectURL(new Blob([text], { type: 'text/csv;charset=utf-8' }));
    var a = $(id);
    a.href = urls[id];
    a.download = name;
  }

  function show(view) {
    state.view = view;
    document.querySelectorAll('nav button').forEach(function (b) {
      b.classList.toggle('active', b.dataset.view === view);
    });
    document.querySelectorAll('.view').forEach(function (s) {
      s.hidden = s.id !== 'view-' + view;
    });
  }

  // Figures are updated in place: a live page does not flicker, and a
  // figure keeps its element while the run goes on.
  function renderMetrics() {
    data.metrics.forEach(function (m) {
      var box = document.querySelector('.metrics[data-group="' + m.group + '"]');
      if (!box) return;
      var d = box.querySelector('.metric[data-metric="' + m.id + '"]');
      if (!d) {
        d = el('div', null, 'metric');
        d.dataset.metric = m.id;
        d.appendChild(el('span', m.label, 'label'));
        d.appendChild(el('span', '', 'value'));
        box.appendChild(d);
      }
      d.dataset.value = String(m.value);
      d.classList.toggle('nonzero', m.group === 'losses' && typeof m.value === 'number' && m.value > 0);
      d.querySelector('.value').textContent = shown(fmt(m.value));
    });
  }

  function renderCharts() {
    var c = data.charts;
    svgInto($('chart-traffic'), c.traffic);
    svgInto($('chart-ml'), c.ml);
    svgInto($('chart-by-type'), c.by_type);
    svgInto($('chart-by-severity'), c.by_severity);
    svgInto($('chart-timeline'), c.timeline);
    svgInto($('chart-talkers'), c.talkers);
  }

  function renderMap() {
    var m = data.map;
    var head = $('map-table').tHead, body = $('map-table').tBodies[0];
    clear(head); clear(body);
    var hr = head.insertRow();
    hr.appendChild(el('th', 'master \u2192 slave'));
    m.slaves.forEach(function (s) { hr.appendChild(el('th', s)); });
    m.masters.forEach(function (master, mi) {
      var tr = body.insertRow();
      var th = el('th', master.ip + (master.rogue ? ' (rogue)' : ''));
      if (master.rogue) th.className = 'rogue';
      tr.appendChild(th);
      m.slaves.forEach(function (_, si) {
        var td = tr.insertCell();
        var cell = m.cells.filter(function (c) { return c.master === mi && c.slave === si; })[0];
        if (!cell) return;
        td.dataset.requests = String(cell.requests);
        td.appendChild(el('div', fmt(cell.requests) + ' requests'));
        td.appendChild(el('div', 'FC ' + cell.function_codes));
        if (cell.rtt_p50_ms !== null) td.appendChild(el('div', 'RTT p50 ' + cell.rtt_p50_ms + ' ms'));
        if (cell.exceptions > 0) td.appendChild(el('div', fmt(cell.exceptions) + ' exceptions'));
        if (cell.alerts > 0) {
          td.appendChild(el('div', fmt(cell.alerts) + ' alert events'));
          td.className = 'alerting';
        }
        if (cell.new_pair) {
          td.appendChild(el('div', 'new pair: not in the baseline', 'newpair'));
          td.dataset.newPair = 'true';
        }
        if (master.rogue) td.className = 'rogue';
      });
    });
  }

  function fillSelect(select, values) {
    var keep = select.value;
    while (select.options.length > 1) select.remove(1);
    values.forEach(function (v) { select.add(new Option(v, v)); });
    select.value = values.indexOf(keep) >= 0 ? keep : '';
  }

  // The filters, as the server's /api/alerts takes them (and as matches()
  // applies them to inline entries: the same rules as query.rs).
  function filters() {
    return {
      severity: $('f-severity').value,
      type: $('f-type').value,
      device: $('f-device').value.trim(),
      from: $('f-from').value.trim(),
      to: $('f-to').value.trim()
    };
  }

  function matches(a, f) {
    if (f.severity && a.severity !== f.severity) return false;
    if (f.type && a.type !== f.type) return false;
    if (f.device && a.src_ip.indexOf(f.device) < 0 && a.dst_ip.indexOf(f.device) < 0) return false;
    if (f.from && a.last_seen.slice(0, f.from.length) < f.from) return false;
    if (f.to && a.first_seen.slice(0, f.to.length) > f.to) return false;
    return true;
  }

  function sortKey(a, key) {
    if (key === 'severity') return SEVERITIES.indexOf(a.severity);
    return a[key];
  }

  function query(f, withPage) {
    var parts = [];
    Object.keys(f).forEach(function (k) {
      if (f[k]) parts.push(k + '=' + encodeURIComponent(f[k]));
    });
    if (state.sort) parts.push('sort=' + state.sort + '&dir=' + (state.dir > 0 ? 'asc' : 'desc'));
    if (withPage) parts.push('offset=' + state.page * PAGE + '&limit=' + PAGE);
    return parts.join('&');
  }

  // The rows of the current page: [{index, entry, csv, filter}].
  function applyFilters(keepPage) {
    if (!keepPage) state.page = 0;
    var f = filters();
    if (!data.alerts_inline) {
      $('download-alerts').href = api('/api/alerts.csv' + (query(f, false) ? '?' + query(f, false) : ''));
      fetchPage(f);
      return;
    }
    var alerts = data.report.alerts;
    var rows = [];
    for (var i = 0; i < alerts.length; i++) if (matches(alerts[i], f)) rows.push(i);
    if (state.sort) {
      var k = state.sort, dir = state.dir;
      rows.sort(function (x, y) {
        var a = sortKey(alerts[x], k), b = sortKey(alerts[y], k);
        if (a < b) return -dir;
        if (a > b) return dir;
        return x - y;
      });
    }
    state.page = Math.min(state.page, Math.max(0, Math.ceil(rows.length / PAGE) - 1));
    var lines = [data.alerts_csv_header];
    rows.forEach(function (i) { lines.push(data.alert_rows[i].csv); });
    download('download-alerts', 'alerts.csv', lines.join('\r\n') + '\r\n');
    showPage(rows.length, rows.slice(state.page * PAGE, state.page * PAGE + PAGE).map(function (i) {
      return { index: i, entry: alerts[i], csv: data.alert_rows[i].csv, filter: data.alert_rows[i].filter };
    }));
  }

  var asked = 0;
  function fetchPage(f) {
    var mine = ++asked;
    fetch(api('/api/alerts?' + query(f, true)), { cache: 'no-store' }).then(function (r) {
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.json();
    }).then(function (page) {
      // An answer to an earlier question is stale.
      if (mine === asked) showPage(page.matching, page.rows);
    }).catch(function (e) {
      $('alerts-count').textContent = 'cannot load alerts: ' + e.message;
    });
  }

  function showPage(matching, rows) {
    state.matching = matching;
    state.rows = rows;
    $('alerts-count').textContent = matching + ' of ' + data.alert_entries + ' alerts';
    var body = $('alerts-table').tBodies[0];
    clear(body);
    rows.forEach(function (row) {
      var a = row.entry;
      var tr = body.insertRow();
      tr.dataset.index = String(row.index);
      tr.appendChild(el('td', a.severity, 'sev-' + a.severity));
      tr.appendChild(el('td', a.type));
      tr.appendChild(el('td', a.src_ip + ':' + a.src_port));
      tr.appendChild(el('td', a.dst_ip + ':' + a.dst_port));
      tr.appendChild(el('td', fmt(a.count)));
      tr.appendChild(el('td', a.first_seen));
      tr.appendChild(el('td', a.last_seen));
      tr.appendChild(el('td', a.description));
      tr.addEventListener('click', function () { openDetail(row); });
    });
    var pages = Math.max(1, Math.ceil(matching / PAGE));
    $('page-info').textContent = 'page ' + (state.page + 1) + ' of ' + pages;
    $('page-prev').disabled = state.page === 0;
    $('page-next').disabled = state.page + 1 >= pages;
  }

  function openDetail(row) {
    var a = row.entry;
    state.detail = row.index;
    $('detail-title').textContent = shown(a.severity + ' ' + a.type + ' (' + a.signature + ')');
    $('detail-description').textContent = shown(a.description);
    $('detail-filter').textContent = shown(row.filter);
    var info = data.report.alert_types[a.type] || {};
    $('detail-meaning').textContent = shown(info.meaning || '');
    $('detail-fp').textContent = shown(info.false_positives || '');
    var check = $('detail-check');
    clear(check);
    (info.check || []).forEach(function (c) { check.appendChild(el('li', c)); });
    var causes = $('detail-causes');
    clear(causes);
    (info.causes || []).forEach(function (c) { causes.appendChild(el('li', c)); });
    var dl = $('detail-fields');
    clear(dl);
    Object.keys(a).forEach(function (k) {
      var v = a[k];
      dl.appendChild(el('dt', k));
      var dd = el('dd', v !== null && typeof v === 'object' ? JSON.stringify(v) : String(v));
      dd.dataset.field = k;
      dl.appendChild(dd);
    });
    $('alert-detail').hidden = false;
  }

  function renderTypes() {
    var box = $('type-cards');
    clear(box);
    data.types.forEach(function (t) {
      var card = el('div', null, 'card sev-' + t.severity);
      card.dataset.type = t.type;
      card.appendChild(el('h3', t.type));
      var count = el('p', t.severity + ' \u00b7 ' + fmt(t.events) + ' events in ' + fmt(t.entries) + ' alerts');
      count.className = 'count';
      count.dataset.events = String(t.events);
      card.appendChild(count);
      var info = t.info;
      if (info) {
        card.appendChild(el('p', info.signature));
        card.appendChild(el('p', info.meaning));
        var tech = el('p', 'ATT&CK for ICS: ' + info.techniques.map(function (x) { return x.id + ' ' + x.name; }).join('; '));
        card.appendChild(tech);
        card.appendChild(el('h4', 'Likely causes'));
        var causes = el('ul', null, 'causes');
        (info.causes || []).forEach(function (c) { causes.appendChild(el('li', c)); });
        card.appendChild(causes);
        card.appendChild(el('h4', 'What to check'));
        var ul = el('ul');
        info.check.forEach(function (c) { ul.appendChild(el('li', c)); });
        card.appendChild(ul);
        card.appendChild(el('h4', 'What else raises it'));
        card.appendChild(el('p', info.false_positives));
      }
      box.appendChild(card);
    });
    download('download-types', 'alert_types.csv', data.csv.alert_types);
  }

  function ranges(r) {
    return Object.keys(r || {}).map(function (t) { return t + ' ' + r[t].join(' '); }).join('; ');
  }

  function renderAssets() {
    var body = $('devices-table').tBodies[0];
    clear(body);
    data.report.inventory.devices.forEach(function (d) {
      var tr = body.insertRow();
      tr.dataset.ip = d.ip;
      tr.appendChild(el('td', d.ip));
      tr.appendChild(el('td', d.roles.join(', ')));
      tr.appendChild(el('td', d.macs.join(' ')));
      tr.appendChild(el('td', d.unit_ids.join(' ')));
      var fcs = Object.assign({}, d.function_codes_used, d.function_codes_served);
      tr.appendChild(el('td', Object.keys(fcs).map(function (k) { return k + '\u00d7' + fcs[k]; }).join(' ')));
      tr.appendChild(el('td', ranges(d.reads)));
      tr.appendChild(el('td', ranges(d.writes)));
      var id = d.identification;
      var text = '';
      if (id) {
        text = [id.vendor_name, id.product_code, id.revision, id.product_name, id.model_name, id.server_id_text]
          .filter(function (x) { return x; }).join(' / ');
      }
      var td = el('td', text);
      td.className = 'identification';
      tr.appendChild(td);
    });
    download('download-devices', 'devices.csv', data.csv.devices);
    download('download-pairs', 'pairs.csv', data.csv.pairs);
  }

  function renderAssistant() {
    var what = $('assistant-what');
    clear(what);
    data.assistant.what_happened.forEach(function (p) { what.appendChild(el('p', p)); });
    var check = $('assistant-check');
    clear(check);
    data.assistant.check_first.forEach(function (p) { check.appendChild(el('li', p)); });
    var types = $('assistant-types');
    clear(types);
    data.types.forEach(function (t) {
      if (!t.info) return;
      types.appendChild(el('h3', t.type));
      types.appendChild(el('p', 'What it means: ' + t.info.meaning));
      types.appendChild(el('p', 'Likely causes: ' + (t.info.causes || []).join(' ')));
      types.appendChild(el('p', 'What to check: ' + t.info.check.join(' ')));
      types.appendChild(el('p', 'What else raises it: ' + t.info.false_positives));
    });
  }

  function render(d) {
    data = d;
    document.title = d.title;
    $('title').textContent = shown(d.title);
    var st = $('run-status');
    st.textContent = d.report.status.replace('_', ' ');
    st.className = 'badge' + (d.report.status === 'input_error' ? ' bad' : '');
    renderMetrics();
    renderCharts();
    renderMap();
    fillSelect($('f-severity'), SEVERITIES.filter(function (s) {
      return (d.report.counters.alerts_by_severity[s] || 0) > 0;
    }));
    fillSelect($('f-type'), d.types.map(function (t) { return t.type; }));
    applyFilters(true);
    renderTypes();
    renderAssets();
    renderAssistant();
    $('footer').textContent = shown('modbus-detect ' + d.version + ' \u00b7 ' + d.report.input.kind + ' ' + d.report.input.path);
  }

  // The EVE file beside a served report: its alert lines, a page at a time.
  var evePage = 0;
  function loadEve() {
    fetch(api('/api/eve?offset=' + evePage * PAGE + '&limit=' + PAGE), { cache: 'no-store' }).then(function (r) {
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.json();
    }).then(function (e) {
      if (!e.available) return;
      document.querySelector('nav button[data-view="eve"]').hidden = false;
      var notes = [e.total + ' alert lines of ' + e.path];
      if (e.not_loaded) notes.push(e.not_loaded + ' more not loaded (bound)');
      if (e.other_events) notes.push(e.other_events + ' other events');
      if (e.not_json) notes.push(e.not_json + ' lines that are not JSON');
      $('eve-summary').textContent = shown(notes.join('; '));
      var body = $('eve-table').tBodies[0];
      clear(body);
      e.lines.forEach(function (l) {
        var tr = body.insertRow();
        var alert = l.alert || {};
        var ours = l.modbus_detect || {};
        tr.appendChild(el('td', l.timestamp || ''));
        tr.appendChild(el('td', alert.signature || ''));
        tr.appendChild(el('td', (l.src_ip || '') + ':' + (l.src_port || '')));
        tr.appendChild(el('td', (l.dest_ip || '') + ':' + (l.dest_port || '')));
        tr.appendChild(el('td', String(ours.events || ours.count || 1)));
        tr.addEventListener('click', function () {
          $('eve-line').textContent = shown(JSON.stringify(l, null, 2));
          $('eve-line').hidden = false;
        });
      });
      var pages = Math.max(1, Math.ceil(e.total / PAGE));
      $('eve-info').textContent = 'page ' + (evePage + 1) + ' of ' + pages;
      $('eve-prev').disabled = evePage === 0;
      $('eve-next').disabled = evePage + 1 >= pages;
    }).catch(function () {});
  }

  function fetchData() {
    return fetch(api('/api/data'), { cache: 'no-store' }).then(function (r) {
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.json();
    });
  }

  function follow() {
    var badge = $('live-status');
    badge.hidden = false;
    badge.className = 'badge live';
    badge.textContent = 'live';
    var es = new EventSource(api('/api/events'));
    es.onmessage = function () {
      fetchData().then(render).catch(function () {});
    };
    es.addEventListener('end', function () {
      es.close();
      badge.className = 'badge';
      badge.textContent = 'finished';
      fetchData().then(render).catch(function () {});
    });
    es.onerror = function () { badge.textContent = 'reconnecting'; };
    es.onopen = function () { if (badge.textContent === 'reconnecting') badge.textContent = 'live'; };
  }

  function wire() {
    document.querySelectorAll('nav button').forEach(function (b) {
      b.addEventListener('click', function () { show(b.dataset.view); });
    });
    ['f-severity', 'f-type'].forEach(function (id) { $(id).addEventListener('change', function () { applyFilters(false); }); });
    ['f-device', 'f-from', 'f-to'].forEach(function (id) { $(id).addEventListener('input', function () { applyFilters(false); }); });
    document.querySelectorAll('th[data-sort]').forEach(function (th) {
      th.addEventListener('click', function () {
        var k = th.dataset.sort;
        state.dir = state.sort === k ? -state.dir : 1;
        state.sort = k;
        document.querySelectorAll('th[data-sort]').forEach(function (h) { h.className = ''; });
        th.className = state.dir > 0 ? 'sorted-asc' : 'sorted-desc';
        applyFilters(false);
      });
    });
    $('page-prev').addEventListener('click', function () { state.page--; applyFilters(true); });
    $('page-next').addEventListener('click', function () { state.page++; applyFilters(true); });
    $('eve-prev').addEventListener('click', function () { evePage--; loadEve(); });
    $('eve-next').addEventListener('click', function () { evePage++; loadEve(); });
    $('detail-close').addEventListener('click', function () { $('alert-detail').hidden = true; state.detail = null; });
  }

  function start() {
    wire();
    var inline = $('data');
    if (inline) {
      render(JSON.parse(inline.textContent));
      document.body.dataset.renderedMs = String(Math.round(performance.now()));
      return;
    }
    loadEve();
    fetchData().then(function (d) {
      render(d);
      // When the first view was ready (for the page-load benchmark).
      document.body.dataset.renderedMs = String(Math.round(performance.now()));
      if (d.live) follow();
    }).catch(function (e) {
      $('title').textContent = 'cannot load the report: ' + e.message;
    });
  }

  start();
})();
