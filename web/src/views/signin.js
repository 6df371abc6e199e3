// Sign in with an API key. The key is checked with a cheap authenticated call before it is
// kept (in sessionStorage, for this tab only).

import { ApiError, api, describe, session } from "../api.js";
import { h } from "../dom.js";

export function mountSignIn(root) {
  const notice = sessionStorage.getItem("patchbay.signinNotice");
  sessionStorage.removeItem("patchbay.signinNotice");
  const input = h("input", { id: "api-key", name: "api-key", type: "password", autocomplete: "off", spellcheck: "false", required: true, placeholder: "pb_…" });
  const message = h("p", { class: notice ? "form-error" : "hint", id: "signin-message" }, notice ?? "The key stays in this tab's session storage and is sent only to this server.");
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");

  async function submit(e) {
    e.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    button.disabled = true;
    message.className = "hint";
    message.textContent = "Checking the key…";
    try {
      await api("GET", "/workflows?limit=1", { key });
      session.key = key;
      location.hash = "#/workflows";
    } catch (err) {
      message.className = "form-error";
      message.textContent =
        err instanceof ApiError && err.status === 401 ? "That key was not accepted." : `Could not sign in: ${describe(err)}`;
    } finally {
      button.disabled = false;
    }
  }

  root.append(
    h("section", { class: "signin card" },
      h("h1", {}, "Sign in"),
      h("p", { class: "lead" }, "Patchbay workflows are edited as patches and materialized in your browser."),
      h("form", { onsubmit: submit, id: "signin-form" },
        h("label", { for: "api-key" }, "API key"),
        input,
        message,
        h("div", { class: "actions" }, button),
      ),
    ),
  );
  input.focus();
}
