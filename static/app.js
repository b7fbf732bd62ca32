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
