// Keyboard shortcuts of the labelling and adjudication forms: 1-6 pick a class, Enter saves, s skips.
// The forms work without this file; it only adds keys.
(function () {
  "use strict";
  var form = document.getElementById("labelform");
  if (!form) return;
  var radios = form.querySelectorAll('input[type="radio"][name="label"]');

  function typing(el) {
    return el && (el.tagName === "TEXTAREA" || el.tagName === "SELECT" ||
      (el.tagName === "INPUT" && !/^(radio|checkbox|submit|button)$/.test(el.type)));
  }

  function submitWith(id) {
    var button = document.getElementById(id);
    if (!button) return;
    if (form.requestSubmit) form.requestSubmit(button); else button.click();
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.altKey || ev.metaKey || ev.isComposing) return;
    var active = document.activeElement;
    var inText = typing(active);
    var onButton = active && (active.tagName === "BUTTON" || active.tagName === "A");
    if (ev.key === "Enter" && (ev.ctrlKey || (!inText && !onButton))) {
      ev.preventDefault();
      submitWith("submit");
      return;
    }
    if (inText || ev.ctrlKey) return;
    var n = parseInt(ev.key, 10);
    if (n >= 1 && n <= radios.length) {
      ev.preventDefault();
      radios[n - 1].checked = true;
      radios[n - 1].focus();
    } else if (ev.key === "s" || ev.key === "S") {
      ev.preventDefault();
      submitWith("skip");
    }
  });
})();
