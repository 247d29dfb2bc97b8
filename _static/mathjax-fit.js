/*
 * mathjax-fit.js: shrink MathJax 3 (CHTML) formulas that are wider than their column.
 *
 * After MathJax has typeset the page, every formula whose natural width exceeds the width
 * available to it gets font-size s = max(MIN_SCALE, floor(1000 * avail / need) / 1000) on its
 * <mjx-math> element. Scaling mjx-math (not mjx-container) keeps MathJax's own ex-height
 * scale (font-size 127.3% or so on the container). Below MIN_SCALE the theme's horizontal
 * scroll takes over. Formulas that fit are left untouched. Re-fits on window resize, on
 * changes of the column width (ResizeObserver: sidebar toggles) and once fonts are ready.
 *
 * Hooks: <mjx-container data-fit-scale="s">, <html data-mathjax-fit="done"> after each pass
 * ("none" on pages without MathJax), window.mathjaxFit() to re-fit content typeset later.
 * See chapters/miscellany/equations-that-fit.md. Does not assign window.MathJax.
 */
(function () {
  "use strict";

  /** Smallest scale applied; a wider formula scrolls (display) at this scale. */
  var MIN_SCALE = 0.5;
  /** Sub-pixel slack: a formula at most this much wider than its room counts as fitting. */
  var SLACK_PX = 0.5;

  var widths = new WeakMap(); // observed block -> last seen content width
  var observed = new WeakSet();
  var observer = null;
  var queued = false;

  function contentWidth(el) {
    var style = getComputedStyle(el);
    return el.clientWidth - (parseFloat(style.paddingLeft) || 0) - (parseFloat(style.paddingRight) || 0);
  }

  function isBlock(el) {
    var d = getComputedStyle(el).display;
    return d === "block" || d === "flex" || d === "grid" || d === "list-item" || d === "flow-root" || d === "table-cell";
  }

  function blockAncestor(el) {
    for (var p = el.parentElement; p; p = p.parentElement) {
      if (isBlock(p)) return p;
    }
    return document.body;
  }

  function observe(block) {
    if (!observer || observed.has(block)) return;
    observed.add(block);
    observer.observe(block); // its first notification only records the width
  }

  function fit(options) {
    var minScale = options && typeof options.minScale === "number" ? options.minScale : MIN_SCALE;
    var items = [];
    var containers = document.querySelectorAll('mjx-container[jax="CHTML"]');
    // Three passes (reset, measure, write) so that the page is laid out once, not per formula.
    containers.forEach(function (c) {
      var m = c.querySelector("mjx-math");
      if (!m) return;
      m.style.fontSize = "";
      items.push({ c: c, m: m, display: c.getAttribute("display") === "true" });
    });
    items.forEach(function (it) {
      it.block = it.display ? it.c.parentElement || it.c : blockAncestor(it.c);
      it.need = it.m.getBoundingClientRect().width;
      // Display math: the container itself (in a flex row it is what is left after the
      // equation number); inline math: the nearest block that holds the line.
      it.avail = contentWidth(it.display ? it.c : it.block);
      observe(it.block);
    });
    items.forEach(function (it) {
      var s = 1;
      if (it.need > it.avail + SLACK_PX && it.avail > 0) {
        s = Math.max(minScale, Math.floor((1000 * it.avail) / it.need) / 1000);
        it.m.style.fontSize = (100 * s).toFixed(1) + "%";
      }
      it.c.dataset.fitScale = String(s);
    });
    document.documentElement.dataset.mathjaxFit = "done";
    return items.length;
  }

  function schedule() {
    if (queued) return;
    queued = true;
    requestAnimationFrame(function () {
      queued = false;
      fit();
    });
  }

  function onResize(entries) {
    var changed = false;
    entries.forEach(function (e) {
      var w = e.contentRect.width;
      if (widths.has(e.target) && Math.abs(w - widths.get(e.target)) > 0.25) changed = true;
      widths.set(e.target, w);
    });
    if (changed) schedule(); // heights change when we scale: only widths matter
  }

  function start() {
    if (typeof ResizeObserver === "function") observer = new ResizeObserver(onResize);
    window.addEventListener("resize", schedule);
    fit();
    if (document.fonts && document.fonts.ready) document.fonts.ready.then(schedule);
  }

  function whenTypeset() {
    var tries = 0;
    (function poll() {
      var mj = window.MathJax;
      if (mj && mj.startup && mj.startup.promise) {
        mj.startup.promise.then(start, start); // fit what was typeset, even after an error
      } else if (mj && tries++ < 100) {
        setTimeout(poll, 100); // MathJax loaded async: wait for it (up to 10 s)
      } else {
        document.documentElement.dataset.mathjaxFit = "none";
      }
    })();
  }

  /** Re-fit every formula now (e.g. after MathJax.typesetPromise() on new content). */
  window.mathjaxFit = fit;

  if (document.readyState === "complete") whenTypeset();
  else window.addEventListener("load", whenTypeset);
})();
