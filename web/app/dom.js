// Small DOM helpers: elements from code (never from HTML strings), messages, confirmation, downloads.

export const $ = (id) => document.getElementById(id);

// h("li", {class: "x", onclick: f}, "text", child...)
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c != null && c !== false) el.append(c);
  return el;
}

// Shows lines (an ApiError's, or strings) in an errors box; nothing clears it.
export function showErrors(box, error) {
  box.replaceChildren();
  if (!error) return;
  const lines = Array.isArray(error) ? error : error.lines || [error.message || String(error)];
  for (const line of lines) box.append(h("p", {}, line));
}

// A modal yes/no; resolves true when confirmed.
export function confirmDialog(text, okLabel = "Delete") {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    document.getElementById("confirm-cancel").focus();
  });
}

// Saves a blob as a file (an <a download> on a blob: URL).
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name, class: "visually-hidden" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function formatDate(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function extensionOf(path, fallback) {
  const m = /\.([a-z0-9]+)$/i.exec(path || "");
  return m ? m[1].toLowerCase() : fallback;
}

// What a photo's status means to a person.
export function statusText(p) {
  switch (p.status) {
    case "queued":
      return "Queued";
    case "processing":
      return typeof p.progress === "number" ? `Upscaling ${Math.round(p.progress * 100)}%` : "Upscaling…";
    case "completed":
      return "Done";
    case "failed":
      return p.error ? `Failed: ${p.error}` : "Failed";
    default:
      return p.status;
  }
}
