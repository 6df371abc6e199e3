// The UI's entry point: a hash router (#/workflows, #/workflows/ID, #/plugins, #/signin) that
// mounts one view at a time. A view is `mount(root, params) -> cleanup`; the cleanup stops its
// worker and timers when the user navigates away.

import { session } from "./api.js";
import { mountSignIn } from "./views/signin.js";
import { mountWorkflows } from "./views/workflows.js";
import { mountWorkflow } from "./views/workflow.js";
import { mountPlugins } from "./views/plugins.js";

const routes = [
  [/^#\/signin$/, mountSignIn, null, false],
  [/^#\/workflows$/, mountWorkflows, "workflows", true],
  [/^#\/workflows\/([^/]+)$/, mountWorkflow, "workflows", true],
  [/^#\/plugins$/, mountPlugins, "plugins", true],
];

const main = document.getElementById("main");
const nav = document.getElementById("nav");
let cleanup = null;

function route() {
  const hash = location.hash || "#/workflows";
  const hit = routes.map(([re, view, section, auth]) => ({ m: hash.match(re), view, section, auth })).find((r) => r.m);
  if (!hit) return void (location.hash = "#/workflows");
  if (hit.auth && !session.key) return void (location.hash = "#/signin");
  cleanup?.();
  cleanup = null;
  main.replaceChildren();
  nav.hidden = !session.key;
  for (const a of nav.querySelectorAll("a")) a.classList.toggle("active", a.dataset.section === hit.section);
  const params = hit.m.slice(1).map(decodeURIComponent);
  cleanup = hit.view(main, ...params) ?? null;
}

document.getElementById("signout").addEventListener("click", () => {
  session.key = null;
  location.hash = "#/signin";
});

// A 401 anywhere means the key stopped working: back to sign-in, saying why.
addEventListener("patchbay:unauthorized", () => {
  session.key = null;
  sessionStorage.setItem("patchbay.signinNotice", "Your API key was not accepted any more. Sign in again.");
  location.hash = "#/signin";
});

addEventListener("hashchange", route);
route();
