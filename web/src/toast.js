// Short notices in the corner: conflicts, live patches from others, errors of background work.

const box = () => document.getElementById("toasts");

export function toast(text, kind = "info", ms = 5000) {
  const el = document.createElement("div");
  el.className = `toast ${kind}`;
  el.textContent = text;
  box().append(el);
  setTimeout(() => el.remove(), ms);
  return el;
}
