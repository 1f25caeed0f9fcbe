// CSV import with progress: the file is sent in parts of BATCH lines (each
// part with the header, and the number of its first line), each part answered
// in JSON with a result per row, so the page shows progress and the failed
// rows as they come. Without this script the form posts the whole file.
"use strict";

(function () {
  const BATCH = 20;
  const form = document.querySelector("form[data-csv-import]");
  if (!form) return;
  const progressBox = document.querySelector("[data-import-progress]");
  const progress = progressBox.querySelector("progress");
  const status = document.querySelector("[data-import-status]");
  const report = document.querySelector("[data-import-report]");
  const summary = document.querySelector("[data-import-summary]");
  const failures = document.querySelector("[data-import-failures]");

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text;
    row.append(td);
  }

  form.addEventListener("submit", async (event) => {
    const file = form.querySelector("input[type=file]").files[0];
    if (!file) return; // the server answers with the field's error
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    const lines = (await file.text()).replace(/^\ufeff/, "").split(/\r?\n/);
    let header = "";
    let start = 0;
    if (/^\s*address\s*,/i.test(lines[0] || "")) { header = lines[0]; start = 1; }
    const total = lines.slice(start).filter((l) => l.trim()).length;
    let done = 0, created = 0, failed = 0;
    failures.replaceChildren();
    progressBox.hidden = false;
    report.hidden = false;
    progress.max = Math.max(total, 1);
    const token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
    try {
      for (let i = start; i < lines.length; i += BATCH) {
        const part = lines.slice(i, i + BATCH);
        if (!part.some((l) => l.trim())) continue;
        const body = new FormData();
        body.append("csrfmiddlewaretoken", token);
        body.append("csv", (header ? header + "\n" : "") + part.join("\n"));
        body.append("first_line", String(header ? i : i + 1));
        const response = await fetch(form.action || window.location.href, {
          method: "POST", body, headers: { "X-CSRFToken": token }, credentials: "same-origin",
        });
        if (!response.ok) throw new Error("the server answered " + response.status);
        const { results } = await response.json();
        for (const result of results) {
          done += 1;
          if (result.ok) { created += 1; continue; }
          failed += 1;
          const row = document.createElement("tr");
          cell(row, String(result.line)); cell(row, result.address); cell(row, result.error);
          failures.append(row);
        }
        progress.value = done;
        status.textContent = done + " of " + total + " rows done";
      }
      summary.textContent = created + " created, " + failed + " failed.";
    } catch (error) {
      summary.textContent = "The import stopped: " + error.message + ". " + created +
        " created so far.";
    } finally {
      button.disabled = false;
    }
  });
})();
