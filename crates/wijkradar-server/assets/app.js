// Wijkradar dashboard: sortable tables, and the map and the table select
// the same area together. The pages work without it.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("table.sorteerbaar").forEach(function (table) {
    table.querySelectorAll("thead button[data-kolom]").forEach(function (button) {
      button.addEventListener("click", function () {
        var column = Number(button.dataset.kolom);
        var numeric = button.dataset.soort === "getal";
        var th = button.closest("th");
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = a.cells[column], y = b.cells[column];
          var d = numeric
            ? Number(x.dataset.waarde) - Number(y.dataset.waarde)
            : x.textContent.localeCompare(y.textContent, "nl");
          return ascending ? d : -d;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  function select(code, on) {
    document.querySelectorAll('[data-code="' + CSS.escape(code) + '"]').forEach(function (el) {
      var target = el.tagName === "a" || el.tagName === "A" ? el.querySelector("path") : el;
      if (target) { target.classList.toggle("gekozen", on); }
    });
  }
  document.querySelectorAll("[data-code]").forEach(function (el) {
    var code = el.dataset.code;
    ["mouseenter", "focusin"].forEach(function (e) { el.addEventListener(e, function () { select(code, true); }); });
    ["mouseleave", "focusout"].forEach(function (e) { el.addEventListener(e, function () { select(code, false); }); });
  });
});
