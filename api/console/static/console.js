// Optional live refresh of a journey page; every page works without this script.
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
