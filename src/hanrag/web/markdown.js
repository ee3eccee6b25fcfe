// A small, safe Markdown renderer. It never parses HTML: the text is split into blocks
// and inline pieces, and every piece becomes a DOM node built with createElement and
// textContent, so `<script>`, `<img onerror=...>` or any other markup in an answer or a
// document shows as the characters it is and runs nothing (the escaping is done by the
// DOM). The subset: headings, paragraphs, bold, italic, inline and fenced code, lists,
// block quotes, rules, pipe tables, links (http, https and mailto only; rel=noopener
// noreferrer) and citation markers [n]. Images are never loaded: `![alt](url)` shows its
// alt text. Anything else stays literal text.

const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);

/** The URL if it is absolute http(s) or mailto, else null (javascript:, data:, relative...). */
export function safeHref(raw) {
  if (typeof raw !== "string" || !raw.trim()) return null;
  let parsed;
  try {
    parsed = new URL(raw.trim());
  } catch {
    return null;
  }
  return SAFE_PROTOCOLS.has(parsed.protocol) ? parsed.href : null;
}

function el(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

function text(value) {
  return document.createTextNode(value);
}

// A link target: no spaces, parentheses only in balanced pairs (one level).
const LINK_TARGET = "(?:[^()\\s]|\\([^()\\s]*\\))*";
// code span | image | link | citation | bold | italic | bare URL
const INLINE = new RegExp(
  [
    "(`+)([^`][\\s\\S]*?)\\1(?!`)", // 1, 2: code
    `!\\[([^\\]\\n]*)\\]\\((${LINK_TARGET})(?:\\s+"[^"]*")?\\)`, // 3, 4: image (never loaded)
    `\\[([^\\]\\n]+)\\]\\((${LINK_TARGET})(?:\\s+"[^"]*")?\\)`, // 5, 6: link
    "\\[(\\d{1,3}(?:\\s*,\\s*\\d{1,3})*)\\]", // 7: citation
    "\\*\\*(?=\\S)([\\s\\S]*?\\S)\\*\\*", // 8: bold
    "__(?=\\S)([\\s\\S]*?\\S)__", // 9: bold
    "\\*(?=[^\\s*])([\\s\\S]*?[^\\s*])\\*", // 10: italic
    "(?<![\\p{L}\\p{N}_])_(?=\\S)([\\s\\S]*?\\S)_(?![\\p{L}\\p{N}_])", // 11: italic
    "(https?:\\/\\/[^\\s<>\"'`\\[\\]()]*[^\\s<>\"'`\\[\\]().,;:!?])", // 12: bare URL
  ].join("|"),
  "gu",
);

function link(href, label) {
  const a = el("a");
  a.href = href;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  a.textContent = label;
  return a;
}

/** Inline Markdown of `source` appended to `parent`. */
function inline(source, parent, options, depth = 0) {
  if (depth > 8) {
    parent.appendChild(text(source));
    return;
  }
  const lines = source.split("\n");
  lines.forEach((line, index) => {
    if (index > 0) parent.appendChild(el("br"));
    inlineLine(line, parent, options, depth);
  });
}

function inlineLine(source, parent, options, depth) {
  let last = 0;
  const pattern = new RegExp(INLINE.source, INLINE.flags);
  let match;
  while ((match = pattern.exec(source)) !== null) {
    if (match.index > last) parent.appendChild(text(source.slice(last, match.index)));
    last = pattern.lastIndex;
    if (match[2] !== undefined) {
      const code = el("code");
      code.textContent = match[2];
      parent.appendChild(code);
    } else if (match[4] !== undefined) {
      // An image is shown as its description only: nothing is fetched.
      const alt = match[3] ? `[이미지: ${match[3]}]` : "[이미지]";
      const span = el("span", "md-image");
      span.textContent = alt;
      parent.appendChild(span);
    } else if (match[5] !== undefined) {
      const href = safeHref(match[6]);
      if (href) parent.appendChild(link(href, match[5]));
      else parent.appendChild(text(match[5]));
    } else if (match[7] !== undefined) {
      const numbers = match[7].split(",").map((n) => Number.parseInt(n.trim(), 10));
      if (options.cite) {
        const group = el("span", "cite-group");
        numbers.forEach((n) => group.appendChild(options.cite(n)));
        parent.appendChild(group);
      } else parent.appendChild(text(match[0]));
    } else if (match[8] !== undefined || match[9] !== undefined) {
      const strong = el("strong");
      inlineLine(match[8] ?? match[9], strong, options, depth + 1);
      parent.appendChild(strong);
    } else if (match[10] !== undefined || match[11] !== undefined) {
      const em = el("em");
      inlineLine(match[10] ?? match[11], em, options, depth + 1);
      parent.appendChild(em);
    } else if (match[12] !== undefined) {
      const href = safeHref(match[12]);
      parent.appendChild(href ? link(href, match[12]) : text(match[12]));
    }
    if (match[0].length === 0) pattern.lastIndex += 1;
  }
  if (last < source.length) parent.appendChild(text(source.slice(last)));
}

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)\s*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const LIST = /^( *)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_SEP = /^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$/;

function isTableStart(lines, i) {
  return lines[i].includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1]) && lines[i + 1].includes("-");
}

function splitRow(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  return row.split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/\\\|/g, "|"));
}

function startsBlock(lines, i) {
  const line = lines[i];
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || LIST.test(line) || isTableStart(lines, i);
}

function renderTable(lines, start, parent, options) {
  const head = splitRow(lines[start]);
  const aligns = splitRow(lines[start + 1]).map((cell) =>
    cell.startsWith(":") && cell.endsWith(":") ? "center" : cell.endsWith(":") ? "right" : cell.startsWith(":") ? "left" : "",
  );
  const wrap = el("div", "table-wrap");
  const table = el("table");
  const thead = el("thead");
  const headRow = el("tr");
  head.forEach((cell, index) => {
    const th = el("th");
    th.scope = "col";
    if (aligns[index]) th.style.textAlign = aligns[index];
    inlineLine(cell, th, options, 0);
    headRow.appendChild(th);
  });
  thead.appendChild(headRow);
  table.appendChild(thead);
  const body = el("tbody");
  let i = start + 2;
  while (i < lines.length && lines[i].includes("|") && lines[i].trim()) {
    const row = el("tr");
    splitRow(lines[i]).forEach((cell, index) => {
      if (index >= head.length) return;
      const td = el("td");
      if (aligns[index]) td.style.textAlign = aligns[index];
      inlineLine(cell, td, options, 0);
      row.appendChild(td);
    });
    body.appendChild(row);
    i += 1;
  }
  table.appendChild(body);
  wrap.appendChild(table);
  parent.appendChild(wrap);
  return i;
}

function renderList(lines, start, parent, options, depth) {
  const first = LIST.exec(lines[start]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const list = el(ordered ? "ol" : "ul");
  if (ordered) {
    const number = Number.parseInt(first[2], 10);
    if (number !== 1) list.start = number;
  }
  let i = start;
  while (i < lines.length) {
    const match = LIST.exec(lines[i]);
    if (!match || match[1].length !== indent || /\d/.test(match[2]) !== ordered) break;
    const body = [match[3]];
    i += 1;
    // Continuation: more-indented lines (a nested list or a wrapped line), or a lazy
    // paragraph line that starts no block.
    while (i < lines.length && lines[i].trim()) {
      const nested = LIST.exec(lines[i]);
      const lineIndent = lines[i].length - lines[i].trimStart().length;
      if (nested && nested[1].length <= indent) break;
      if (!nested && lineIndent <= indent && startsBlock(lines, i)) break;
      body.push(lines[i].slice(Math.min(lineIndent, indent + 2)));
      i += 1;
    }
    const item = el("li");
    if (body.length === 1) inline(body[0], item, options);
    else renderBlocks(body, item, options, depth + 1, true);
    list.appendChild(item);
    // A blank line between items of the same list keeps the list going.
    if (i + 1 < lines.length && !lines[i]?.trim()) {
      const next = LIST.exec(lines[i + 1]);
      if (next && next[1].length === indent && /\d/.test(next[2]) === ordered) i += 1;
    }
  }
  parent.appendChild(list);
  return i;
}

function renderBlocks(lines, parent, options, depth = 0, tight = false) {
  if (depth > 6) {
    parent.appendChild(text(lines.join("\n")));
    return;
  }
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i += 1;
      continue;
    }
    const fence = FENCE.exec(line);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i += 1; // the closing fence (or the end of a text still streaming)
      const pre = el("pre");
      const code = el("code");
      code.textContent = body.join("\n");
      pre.appendChild(code);
      parent.appendChild(pre);
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      // Answers' headings sit below the page's own (h1, h2).
      const level = Math.min(6, heading[1].length + 2);
      const node = el(`h${level}`, "md-heading");
      inlineLine(heading[2], node, options, 0);
      parent.appendChild(node);
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      parent.appendChild(el("hr"));
      i += 1;
      continue;
    }
    if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && QUOTE.test(lines[i])) body.push(QUOTE.exec(lines[i++])[1]);
      const quote = el("blockquote");
      renderBlocks(body, quote, options, depth + 1);
      parent.appendChild(quote);
      continue;
    }
    if (isTableStart(lines, i)) {
      i = renderTable(lines, i, parent, options);
      continue;
    }
    if (LIST.test(line)) {
      i = renderList(lines, i, parent, options, depth);
      continue;
    }
    const body = [line];
    i += 1;
    while (i < lines.length && lines[i].trim() && !startsBlock(lines, i)) body.push(lines[i++]);
    const paragraph = el(tight ? "div" : "p");
    inline(body.map((l) => l.trim()).join("\n"), paragraph, options);
    parent.appendChild(paragraph);
  }
}

/**
 * The Markdown `source` as a DocumentFragment of safe nodes.
 * options.cite(n) → a Node for the citation marker [n] (else the marker stays text).
 */
export function renderMarkdown(source, options = {}) {
  const fragment = document.createDocumentFragment();
  const lines = String(source ?? "").replace(/\r\n?/g, "\n").split("\n");
  renderBlocks(lines, fragment, options);
  return fragment;
}
