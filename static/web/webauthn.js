// Security keys (WebAuthn): a form with data-webauthn="create" or "get" asks the
// browser for a new credential or for an assertion, with the options the page
// carries in <script type="application/json" id="webauthn-options"> (JSON with
// base64url binaries, as apps/directory/security_keys.py makes them), puts the
// answer, as JSON with base64url binaries again, in the form's "credential"
// field and sends the form. The server checks everything; this only converts.
"use strict";

(() => {
  function fromBase64url(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    return Uint8Array.from(binary, (c) => c.charCodeAt(0)).buffer;
  }

  function toBase64url(buffer) {
    let binary = "";
    for (const byte of new Uint8Array(buffer)) binary += String.fromCharCode(byte);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function withBuffers(descriptors) {
    return (descriptors || []).map((d) => ({ ...d, id: fromBase64url(d.id) }));
  }

  function creationOptions(options) {
    return {
      ...options,
      challenge: fromBase64url(options.challenge),
      user: { ...options.user, id: fromBase64url(options.user.id) },
      excludeCredentials: withBuffers(options.excludeCredentials),
    };
  }

  function requestOptions(options) {
    return {
      ...options,
      challenge: fromBase64url(options.challenge),
      allowCredentials: withBuffers(options.allowCredentials),
    };
  }

  function asJSON(credential) {
    const response = credential.response;
    const answer = {
      clientDataJSON: toBase64url(response.clientDataJSON),
    };
    if (response.attestationObject) {
      answer.attestationObject = toBase64url(response.attestationObject);
      answer.transports = response.getTransports ? response.getTransports() : [];
    } else {
      answer.authenticatorData = toBase64url(response.authenticatorData);
      answer.signature = toBase64url(response.signature);
      if (response.userHandle) answer.userHandle = toBase64url(response.userHandle);
    }
    return JSON.stringify({
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      response: answer,
      clientExtensionResults: credential.getClientExtensionResults(),
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
    });
  }

  function showError(form, text) {
    const place = form.querySelector("[data-webauthn-error]");
    if (place) {
      place.textContent = text;
      place.hidden = false;
    }
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    const ceremony = form.dataset && form.dataset.webauthn;
    if (!ceremony) return;
    event.preventDefault();
    if (!window.PublicKeyCredential) {
      showError(form, "This browser cannot use security keys.");
      return;
    }
    const options = JSON.parse(document.getElementById("webauthn-options").textContent);
    try {
      const credential = ceremony === "create"
        ? await navigator.credentials.create({ publicKey: creationOptions(options) })
        : await navigator.credentials.get({ publicKey: requestOptions(options) });
      form.elements.credential.value = asJSON(credential);
    } catch (error) {
      // NotAllowedError: cancelled, timed out, or no key answered.
      showError(form, error.name === "InvalidStateError"
        ? "That key is registered already."
        : "No security key answered. Try again, or use another way to sign in.");
      return;
    }
    form.submit(); // sends without a second submit event
  });
})();
