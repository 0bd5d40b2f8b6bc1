// Optional live refresh of a journey page, and the self-refresh of a broadcast under way; every page works
// without this script.
(function () {
  var box = document.querySelector("[data-live]");
  if (!box) return;
  var key = "parcours-live";
  box.checked = sessionStorage.getItem(key) === "1";
  var timer = null;
  function arm() {
    if (timer) clearTimeout(timer);
    if (box.checked) timer = setTimeout(function () { location.reload(); }, 15000);
  }
  box.addEventListener("change", function () { sessionStorage.setItem(key, box.checked ? "1" : "0"); arm(); });
  arm();
})();

// A page marked data-autorefresh="N" (a broadcast under way) reloads itself every N seconds.
(function () {
  var mark = document.querySelector("[data-autorefresh]");
  if (!mark) return;
  var seconds = parseInt(mark.getAttribute("data-autorefresh"), 10);
  if (seconds > 0) setTimeout(function () { location.reload(); }, seconds * 1000);
})();

// A segment's audience being recounted in the background (data-counting): poll its kept count and show it once the
// recount is kept, without reloading (the new-broadcast form keeps what was typed). Without this script the page
// says "Counting…" and a reload shows the count.
(function () {
  var box = document.querySelector("[data-reach][data-counting]");
  if (!box || !window.fetch) return;
  var url = "/console/segments/" + encodeURIComponent(box.getAttribute("data-reach")) + "/count.json";
  var polls = 0;
  function text(selector, value) {
    var node = box.querySelector(selector);
    if (node) node.textContent = value;
  }
  function show(d) {
    text('[data-figure="count"]', String(d.count));
    text('[data-figure="age"]', "counted " + d.age + " ago");
    text('[data-figure="exact"]', "(exact as of " + d.exact_as_of.replace("T", " ").slice(0, 19) + " UTC; counting took " + d.milliseconds + " ms)");
    var counted = box.querySelector("[data-counted]");
    if (counted) counted.hidden = false;
    var uncounted = box.querySelector("[data-uncounted]");
    if (uncounted) uncounted.remove();
  }
  function poll() {
    polls += 1;
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) {
        if (!d) return;
        if (d.counting && polls < 300) { setTimeout(poll, 2000); return; }
        if (d.count !== null) show(d);
        box.removeAttribute("data-counting");
        text('[data-figure="counting"]', d.count !== null ? "Counted." : "The count did not finish: reload to try again.");
      })
      .catch(function () {});
  }
  setTimeout(poll, 1000);
})();
