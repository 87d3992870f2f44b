// What the dashboard and the fleet console share: elements made with text
// through textContent only, control characters shown as \u{..}, and API
// paths that carry the page's token (a browser sends no Authorization
// header for what a page fetches by itself).
'use strict';
var page = (function () {
  var token = new URLSearchParams(location.search).get('token');
  // Control characters (a terminal escape sequence in a device name) are
  // shown as \u{..}, as the detector's own messages show them.
  function shown(s) {
    return String(s).replace(/[\u0000-\u001f\u007f-\u009f]/g, function (c) {
      return '\\u{' + c.charCodeAt(0).toString(16) + '}';
    });
  }
  return {
    $: function (id) { return document.getElementById(id); },
    shown: shown,
    el: function (tag, text, cls) {
      var e = document.createElement(tag);
      if (text !== undefined && text !== null) e.textContent = shown(text);
      if (cls) e.className = cls;
      return e;
    },
    clear: function (e) { while (e.firstChild) e.removeChild(e.firstChild); },
    api: function (path) {
      return token ? path + (path.indexOf('?') < 0 ? '?' : '&') + 'token=' + encodeURIComponent(token) : path;
    }
  };
})();
