// rserve-proxy admin UI: the little behaviour htmx does not cover. No inline
// handlers anywhere (the CSP forbids them); everything is delegated from here.
"use strict";

(function () {
  // Copy buttons: <button class="copy-btn" data-copy="#element-id">Copy</button>
  // copies the text of the element named by data-copy.
  document.addEventListener("click", function (ev) {
    var btn = ev.target.closest(".copy-btn");
    if (!btn) return;
    var target = document.querySelector(btn.getAttribute("data-copy"));
    if (!target) return;
    var text = target.value !== undefined && target.tagName === "INPUT" ? target.value : target.textContent;
    var done = function () {
      btn.classList.add("copied");
      setTimeout(function () { btn.classList.remove("copied"); }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text.trim()).then(done, function () { selectText(target); });
    } else {
      // Plain-HTTP pages have no clipboard API: select the text for Ctrl+C.
      selectText(target);
      done();
    }
  });

  function selectText(el) {
    var range = document.createRange();
    range.selectNodeContents(el);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }

  // The menu button is a <label> for a checkbox; make Enter and Space work on it too.
  document.addEventListener("keydown", function (ev) {
    var t = ev.target;
    if (t && t.id === "menu-toggle" && (ev.key === "Enter" || ev.key === " ")) {
      ev.preventDefault();
      var box = document.getElementById("menu-state");
      if (box) box.checked = !box.checked;
    }
  });

  // Plain (non-htmx) forms with data-confirm="question" ask before submitting. htmx
  // forms use hx-confirm instead: htmx does not honour a cancelled submit event.
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var q = form.getAttribute && form.getAttribute("data-confirm");
    if (q && !window.confirm(q)) ev.preventDefault();
  }, true);
})();

// ---------- apps pages (ui-apps) ----------
(function () {
  // Package tags under the packages field follow what is typed (the server renders
  // the same tags from the same rule: split on commas and white space).
  document.addEventListener("input", function (ev) {
    var t = ev.target;
    if (!t || t.id !== "f-packages") return;
    var list = document.getElementById("package-tags");
    if (!list) return;
    while (list.firstChild) list.removeChild(list.firstChild);
    var seen = {};
    t.value.split(/[\s,]+/).forEach(function (p) {
      if (!p || seen[p]) return;
      seen[p] = true;
      var li = document.createElement("li");
      li.className = "tag";
      li.textContent = p;
      list.appendChild(li);
    });
  });

  // Upload: progress from htmx's request, drag and drop onto the drop zone.
  document.addEventListener("htmx:xhr:progress", function (ev) {
    if (!ev.target || ev.target.id !== "upload-form") return;
    var bar = document.getElementById("upload-progress");
    var d = ev.detail || {};
    if (bar && d.lengthComputable && d.total > 0) {
      bar.classList.remove("idle");
      bar.value = Math.round((d.loaded / d.total) * 100);
    }
  });
  function dropZone(ev) {
    return ev.target && ev.target.closest ? ev.target.closest("#drop-zone") : null;
  }
  ["dragenter", "dragover"].forEach(function (name) {
    document.addEventListener(name, function (ev) {
      var zone = dropZone(ev);
      if (!zone) return;
      ev.preventDefault();
      zone.classList.add("dragging");
    });
  });
  document.addEventListener("dragleave", function (ev) {
    var zone = dropZone(ev);
    if (zone) zone.classList.remove("dragging");
  });
  document.addEventListener("drop", function (ev) {
    var zone = dropZone(ev);
    if (!zone) return;
    ev.preventDefault();
    zone.classList.remove("dragging");
    var input = document.getElementById("upload-file");
    var form = document.getElementById("upload-form");
    if (!input || !form || !ev.dataTransfer || !ev.dataTransfer.files.length) return;
    input.files = ev.dataTransfer.files;
    showChosen(input);
    if (form.requestSubmit) form.requestSubmit(); else form.submit();
  });
  function showChosen(input) {
    var text = document.querySelector("#drop-zone .drop-text");
    if (text && input.files && input.files.length) text.textContent = input.files[0].name;
  }
  document.addEventListener("change", function (ev) {
    if (ev.target && ev.target.id === "upload-file") showChosen(ev.target);
  });

  // Logs: the SSE route's `log` events, one element per line; `status` events come
  // first and again when the stream ends (then we close: EventSource would reconnect
  // and replay). Pause holds new lines until resumed.
  var MAX_LINES = 5000;
  function startLogs() {
    var box = document.getElementById("log-lines");
    if (!box || box.getAttribute("data-started")) return;
    box.setAttribute("data-started", "1");
    var state = document.getElementById("log-state");
    var badge = document.getElementById("log-app-status");
    var pause = document.getElementById("log-pause");
    var paused = false;
    var held = [];
    var statuses = 0;
    var src = new EventSource(box.getAttribute("data-stream"));
    function say(text) { if (state) state.textContent = text; }
    function add(text) {
      var line = document.createElement("div");
      line.className = "log-line";
      line.textContent = text;
      box.appendChild(line);
      while (box.childNodes.length > MAX_LINES) box.removeChild(box.firstChild);
    }
    function follow() { box.scrollTop = box.scrollHeight; }
    src.addEventListener("log", function (ev) {
      if (paused) {
        held.push(ev.data);
        say("Paused: " + held.length + " new line(s) waiting");
        return;
      }
      add(ev.data);
      follow();
    });
    src.addEventListener("status", function (ev) {
      statuses += 1;
      try {
        var s = JSON.parse(ev.data).status;
        if (badge && s) {
          badge.textContent = s;
          badge.className = "status-badge st-" + ({ running: "running", error: "error", stopped: "stopped" }[s] || "starting");
        }
      } catch (e) { /* a status we cannot read changes nothing */ }
      if (statuses === 1) {
        say(paused ? "Paused" : "Live");
      } else {
        say(box.childNodes.length || held.length ? "Ended" : "Ended: no lines");
        src.close();
      }
    });
    src.onerror = function () {
      if (statuses >= 2) return;
      say(src.readyState === EventSource.CLOSED ? "Disconnected; reload to try again" : "Reconnecting…");
    };
    if (pause) {
      pause.addEventListener("click", function () {
        paused = !paused;
        pause.setAttribute("aria-pressed", paused ? "true" : "false");
        pause.textContent = paused ? "Resume" : "Pause";
        if (!paused) {
          held.forEach(add);
          held = [];
          follow();
          say(statuses >= 2 ? "Ended" : "Live");
        } else {
          say("Paused");
        }
      });
    }
    // Leaving the page through htmx (a swap of #main) ends the stream too.
    document.addEventListener("htmx:beforeSwap", function stop(ev) {
      if (ev.detail && ev.detail.target && ev.detail.target.contains(box)) {
        src.close();
        document.removeEventListener("htmx:beforeSwap", stop);
      }
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", startLogs);
  } else {
    startLogs();
  }
  document.addEventListener("htmx:afterSettle", startLogs);
})();
