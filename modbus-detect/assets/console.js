// modbus-detect fleet console. Lays out what the console computed (its
// JSON API): no markup from strings, text through textContent, as the
// dashboard does. Refreshes every two seconds.
'use strict';
(function () {
  var PAGE = 100;
  var EVERY = 2000;
  var state = { view: 'sensors', page: 0, sensor: '', type: '' };
  var $ = page.$, el = page.el, clear = page.clear, api = page.api;
  function fmt(v) {
    if (v === null || v === undefined) return '';
    return typeof v === 'number' ? v.toLocaleString('en-US') : String(v);
  }
  function rate(v) { return v === null || v === undefined ? '' : v.toFixed(1); }
  function get(path) {
    return fetch(api(path)).then(function (r) {
      if (!r.ok) throw new Error(path + ': ' + r.status);
      return r.json();
    });
  }
  function row(tbody, cells) {
    var tr = document.createElement('tr');
    cells.forEach(function (c) {
      var td = el('td', c.text, c.cls);
      if (c.value !== undefined) td.dataset.value = String(c.value);
      tr.appendChild(td);
    });
    tbody.appendChild(tr);
    return tr;
  }
  function options(select, values) {
    var have = {};
    Array.prototype.forEach.call(select.options, function (o) { have[o.value] = true; });
    values.forEach(function (v) {
      if (!have[v]) select.appendChild(el('option', v)).value = v;
    });
  }

  function show(view) {
    state.view = view;
    document.querySelectorAll('nav button').forEach(function (b) {
      b.classList.toggle('active', b.dataset.view === view);
    });
    document.querySelectorAll('.view').forEach(function (s) {
      s.hidden = s.id !== 'view-' + view;
    });
    refresh();
  }

  function metric(box, id, label, value, bad) {
    var d = box.querySelector('.metric[data-metric="' + id + '"]');
    if (!d) {
      d = el('div', null, 'metric');
      d.dataset.metric = id;
      d.appendChild(el('span', label, 'label'));
      d.appendChild(el('span', '', 'value'));
      box.appendChild(d);
    }
    d.dataset.value = String(value);
    d.classList.toggle('nonzero', !!bad && value > 0);
    d.querySelector('.value').textContent = fmt(value);
  }

  function renderSensors(s) {
    var box = $('console-metrics');
    metric(box, 'sensors', 'Sensors', s.sensors.length);
    metric(box, 'messages', 'Messages read', s.messages);
    metric(box, 'undecodable', 'Not events', s.undecodable, true);
    metric(box, 'alerts_evicted', 'Alert lines past the bound', s.alerts_evicted, true);
    metric(box, 'left_out', 'Sensors past the bound', s.left_out, true);
    var tbody = $('sensors-table').querySelector('tbody');
    clear(tbody);
    s.sensors.forEach(function (x) {
      var drop = function (v) { return v ? 'sev-CRITICAL' : ''; };
      var tr = row(tbody, [
        { text: x.name }, { text: x.last_seen || '' },
        { text: fmt(x.alert_lines), value: x.alert_lines },
        { text: fmt(x.frames), value: x.frames === null ? '' : x.frames },
        { text: rate(x.frames_per_s) }, { text: rate(x.alerts_per_s) },
        { text: fmt(x.kernel_drops), cls: drop(x.kernel_drops) },
        { text: fmt(x.publish_dropped), cls: drop(x.publish_dropped) },
        { text: fmt(x.devices), value: x.devices },
        { text: fmt(x.inventories), value: x.inventories }
      ]);
      tr.dataset.sensor = x.name;
    });
    options($('f-sensor'), s.sensors.map(function (x) { return x.name; }));
    $('fleet-status').textContent = s.sensors.length + ' sensors';
  }

  function renderAlerts(a) {
    var tbody = $('alerts-table').querySelector('tbody');
    clear(tbody);
    a.alerts.forEach(function (x) {
      var l = x.line, m = l.modbus_detect || {};
      var tr = row(tbody, [
        { text: x.sensor }, { text: l.timestamp || '', cls: 'nowrap' },
        { text: m.severity || '', cls: 'sev-' + (m.severity || '') },
        { text: m.type || '' }, { text: l.src_ip || '' }, { text: l.dest_ip || '' },
        { text: m.description || '' }
      ]);
      tr.dataset.sensor = x.sensor;
    });
    options($('f-type'), a.types || []);
    var pages = Math.max(1, Math.ceil(a.total / PAGE));
    $('alerts-count').textContent = fmt(a.total) + ' alert lines';
    $('alerts-count').dataset.total = String(a.total);
    $('page-info').textContent = 'page ' + (state.page + 1) + ' of ' + pages;
    $('page-prev').disabled = state.page === 0;
    $('page-next').disabled = state.page + 1 >= pages;
  }

  function renderAssets(a) {
    var tbody = $('assets-table').querySelector('tbody');
    clear(tbody);
    a.assets.forEach(function (x) {
      var id = x.identification || {};
      var said = [id.vendor_name, id.product_code, id.revision].filter(Boolean).join(' ');
      var tr = row(tbody, [
        { text: x.ip || '' }, { text: x.macs.join(', ') }, { text: x.roles.join(', ') },
        { text: x.sensors.join(', ') }, { text: said }
      ]);
      tr.dataset.ip = x.ip || '';
    });
  }

  function renderFleet(f) {
    var tbody = $('fleet-table').querySelector('tbody');
    clear(tbody);
    f.alerts.forEach(function (x) {
      var tr = row(tbody, [
        { text: x.type, cls: 'sev-HIGH' }, { text: x.subject },
        { text: x.sensors.join(', ') }, { text: x.description }
      ]);
      tr.dataset.type = x.type;
    });
  }

  function alertsPath() {
    var q = ['offset=' + state.page * PAGE, 'limit=' + PAGE];
    if (state.sensor) q.push('sensor=' + encodeURIComponent(state.sensor));
    if (state.type) q.push('type=' + encodeURIComponent(state.type));
    return '/api/alerts?' + q.join('&');
  }

  function refresh() {
    var work = [get('/api/sensors').then(renderSensors)];
    if (state.view === 'alerts') work.push(get(alertsPath()).then(renderAlerts));
    if (state.view === 'assets') work.push(get('/api/inventory').then(renderAssets));
    if (state.view === 'fleet') work.push(get('/api/fleet-alerts').then(renderFleet));
    return Promise.all(work).then(function () {
      document.body.dataset.rendered = state.view;
      $('fleet-status').classList.remove('bad');
    }, function (e) {
      $('fleet-status').textContent = 'not answering: ' + e.message;
      $('fleet-status').classList.add('bad');
    });
  }

  document.querySelectorAll('nav button').forEach(function (b) {
    b.addEventListener('click', function () { show(b.dataset.view); });
  });
  $('f-sensor').addEventListener('change', function (e) { state.sensor = e.target.value; state.page = 0; refresh(); });
  $('f-type').addEventListener('change', function (e) { state.type = e.target.value; state.page = 0; refresh(); });
  $('page-prev').addEventListener('click', function () { if (state.page > 0) { state.page--; refresh(); } });
  $('page-next').addEventListener('click', function () { state.page++; refresh(); });
  refresh();
  setInterval(refresh, EVERY);
})();
