// Webmail behaviour, on top of pages that work without it: keyboard
// shortcuts, drag and drop onto folders, live updates from the server's
// event stream, select-all, confirmations, and sizing the message frame.
(function () {
  "use strict";

  const layout = document.querySelector(".mail-layout");
  if (!layout) return;

  function rows() {
    return Array.from(document.querySelectorAll(".msg-row"));
  }

  function csrfToken() {
    const field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  // --- select all, confirmations -------------------------------------------------
  document.addEventListener("change", function (event) {
    const box = event.target;
    if (box.matches && box.matches("[data-select-all]")) {
      const form = box.closest("form");
      form.querySelectorAll("input[name=ids]").forEach(function (item) { item.checked = box.checked; });
    }
  });
  document.addEventListener("click", function (event) {
    const button = event.target.closest("[data-confirm]");
    if (button && !window.confirm(button.dataset.confirm)) event.preventDefault();
    const help = event.target.closest("[data-help]");
    if (help) openHelp();
  });

  // --- the message frame grows to its content (same origin, no script inside) ---
  function fitFrame(frame) {
    try {
      const doc = frame.contentDocument;
      if (doc && doc.documentElement) {
        frame.style.height = Math.max(doc.documentElement.scrollHeight + 24, 160) + "px";
      }
    } catch (error) { /* not ours to measure */ }
  }
  document.querySelectorAll(".mail-frame").forEach(function (frame) {
    frame.addEventListener("load", function () { fitFrame(frame); });
    fitFrame(frame);
  });

  // --- keyboard ------------------------------------------------------------------
  let focused = -1;
  function focusRow(index) {
    const list = rows();
    if (!list.length) return;
    focused = Math.max(0, Math.min(index, list.length - 1));
    list.forEach(function (row, i) { row.classList.toggle("focused", i === focused); });
    const link = list[focused].querySelector(".msg-link");
    if (link) link.focus();
  }
  function focusedRow() {
    const list = rows();
    return focused >= 0 && focused < list.length ? list[focused] : null;
  }

  function go(selector) {
    const link = document.querySelector(selector);
    if (link) window.location.assign(link.href);
  }

  function act(action) {
    const reading = document.getElementById("reading-form");
    if (reading) {
      const button = reading.querySelector('button[value="' + action + '"]');
      if (button) button.click();
      return;
    }
    const form = document.getElementById("list-form");
    if (!form) return;
    if (!form.querySelector("input[name=ids]:checked")) {
      const row = focusedRow();
      if (!row) return;
      row.querySelector("input[name=ids]").checked = true;
    }
    const button = form.querySelector('button[value="' + action + '"]');
    if (button) button.click();
  }

  function openHelp() {
    const dialog = document.getElementById("shortcuts");
    if (dialog && !dialog.open) dialog.showModal();
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target.closest && target.closest("input, textarea, select, [contenteditable], dialog[open]")) return;
    const reading = document.querySelector(".reading");
    switch (event.key) {
      case "j":
        if (reading && reading.dataset.older) window.location.assign(reading.dataset.older);
        else focusRow(focused + 1);
        break;
      case "k":
        if (reading && reading.dataset.newer) window.location.assign(reading.dataset.newer);
        else focusRow(focused - 1);
        break;
      case "x": {
        const row = focusedRow();
        if (row) { const box = row.querySelector("input[name=ids]"); box.checked = !box.checked; }
        break;
      }
      case "r": go('[data-key="r"]'); break;
      case "a": go('[data-key="a"]'); break;
      case "f": go('[data-key="f"]'); break;
      case "c": go('[data-key="c"]'); break;
      case "e": act("archive"); break;
      case "#": case "Delete": act("delete"); break;
      case "/": {
        const search = document.getElementById("search-q");
        if (search) search.focus();
        break;
      }
      case "?": openHelp(); break;
      default: return;
    }
    event.preventDefault();
  });

  // --- drag messages onto a folder -----------------------------------------------
  document.addEventListener("dragstart", function (event) {
    const row = event.target.closest && event.target.closest(".msg-row");
    if (!row) return;
    const box = row.querySelector("input[name=ids]");
    let ids = [row.dataset.id];
    if (box && box.checked) {
      ids = Array.from(document.querySelectorAll("input[name=ids]:checked")).map(function (b) { return b.value; });
    }
    event.dataTransfer.setData("application/x-mailhost-ids", ids.join(","));
    event.dataTransfer.effectAllowed = "move";
    row.classList.add("dragging");
  });
  document.addEventListener("dragend", function (event) {
    const row = event.target.closest && event.target.closest(".msg-row");
    if (row) row.classList.remove("dragging");
  });
  function folderLink(event) {
    return event.target.closest && event.target.closest(".folder-list a[data-folder]");
  }
  document.addEventListener("dragover", function (event) {
    const link = folderLink(event);
    if (!link || !event.dataTransfer.types.includes("application/x-mailhost-ids")) return;
    event.preventDefault();
    link.classList.add("drop-target");
  });
  document.addEventListener("dragleave", function (event) {
    const link = folderLink(event);
    if (link) link.classList.remove("drop-target");
  });
  document.addEventListener("drop", function (event) {
    const link = folderLink(event);
    if (!link) return;
    event.preventDefault();
    link.classList.remove("drop-target");
    const ids = event.dataTransfer.getData("application/x-mailhost-ids");
    if (!ids) return;
    const body = new FormData();
    body.append("action", "move");
    body.append("target", link.dataset.folder);
    ids.split(",").forEach(function (id) { body.append("ids", id); });
    fetch(layout.dataset.actUrl || "/mail/act/", {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken(), "HX-Request": "true" },
    }).then(function () { window.location.reload(); });
  });

  // --- live updates ----------------------------------------------------------------
  function refresh(url, id) {
    const current = document.getElementById(id);
    if (!current || !url) return Promise.resolve();
    return fetch(url, { credentials: "same-origin", headers: { "HX-Request": "true" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) return;
        const checked = new Set(Array.from(current.querySelectorAll("input[name=ids]:checked")).map(function (b) { return b.value; }));
        const holder = document.createElement("div");
        holder.innerHTML = html;
        const fresh = holder.querySelector("#" + id) || holder;
        fresh.querySelectorAll("input[name=ids]").forEach(function (box) { box.checked = checked.has(box.value); });
        if (fresh === holder) current.innerHTML = holder.innerHTML;
        else current.replaceWith(fresh);
        focused = -1;
      });
  }

  function listUrl() {
    const list = document.getElementById("message-list");
    if (!list || !list.dataset.listUrl) return null;
    const url = new URL(list.dataset.listUrl, window.location.href);
    url.searchParams.set("partial", "list");
    return url.toString();
  }

  if (window.EventSource && layout.dataset.eventsUrl) {
    const source = new EventSource(layout.dataset.eventsUrl);
    source.addEventListener("changed", function () {
      refresh(layout.dataset.sidebarUrl, "sidebar");
      refresh(listUrl(), "message-list");
    });
  }
})();
