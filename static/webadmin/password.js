// Password boxes of the admin panel (input[data-password-tools]): a generator,
// a show/hide button and strength feedback. The server's own check (length,
// common passwords) is still the one that decides.
"use strict";

(function () {
  const ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789-_.!";
  const LEVELS = ["too short", "weak", "fair", "good", "strong"];

  function generate(length) {
    const values = new Uint32Array(length);
    crypto.getRandomValues(values);
    return Array.from(values, (v) => ALPHABET[v % ALPHABET.length]).join("");
  }

  // A rough estimate in bits: the size of the character classes used to the
  // power of the length, less for repeats and runs of one class.
  function strength(password) {
    if (password.length < 8) return 0;
    let pool = 0;
    if (/[a-z]/.test(password)) pool += 26;
    if (/[A-Z]/.test(password)) pool += 26;
    if (/[0-9]/.test(password)) pool += 10;
    if (/[^a-zA-Z0-9]/.test(password)) pool += 33;
    const distinct = new Set(password).size;
    const bits = Math.log2(Math.max(pool, 2)) * Math.min(password.length, distinct * 2);
    if (bits < 40) return 1;
    if (bits < 60) return 2;
    if (bits < 80) return 3;
    return 4;
  }

  function enhance(input) {
    const tools = document.createElement("div");
    tools.className = "password-tools";
    const generateButton = document.createElement("button");
    generateButton.type = "button";
    generateButton.textContent = "Generate";
    const showButton = document.createElement("button");
    showButton.type = "button";
    showButton.textContent = "Show";
    showButton.setAttribute("aria-pressed", "false");
    const meter = document.createElement("meter");
    meter.min = 0; meter.max = 4; meter.low = 2; meter.high = 3; meter.optimum = 4; meter.value = 0;
    meter.id = input.id + "_strength";
    const label = document.createElement("span");
    label.className = "password-strength";
    label.setAttribute("aria-live", "polite");
    tools.append(generateButton, showButton, meter, label);
    input.insertAdjacentElement("afterend", tools);

    function update() {
      const level = strength(input.value);
      meter.value = level;
      label.textContent = input.value ? "Strength: " + LEVELS[level] : "";
    }
    generateButton.addEventListener("click", () => {
      input.value = generate(16);
      input.type = "text";
      showButton.textContent = "Hide";
      showButton.setAttribute("aria-pressed", "true");
      update();
      input.focus();
      input.select();
    });
    showButton.addEventListener("click", () => {
      const show = input.type === "password";
      input.type = show ? "text" : "password";
      showButton.textContent = show ? "Hide" : "Show";
      showButton.setAttribute("aria-pressed", String(show));
    });
    input.addEventListener("input", update);
    update();
  }

  document.querySelectorAll("input[data-password-tools]").forEach(enhance);
})();
