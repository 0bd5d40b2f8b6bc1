// The journey editor: line numbers, Tab keys that indent, validation as you type (the same check as publishing,
// through POST /console/editor/check) and the preview refreshed as you type (POST /console/editor/preview). Every
// button of the page works without this script.
(function () {
  "use strict";
  var form = document.getElementById("editor-form");
  var area = document.getElementById("definition");
  if (!form || !area) return;

  // --- line numbers ---------------------------------------------------------------------------------------------
  var gutter = document.createElement("pre");
  gutter.className = "gutter";
  gutter.setAttribute("aria-hidden", "true");
  area.parentNode.insertBefore(gutter, area);
  area.parentNode.classList.add("numbered");
  var bad = {};
  var drawn = "";

  function drawGutter() {
    var count = area.value.split("\n").length;
    var key = count + "|" + Object.keys(bad).join(",");
    if (key !== drawn) {
      drawn = key;
      var frag = document.createDocumentFragment();
      for (var i = 1; i <= count; i++) {
        var span = document.createElement("span");
        span.textContent = String(i);
        if (bad[i]) span.className = "bad";
        frag.appendChild(span);
        frag.appendChild(document.createTextNode("\n"));
      }
      gutter.textContent = "";
      gutter.appendChild(frag);
    }
    gutter.scrollTop = area.scrollTop;
  }
  area.addEventListener("scroll", function () { gutter.scrollTop = area.scrollTop; });
  area.addEventListener("input", drawGutter);

  // --- keys: Tab indents, Shift+Tab outdents, Esc then Tab leaves, Enter keeps the indentation ----------------------
  var INDENT = "  ";
  var escaped = false;

  function replace(start, end, text, selStart, selEnd) {
    area.setSelectionRange(start, end);
    var done = false;
    try { done = document.execCommand("insertText", false, text); } catch (e) { done = false; }  // keeps undo
    if (!done) {
      area.setRangeText(text, start, end, "end");
      area.dispatchEvent(new Event("input", { bubbles: true }));
    }
    area.setSelectionRange(selStart, selEnd);
  }

  function indent(outdent) {
    var value = area.value, start = area.selectionStart, end = area.selectionEnd;
    var from = value.lastIndexOf("\n", start - 1) + 1;
    var multi = value.slice(start, end).indexOf("\n") !== -1;
    if (!outdent && !multi) {
      replace(start, end, INDENT, start + INDENT.length, start + INDENT.length);
      return;
    }
    var to = end > start && value.charAt(end - 1) === "\n" ? end - 1 : end;
    var lineEnd = value.indexOf("\n", to);
    if (lineEnd === -1) lineEnd = value.length;
    var lines = value.slice(from, lineEnd).split("\n");
    var first = 0, total = 0;
    lines = lines.map(function (line, i) {
      if (!outdent) { total += INDENT.length; if (i === 0) first = INDENT.length; return INDENT + line; }
      var cut = line.match(/^ {0,2}/)[0].length;
      total -= cut;
      if (i === 0) first = -cut;
      return line.slice(cut);
    });
    var block = lines.join("\n");
    if (block === value.slice(from, lineEnd)) return;
    replace(from, lineEnd, block, Math.max(from, start + first), Math.max(from, end + total));
  }

  area.addEventListener("keydown", function (e) {
    if (area.readOnly) return;
    if (e.key === "Escape") { escaped = true; return; }
    if (e.key === "Tab" && !e.ctrlKey && !e.altKey && !e.metaKey) {
      if (escaped) { escaped = false; return; }  // the browser moves the focus on
      e.preventDefault();
      indent(e.shiftKey);
      return;
    }
    escaped = false;
    if (e.key === "Enter" && !e.shiftKey && !e.ctrlKey && !e.altKey && !e.metaKey && !e.isComposing) {
      var value = area.value, start = area.selectionStart;
      var lineStart = value.lastIndexOf("\n", start - 1) + 1;
      var lead = value.slice(lineStart, start).match(/^ */)[0];
      if (/:\s*$/.test(value.slice(lineStart, start))) lead += INDENT;  // a mapping opens: one level deeper
      e.preventDefault();
      var text = "\n" + lead;
      replace(start, area.selectionEnd, text, start + text.length, start + text.length);
    }
  });

  // --- moving to a line -----------------------------------------------------------------------------------------
  function goToLine(line) {
    var value = area.value, pos = 0;
    for (var n = 1; n < line; n++) {
      var next = value.indexOf("\n", pos);
      if (next === -1) break;
      pos = next + 1;
    }
    var eol = value.indexOf("\n", pos);
    area.focus();
    area.setSelectionRange(pos, eol === -1 ? value.length : eol);
    var height = parseFloat(window.getComputedStyle(area).lineHeight) || 20;
    area.scrollTop = Math.max(0, (line - 1) * height - area.clientHeight / 3);
    gutter.scrollTop = area.scrollTop;
  }

  document.addEventListener("click", function (e) {
    var link = e.target.closest ? e.target.closest("a.goto[data-line]") : null;
    if (!link) return;
    e.preventDefault();
    goToLine(parseInt(link.getAttribute("data-line"), 10));
  });

  // --- the problems, as the server lists them ----------------------------------------------------------------------
  var summary = document.getElementById("issues-summary");
  var groupsBox = document.getElementById("issue-groups");
  var stepSelect = document.getElementById("step");
  var deviceBox = document.getElementById("test-device");

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function markFromPage() {
    bad = {};
    var links = groupsBox ? groupsBox.querySelectorAll("a.goto[data-line]") : [];
    for (var i = 0; i < links.length; i++) bad[links[i].getAttribute("data-line")] = true;
  }

  function show(data) {
    bad = {};
    groupsBox.textContent = "";
    var groups = {}, order = [];
    data.issues.forEach(function (issue) {
      if (!groups[issue.group]) {
        var box = el("div", "issue-group");
        box.setAttribute("data-group", issue.group);
        box.setAttribute("data-step", issue.step || "");
        box.appendChild(el("h3", "", issue.group_label));
        box.appendChild(el("ul"));
        groups[issue.group] = box;
        order.push(issue.group);
      }
      var item = el("li", "issue");
      item.setAttribute("data-location", issue.location);
      item.appendChild(el("code", "loc", issue.location));
      item.appendChild(document.createTextNode(" "));
      item.appendChild(el("span", "msg", issue.message));
      if (issue.line) {
        bad[issue.line] = true;
        item.appendChild(document.createTextNode(" "));
        var link = el("a", "goto", "line " + issue.line);
        link.href = "#definition";
        link.setAttribute("data-line", String(issue.line));
        item.appendChild(link);
      }
      groups[issue.group].querySelector("ul").appendChild(item);
    });
    order.forEach(function (g) { groupsBox.appendChild(groups[g]); });
    summary.textContent = data.issues.length
      ? data.issues.length + " problem(s): fix them to preview or publish."
      : "No problem found.";
    if (data.valid && deviceBox) {
      deviceBox.hidden = !data.send_steps.some(function (s) { return s.channels.indexOf("push") >= 0; });
    }
    if (data.valid && stepSelect && data.send_steps.length) {
      var chosen = stepSelect.value;
      stepSelect.textContent = "";
      data.send_steps.forEach(function (s) {
        var option = el("option", "", s.label + " (" + s.channels.join(", ") + ")");
        option.value = s.id;
        option.selected = s.id === chosen;
        stepSelect.appendChild(option);
      });
    }
    drawGutter();
  }

  // A JSON POST to one of the editor's endpoints, with the session's CSRF token: the answer's JSON, or an error
  // that says why in words the page shows.
  function postJson(target, payload) {
    return fetch(target, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": form.getAttribute("data-csrf") },
      body: JSON.stringify(payload)
    }).then(function (response) {
      if (response.status === 401) throw new Error("you are signed out: sign in again in another tab");
      if (!response.ok) throw new Error("the server answered " + response.status);
      return response.json();
    });
  }

  var url = form.getAttribute("data-check-url");
  var timer = null, sent = 0;

  function check() {
    var mine = ++sent;
    form.setAttribute("aria-busy", "true");
    postJson(url, { definition: area.value, journey: form.getAttribute("data-journey") || null }).then(function (data) {
      if (mine === sent) {
        show(data);
        if (data.valid) refreshPreview();
      }
    }).catch(function (err) {
      if (mine === sent) summary.textContent = "Could not check the definition: " + err.message + ".";
    }).then(function () {
      if (mine === sent) form.removeAttribute("aria-busy");
    });
  }

  // --- the preview, refreshed as you type ------------------------------------------------------------------------
  // Once the definition checks out (or the customer, step or properties change), the preview of the chosen customer
  // and step is asked again and swapped in. Every request has a number; an answer older than the one shown is
  // dropped, so a slow answer never overwrites a newer one.
  var previewUrl = form.getAttribute("data-preview-url");
  var previewBox = document.getElementById("preview-box");
  var customerInput = document.getElementById("customer_id");
  var propertiesInput = document.getElementById("properties");
  var asked = 0, drawnPreview = 0, answered = 0, previewTimer = null;

  function refreshPreview() {
    if (!previewUrl || !previewBox || !customerInput || !customerInput.value.trim()) return;
    var mine = ++asked;
    previewBox.setAttribute("aria-busy", "true");
    postJson(previewUrl, {
      definition: area.value,
      journey: form.getAttribute("data-journey") || null,
      customer_id: customerInput.value,
      step: stepSelect ? stepSelect.value : "",
      properties: propertiesInput ? propertiesInput.value : ""
    }).then(function (data) {
      if (mine > drawnPreview) {
        drawnPreview = mine;
        previewBox.innerHTML = data.html;  // our own template, rendered and escaped by the server
      }
    }).catch(function (err) {
      if (mine > drawnPreview) {
        drawnPreview = mine;
        previewBox.textContent = "";
        var p = el("p", "error", "Could not refresh the preview: " + err.message + ".");
        p.setAttribute("role", "alert");
        previewBox.appendChild(p);
      }
    }).then(function () {
      previewBox.setAttribute("data-answered", String(++answered));
      if (mine === asked) previewBox.removeAttribute("aria-busy");
    });
  }

  function soon() {
    if (previewTimer) clearTimeout(previewTimer);
    previewTimer = setTimeout(refreshPreview, 400);
  }
  if (customerInput) customerInput.addEventListener("input", soon);
  if (propertiesInput) propertiesInput.addEventListener("input", soon);
  if (stepSelect) stepSelect.addEventListener("change", refreshPreview);

  if (url && !area.readOnly) {
    area.addEventListener("input", function () {
      if (timer) clearTimeout(timer);
      timer = setTimeout(check, 400);
    });
  }
  markFromPage();
  drawGutter();
})();
