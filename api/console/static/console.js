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
