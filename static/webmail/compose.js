// The compose page: drafts saved a moment after each change, address
// suggestions for To/Cc/Bcc, and a small rich-text editor. Without this file
// the form still works: plain text, "Save draft" and "Send".
(function () {
  "use strict";
  const form = document.getElementById("compose-form");
  if (!form) return;
  const csrf = form.querySelector("[name=csrfmiddlewaretoken]").value;
  const status = document.getElementById("autosave-status");
  const draftField = form.elements.namedItem("draft");
  const sourceField = form.elements.namedItem("attachments_from");
  const htmlField = form.elements.namedItem("html_body");
  const body = form.elements.namedItem("body");

  // --- rich text -------------------------------------------------------------
  const toggle = form.querySelector(".rich-toggle");
  const richMode = document.getElementById("rich-mode");
  const richEditor = form.querySelector(".rich-editor");
  const richArea = document.getElementById("rich-area");
  const plainEditor = form.querySelector(".plain-editor");
  toggle.hidden = false;

  function textToHtml(text) {
    const div = document.createElement("div");
    div.textContent = text;
    return div.innerHTML.replace(/\n/g, "<br>");
  }
  function showRich(on) {
    richEditor.hidden = !on;
    plainEditor.hidden = on;
    if (on) {
      // html_body comes from the server, cleaned by nh3.
      richArea.innerHTML = htmlField.value || textToHtml(body.value);
      htmlField.value = richArea.innerHTML;
    } else if (htmlField.value) {
      body.value = richArea.innerText;
      htmlField.value = "";
    }
  }
  richMode.addEventListener("change", function () { showRich(richMode.checked); changed(); });
  richArea.addEventListener("input", function () { htmlField.value = richArea.innerHTML; });
  form.querySelectorAll(".rich-toolbar button").forEach(function (button) {
    button.addEventListener("click", function () {
      const command = button.dataset.command;
      let value = null;
      if (command === "createLink") {
        value = window.prompt("Link address (https://…)");
        if (!value) return;
      }
      richArea.focus();
      document.execCommand(command, false, value);
      htmlField.value = richArea.innerHTML;
      changed();
    });
  });
  if (richMode.checked) showRich(true);

  // --- autosave --------------------------------------------------------------
  let timer = null;
  let saving = null;
  function changed() {
    clearTimeout(timer);
    status.textContent = "Changes not saved yet";
    timer = setTimeout(save, 2000);
  }
  function renumberKept() {
    // The new draft holds the kept attachments, in order: 0, 1, 2…
    let index = 0;
    form.querySelectorAll("[name=keep]").forEach(function (box) {
      if (box.checked) { box.value = String(index++); } else { box.closest("li").remove(); }
    });
  }
  function save() {
    if (saving) { changed(); return saving; }
    const data = new FormData(form);
    data.delete("attachments");
    data.delete("action");
    saving = fetch(form.dataset.autosaveUrl, {
      method: "POST", body: data, headers: {"X-CSRFToken": csrf}, credentials: "same-origin",
    }).then(function (response) {
      return response.json().then(function (answer) {
        if (!response.ok) { status.textContent = "Draft not saved: check the fields."; return; }
        draftField.value = answer.draft;
        sourceField.value = answer.draft;
        renumberKept();
        status.textContent = "Draft saved at " + new Date().toLocaleTimeString();
      });
    }).catch(function () {
      status.textContent = "Draft not saved: no connection.";
    }).finally(function () { saving = null; });
    return saving;
  }
  form.addEventListener("input", function (event) {
    if (event.target.type !== "file") changed();
  });
  form.addEventListener("submit", function (event) {
    // Never send while a save is replacing the draft this form points at.
    clearTimeout(timer);
    if (saving) {
      event.preventDefault();
      const submitter = event.submitter;
      saving.then(function () { form.requestSubmit(submitter); });
    }
  });

  // --- address suggestions ---------------------------------------------------
  const list = document.getElementById("address-suggestions");
  let suggestTimer = null;
  ["to", "cc", "bcc"].forEach(function (name) {
    const input = form.elements.namedItem(name);
    input.addEventListener("input", function () {
      clearTimeout(suggestTimer);
      suggestTimer = setTimeout(function () { suggest(input); }, 250);
    });
  });
  function suggest(input) {
    const value = input.value;
    const cut = value.lastIndexOf(",") + 1;
    const head = value.slice(0, cut);
    const query = value.slice(cut).trim();
    if (query.length < 2) { list.replaceChildren(); return; }
    fetch(form.dataset.suggestUrl + "?q=" + encodeURIComponent(query), {credentials: "same-origin"})
      .then(function (response) { return response.json(); })
      .then(function (answer) {
        list.replaceChildren.apply(list, answer.addresses.map(function (address) {
          const option = document.createElement("option");
          option.value = (head ? head + " " : "") + address;
          option.label = address;
          return option;
        }));
      });
  }
})();
