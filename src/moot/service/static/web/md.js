// Markdown for untrusted model text, built as DOM nodes whose words are only ever set with textContent:
// no innerHTML, no images (nothing is fetched), links only to http(s) with rel="noopener noreferrer".
// Blocks: paragraphs, headings, lists, quotes, fenced code, rules. Inline: code, bold, italics, links.

const MAX_DEPTH = 4;

export function safeUrl(raw) {
  const text = String(raw || "").trim();
  if (!/^https?:\/\//i.test(text)) return null;
  try {
    const url = new URL(text);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

function el(tag, cls) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  return node;
}

// Inline: `code`, **bold**, __bold__, *em*, _em_, [text](http...), bare http(s) URLs.
const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*([^*\n][\s\S]*?)\*\*|__([^_\n][\s\S]*?)__|\*([^*\s][^*\n]*?)\*|(?<![\w])_([^_\s][^_\n]*?)_(?![\w])|\[([^\]\n]{1,500})\]\(([^()\s]{1,2000})\)|(https?:\/\/[^\s<>()]{1,2000}[^\s<>().,;:!?'"])/;

export function renderInline(text, parent, depth = 0) {
  let rest = String(text);
  while (rest.length) {
    const match = depth < MAX_DEPTH ? INLINE.exec(rest) : null;
    if (!match) {
      parent.appendChild(document.createTextNode(rest));
      return parent;
    }
    if (match.index > 0) parent.appendChild(document.createTextNode(rest.slice(0, match.index)));
    if (match[2] !== undefined) {
      const code = el("code");
      code.textContent = match[2];
      parent.appendChild(code);
    } else if (match[3] !== undefined || match[4] !== undefined) {
      renderInline(match[3] ?? match[4], parent.appendChild(el("strong")), depth + 1);
    } else if (match[5] !== undefined || match[6] !== undefined) {
      renderInline(match[5] ?? match[6], parent.appendChild(el("em")), depth + 1);
    } else if (match[7] !== undefined) {
      const href = safeUrl(match[8]);
      if (href) {
        const a = link(href);
        renderInline(match[7], a, depth + 1);
        parent.appendChild(a);
      } else {
        parent.appendChild(document.createTextNode(match[0])); // shown as written, never followed
      }
    } else if (match[9] !== undefined) {
      const href = safeUrl(match[9]);
      if (href) {
        const a = link(href);
        a.textContent = match[9];
        parent.appendChild(a);
      } else parent.appendChild(document.createTextNode(match[9]));
    }
    rest = rest.slice(match.index + match[0].length);
  }
  return parent;
}

function link(href) {
  const a = el("a");
  a.href = href;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  a.referrerPolicy = "no-referrer";
  return a;
}

const FENCE = /^\s{0,3}(```+|~~~+)\s*([\w+-]*)\s*$/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
const BULLET = /^(\s*)([-*+])\s+(.*)$/;
const NUMBER = /^(\s*)(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;

// Renders `text` into a fresh <div class="md">; returns it.
export function renderMarkdown(text, depth = 0) {
  const root = el("div", "md");
  const lines = String(text || "").replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  let para = [];
  const flush = () => {
    if (para.length) {
      const p = el("p");
      para.forEach((line, index) => {
        if (index) p.appendChild(el("br"));
        renderInline(line, p);
      });
      root.appendChild(p);
      para = [];
    }
  };
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if ((m = FENCE.exec(line))) {
      flush();
      const fence = m[1];
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence)) body.push(lines[i++]);
      i++;
      const pre = el("pre");
      const code = el("code");
      code.textContent = body.join("\n");
      pre.appendChild(code);
      root.appendChild(pre);
      continue;
    }
    if (!line.trim()) {
      flush();
      i++;
      continue;
    }
    if ((m = HEADING.exec(line))) {
      flush();
      const h = el("h" + Math.min(6, m[1].length + 2)); // the page's own headings stay above
      renderInline(m[2], h);
      root.appendChild(h);
      i++;
      continue;
    }
    if (RULE.test(line)) {
      flush();
      root.appendChild(el("hr"));
      i++;
      continue;
    }
    if (QUOTE.test(line)) {
      flush();
      const quoted = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
        quoted.push(m[1]);
        i++;
      }
      const q = el("blockquote");
      if (depth < MAX_DEPTH) {
        for (const child of Array.from(renderMarkdown(quoted.join("\n"), depth + 1).childNodes)) q.appendChild(child);
      } else q.textContent = quoted.join("\n");
      root.appendChild(q);
      continue;
    }
    if (BULLET.test(line) || NUMBER.test(line)) {
      flush();
      const ordered = !BULLET.test(line);
      const list = el(ordered ? "ol" : "ul");
      if (ordered) {
        const start = parseInt(NUMBER.exec(line)[2], 10);
        if (start > 1 && start < 1e6) list.start = start;
      }
      while (i < lines.length) {
        m = (ordered ? NUMBER : BULLET).exec(lines[i]);
        if (m) {
          renderInline(m[3], list.appendChild(el("li")));
          i++;
        } else if (lines[i].trim() && /^\s{2,}/.test(lines[i]) && list.lastChild) {
          list.lastChild.appendChild(document.createTextNode(" "));
          renderInline(lines[i].trim(), list.lastChild); // a continued item
          i++;
        } else break;
      }
      root.appendChild(list);
      continue;
    }
    para.push(line);
    i++;
  }
  flush();
  return root;
}

// Where the settled part of a growing text ends: just after its last blank line outside a code block, or
// `from` when there is none past it. Blocks never span a blank line outside code, so the text before that
// point renders the same alone as within the whole.
export function settledEnd(text, from) {
  const last = text.lastIndexOf("\n\n");
  if (last < from) return from;
  let fence = null;
  let cut = from;
  let at = from;
  for (const line of text.slice(from, last + 1).split("\n")) {
    if (fence) {
      if (line.trim().startsWith(fence)) fence = null;
    } else {
      const open = FENCE.exec(line);
      if (open) fence = open[1];
      else if (!line.trim() && at > from) cut = at + line.length + 1;
    }
    at += line.length + 1;
  }
  return fence ? cut : Math.max(cut, last + 2);
}

// A chair's round summary ends with a fenced JSON block of where each member stands
// (```json {"positions": [{"agent", "stance", "confidence", "changed", "reason"}]} ```): data, not prose.
// Splits it off as the server does (moot/positions.py: the last fenced object holding "positions", else the
// last bare `{"positions"`): { prose, positions } with positions a list, or null when there is no valid block;
// `pending` is true while the block is still streaming in (an open fence at the end that starts it).
const POSITIONS_FENCE = /```(?:json)?\s*(\{[\s\S]*?\})\s*```/g;
const POSITIONS_OPEN = /(^|\n)[ \t]{0,3}`{1,3}(?:j|js|jso|json)?[ \t]*(?:\n([\s\S]*))?$/;

export function splitPositions(text) {
  const s = String(text || "");
  let cut = -1;
  let block = null;
  for (const m of s.matchAll(POSITIONS_FENCE)) {
    if (m[1].includes('"positions"')) {
      cut = m.index;
      block = m[1];
    }
  }
  if (cut === -1) {
    const open = POSITIONS_OPEN.exec(s);
    const started = open ? (open[2] || "").replace(/\s+/g, "") : null;
    const opens = open && (s.slice(0, open.index).match(/^[ \t]{0,3}```/gm) || []).length % 2 === 0; // not a closing fence
    if (opens && (started.startsWith('{"positions"') || '{"positions"'.startsWith(started))) {
      const prose = s.slice(0, open.index).trimEnd();
      if (prose) return { prose, positions: null, pending: true };
    }
    cut = s.lastIndexOf('{"positions"');
    if (cut !== -1) {
      const end = s.lastIndexOf("}");
      block = end > cut ? s.slice(cut, end + 1) : null;
    }
  }
  const prose = cut > 0 ? s.slice(0, cut).trimEnd() : "";
  if (!prose || block === null) return { prose: s, positions: null, pending: false };
  let data;
  try {
    data = JSON.parse(block);
  } catch {
    return { prose: s, positions: null, pending: false };
  }
  const list = data && Array.isArray(data.positions) ? data.positions : null;
  if (!list || !list.every((p) => p && typeof p === "object" && typeof p.agent === "string" && typeof p.stance === "string")) {
    return { prose: s, positions: null, pending: false };
  }
  return { prose, positions: list, pending: false };
}
