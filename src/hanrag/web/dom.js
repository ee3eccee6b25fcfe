// DOM helpers. Every text goes in through textContent or attributes: nothing here (or
// anywhere in the app) parses HTML from data.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else if (child instanceof Node) node.appendChild(child);
    else node.appendChild(document.createTextNode(String(child)));
  }
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.setAttribute("class", value);
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node && !key.includes("-") && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
}

/** h("button", {class: "x", onClick: fn}, "text", child...) */
export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

/** The same for SVG elements. */
export function s(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

let liveTimer = null;
/** Say something to screen readers (and show it in the status bar). */
export function announce(text) {
  const region = document.getElementById("live");
  if (!region) return;
  region.textContent = "";
  clearTimeout(liveTimer);
  liveTimer = setTimeout(() => {
    region.textContent = text;
  }, 30);
}

/** A short notice at the bottom of the screen (role=status). */
export function toast(text, kind = "info") {
  const host = document.getElementById("toasts");
  if (!host) return;
  const item = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" }, text);
  host.appendChild(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 3500);
}

/** An inline error box (Korean message, with the server's code when there is one). */
export function errorBox(error, extra) {
  const message = error && error.message ? error.message : String(error);
  const code = error && error.code ? error.code : null;
  return h(
    "div",
    { class: "error-box", role: "alert" },
    h("strong", null, message),
    code ? h("span", { class: "error-code" }, ` (코드: ${code})`) : null,
    extra || null,
  );
}

/**
 * A modal dialog (never window.confirm/prompt): resolves with true (confirm), the form's
 * values (when fields are given) or null (cancelled).
 */
export function openDialog({ title, body, confirmText = "확인", cancelText = "취소", danger = false, fields }) {
  return new Promise((resolve) => {
    const inputs = {};
    const form = h("form", { method: "dialog", class: "dialog-form" });
    const heading = h("h2", { id: `dlg-${Date.now()}` }, title);
    form.appendChild(heading);
    if (body) form.appendChild(typeof body === "string" ? h("p", null, body) : body);
    for (const field of fields || []) {
      const id = `f-${field.name}-${Math.random().toString(36).slice(2, 8)}`;
      let input;
      if (field.type === "select") {
        input = h("select", { id, name: field.name });
        for (const [value, label] of field.options) {
          input.appendChild(h("option", { value, selected: value === field.value }, label));
        }
      } else if (field.type === "textarea") {
        input = h("textarea", { id, name: field.name, rows: 3, maxlength: field.maxlength || null });
        input.value = field.value || "";
      } else {
        input = h("input", {
          id,
          name: field.name,
          type: field.type || "text",
          required: field.required || null,
          autocomplete: "off",
        });
        input.value = field.value || "";
      }
      inputs[field.name] = input;
      form.appendChild(
        h("div", { class: "field" }, h("label", { for: id }, field.label), input, field.hint ? h("small", null, field.hint) : null),
      );
    }
    const cancel = h("button", { type: "button", class: "btn" }, cancelText);
    const ok = h("button", { type: "submit", class: danger ? "btn btn-danger" : "btn btn-primary" }, confirmText);
    form.appendChild(h("div", { class: "dialog-actions" }, cancel, ok));
    const dialog = h("dialog", { class: "dialog", "aria-labelledby": heading.id }, form);
    const opener = document.activeElement;
    let result = null;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (fields) {
        result = {};
        for (const [name, input] of Object.entries(inputs)) result[name] = input.value;
      } else result = true;
      dialog.close();
    });
    cancel.addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => {
      dialog.remove();
      if (opener && opener.focus) opener.focus();
      resolve(result);
    });
    document.body.appendChild(dialog);
    dialog.showModal();
    const first = fields ? Object.values(inputs)[0] : ok;
    if (first) first.focus();
  });
}

/** Copy text to the clipboard (falls back to a hidden textarea). */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = h("textarea", { class: "visually-hidden", "aria-hidden": "true" });
    area.value = text;
    document.body.appendChild(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch {
      ok = false;
    }
    area.remove();
    return ok;
  }
}

/** Inline SVG icons (paths only, drawn with currentColor). */
const ICONS = {
  send: "M3 11l18-8-8 18-2-8-8-2z",
  stop: "M6 6h12v12H6z",
  copy: "M8 8h11v13H8zM5 3h11v3H7v11H5z",
  retry: "M4 12a8 8 0 0 1 14-5.3V4h2v6h-6V8h2.9A6 6 0 1 0 18 12h2a8 8 0 0 1-16 0z",
  up: "M2 10h4v11H2zM8 21h9.5a2 2 0 0 0 2-1.6l1.4-7A2 2 0 0 0 19 10h-5.5l.8-4.3A1.7 1.7 0 0 0 12.6 4L8 9.5z",
  down: "M2 3h4v11H2zM8 3h9.5a2 2 0 0 1 2 1.6l1.4 7A2 2 0 0 1 19 14h-5.5l.8 4.3a1.7 1.7 0 0 1-1.7 1.7L8 14.5z",
  close: "M6 4.6L12 10.6l6-6L19.4 6l-6 6 6 6-1.4 1.4-6-6-6 6L4.6 18l6-6-6-6z",
  menu: "M3 6h18v2H3zM3 11h18v2H3zM3 16h18v2H3z",
  plus: "M11 4h2v7h7v2h-7v7h-2v-7H4v-2h7z",
  clip: "M16.5 6.5L8 15a2 2 0 0 0 2.8 2.8l9-9a4 4 0 0 0-5.6-5.6l-9 9a6 6 0 0 0 8.5 8.5L21 13.4 19.6 12l-7.3 7.3a4 4 0 0 1-5.7-5.7l9-9a2 2 0 0 1 2.9 2.9l-9 9-.6-.6L17.9 8z",
  file: "M6 2h8l6 6v14H6zM13 3.5V9h5.5z",
  download: "M11 3h2v10l3.5-3.5 1.4 1.4L12 16.8l-5.9-5.9 1.4-1.4L11 13zM4 19h16v2H4z",
  filter: "M3 4h18l-7 8v6l-4 2v-8z",
};

export function icon(name, label) {
  const svg = s(
    "svg",
    { viewBox: "0 0 24 24", width: 18, height: 18, class: "icon", "aria-hidden": label ? null : "true", role: label ? "img" : null },
    s("path", { d: ICONS[name] || "", fill: "currentColor" }),
  );
  if (label) svg.appendChild(s("title", null, label));
  return svg;
}
