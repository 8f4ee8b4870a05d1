// The page of `moot serve`: sign in, rooms, the live room, steering, new rooms, providers and templates.
// Plain ES modules, no build step. Model text is untrusted: it only ever reaches the DOM through
// textContent (md.js), never innerHTML.

import { renderMarkdown, settledEnd, splitPositions } from "./md.js";
import { LANGUAGES, language, pickLanguage, setLanguage, t } from "./i18n.js";
import { showNewRoom, showProviders, showTemplates } from "./forms.js";

const API = "/api/v1";
const EVENT_TYPES = [
  "room_started", "room_warning", "round_started", "turn_started", "turn_delta", "turn_restarted",
  "turn_completed", "turn_failed", "round_progress", "intervention_added", "history_compressed",
  "round_completed", "room_concluded", "room_completed", "room_paused", "room_failed",
  "positions_recorded", "rankings_aggregated", "speaker_selected", "choice_requested", "estimates_aggregated",
];
const STANCES = ["support", "oppose", "conditional", "undecided"];

// ---- small helpers ------------------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, message, details) {
    super(message);
    this.status = status;
    this.details = details;
  }
}

export async function api(method, path, body, type = "application/json") {
  const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    options.headers["Content-Type"] = type;
    options.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const answer = await fetch(path.startsWith("/") && !path.startsWith(API) && !path.startsWith("/log") ? API + path : path, options);
  if (answer.status === 204) return null;
  let data = null;
  try {
    data = await answer.json();
  } catch {
    data = null;
  }
  if (!answer.ok) {
    const error = (data && data.error) || {};
    if (answer.status === 401 && !path.startsWith("/log")) signedOut();
    throw new ApiError(answer.status, error.message || answer.statusText, error.details);
  }
  return data;
}

export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "value" || (key in node && typeof value !== "string")) node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.appendChild(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
  }
  return node;
}

export function colourOf(value) {
  return value && CSS.supports("color", value) ? value : null;
}

function when(seconds) {
  if (!seconds) return "";
  const date = new Date(typeof seconds === "number" ? seconds * 1000 : seconds);
  return date.toLocaleString(language() === "zh" ? "zh-CN" : "en-GB", { dateStyle: "short", timeStyle: "short" });
}

export function navigate(path, replace = false) {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  route();
}

// ---- the frame ----------------------------------------------------------------------------------------------

const main = () => document.getElementById("main");
let me = null;
let leaving = null; // what the current view does when another replaces it

function header() {
  const nav = document.getElementById("nav");
  nav.replaceChildren();
  if (me) {
    nav.append(
      h("a", { href: "/", "data-link": true, text: t("rooms") }),
      h("a", { href: "/new", "data-link": true, text: t("newRoom") }),
      h("a", { href: "/providers", "data-link": true, text: t("providers") }),
      h("a", { href: "/templates", "data-link": true, text: t("templates") }),
    );
  }
  document.getElementById("who").textContent = me ? t("signedInAs", me.name) : "";
  const out = document.getElementById("signout");
  out.hidden = !me;
  out.textContent = t("signOut");
  const switcher = document.getElementById("lang");
  switcher.textContent = language() === "zh" ? "English" : "中文";
  switcher.setAttribute("aria-label", "language");
}

function signedOut() {
  me = null;
  if (location.pathname !== "/login") navigate("/login", true);
}

export function view(...children) {
  if (leaving) leaving();
  leaving = null;
  document.title = "Moot";
  main().replaceChildren(...children);
  window.scrollTo(0, 0);
}

function showError(error) {
  view(h("p", { class: "error", role: "alert", text: t("error", error.message || String(error)) }));
}

async function route() {
  const path = location.pathname;
  header();
  try {
    if (path === "/login") return showSignIn();
    if (!me) {
      try {
        me = await api("GET", "/users/me");
      } catch (error) {
        if (error.status === 401) return showSignIn();
        throw error;
      }
      header();
    }
    const room = /^\/rooms\/([A-Za-z0-9_-]{1,32})$/.exec(path);
    if (room) return await showRoom(room[1]);
    if (path === "/new") return await showNewRoom();
    if (path === "/providers") return await showProviders();
    if (path === "/templates") return await showTemplates();
    return await showRooms();
  } catch (error) {
    showError(error);
  }
}

// ---- sign in ------------------------------------------------------------------------------------------------

function showSignIn() {
  me = null;
  header();
  const failed = new URLSearchParams(location.search).has("failed");
  const message = h("p", { class: "error", role: "alert", hidden: !failed, text: t("signInFailed") });
  const input = h("input", { type: "password", name: "token", id: "token", autocomplete: "off", required: true });
  const form = h(
    "form",
    { class: "card signin", id: "signin" },
    h("h1", { text: t("signInTitle") }),
    h("p", { class: "muted", text: t("signInHelp") }),
    h("label", { for: "token", text: t("token") }),
    input,
    h("button", { type: "submit", text: t("signIn") }),
    message,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("POST", "/login", { token: input.value.trim() });
      me = null;
      navigate("/", true);
    } catch (error) {
      message.hidden = false;
      message.textContent = error.status === 401 ? t("signInFailed") : t("error", error.message);
    }
  });
  view(form);
  input.focus();
}

// ---- rooms --------------------------------------------------------------------------------------------------

async function showRooms() {
  const rooms = [];
  for (let offset = 0; offset < 1000; offset += 100) {
    const page = await api("GET", `/rooms?limit=100&offset=${offset}`);
    rooms.push(...page.items);
    if (rooms.length >= page.total || !page.items.length) break;
  }
  rooms.sort((a, b) => String(b.updated_at).localeCompare(String(a.updated_at)));
  const search = h("input", { type: "search", id: "search", placeholder: t("search"), "aria-label": t("search") });
  const body = h("tbody");
  const table = h(
    "table",
    { class: "rooms", id: "rooms" },
    h("thead", {}, h("tr", {}, ...["task", "status", "protocol", "round", "updated", ""].map((k) => h("th", { text: k ? t(k) : "" })))),
    body,
  );
  const fill = () => {
    const words = search.value.trim().toLowerCase();
    body.replaceChildren();
    for (const room of rooms) {
      const hay = `${room.title} ${room.task} ${room.id}`.toLowerCase();
      if (words && !hay.includes(words)) continue;
      body.appendChild(roomRow(room, () => {
        rooms.splice(rooms.indexOf(room), 1);
        fill();
      }));
    }
    if (!body.childNodes.length) body.appendChild(h("tr", {}, h("td", { colspan: 6, class: "muted", text: t("noRooms") })));
  };
  search.addEventListener("input", fill);
  fill();
  view(h("div", { class: "bar" }, h("h1", { text: t("rooms") }), search, h("a", { class: "button", href: "/new", "data-link": true, text: t("newRoom") })), table);
}

function roomRow(room, removed) {
  const note = h("span", { class: "error" });
  const cell = h("td", { class: "actions" });
  const ask = () => {
    cell.replaceChildren(
      h("button", {
        class: "danger confirm-delete",
        text: t("confirmDelete"),
        onclick: async () => {
          try {
            await api("DELETE", `/rooms/${room.id}`);
            removed();
          } catch (error) {
            note.textContent = error.message;
            cell.replaceChildren(del, note);
          }
        },
      }),
      h("button", { class: "plain", text: t("cancel"), onclick: () => cell.replaceChildren(del) }),
    );
  };
  const del = h("button", { class: "plain delete", text: t("delete"), onclick: ask });
  cell.appendChild(del);
  return h(
    "tr",
    { dataset: { room: room.id } },
    h("td", {}, h("a", { href: `/rooms/${room.id}`, "data-link": true }, h("strong", { text: room.title || room.id }), h("div", { class: "muted clip", text: room.task }))),
    h("td", {}, h("span", { class: `status s-${room.status}`, text: t(`st_${room.status}`) })),
    h("td", { text: t(`p_${room.protocol}`) }),
    h("td", { text: `${room.round}/${room.max_rounds}` }),
    h("td", { text: when(room.updated_at) }),
    cell,
  );
}

// ---- the live room ------------------------------------------------------------------------------------------

const STATE_OF_PROGRESS = { pending: "waiting", streaming: "speaking", completed: "done", failed: "failed" };

class RoomView {
  constructor(room) {
    this.id = room.id;
    this.room = room;
    this.protocol = room.protocol;
    this.agents = new Map(room.agents.map((a) => [a.name, a]));
    this.lastSeq = 0;
    this.queue = [];
    this.turns = new Map();
    this.rounds = new Map();
    this.dirty = new Set();
    this.pending = []; // interventions the moderator has not addressed yet
    this.usage = new Map();
    this.following = true;
    this.source = null;
    this.retry = 500;
    this.closed = false;
    this.frame = 0;
    this.build();
  }

  build() {
    const room = this.room;
    this.status = h("span", { class: "status", id: "room-status" });
    this.roundNote = h("span", { class: "muted", id: "room-round" });
    this.liveNote = h("span", { class: "live", id: "connection", hidden: true, text: t("reconnecting") });
    this.buttons = {
      run: h("button", { id: "run", onclick: () => this.act("run") }),
      pause: h("button", { id: "pause", text: t("pause"), onclick: () => this.act("pause") }),
      stop: h("button", { id: "stop", class: "danger", text: t("stop"), onclick: () => this.act("stop") }),
    };
    this.actionNote = h("span", { class: "error", id: "action-note", role: "status" });
    this.timeline = h("div", { class: "timeline", id: "timeline" });
    this.conclusion = h("div", { id: "conclusion" });
    this.usageBox = h("div", { class: "usage", id: "usage" });
    this.input = h("textarea", { id: "intervene", rows: 2, placeholder: t("interveneHint"), "aria-label": t("interveneHint") });
    this.sendNote = h("span", { class: "error", id: "send-note", role: "status" });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.send();
      }
    });
    this.back = h("button", { class: "back-live", id: "back-live", hidden: true, text: t("backToLive"), onclick: () => this.toLive() });
    this.root = h(
      "section",
      { class: "room", dataset: { room: room.id } },
      h(
        "div",
        { class: "room-head" },
        h("h1", { id: "room-title", text: room.title || room.id }),
        h("p", { class: "task", id: "room-task", text: room.task }),
        h("div", { class: "meta" }, this.status, h("span", { class: "tag", id: "room-protocol", text: t(`p_${room.protocol}`) }), this.roundNote, this.liveNote),
        h(
          "div",
          { class: "controls" },
          this.buttons.run,
          this.buttons.pause,
          this.buttons.stop,
          h("a", { class: "button plain", id: "export-md", href: `${API}/rooms/${room.id}/export?format=md`, download: `room-${room.id}.md`, text: t("exportMd") }),
          h("a", { class: "button plain", id: "export-json", href: `${API}/rooms/${room.id}/export?format=json`, download: `room-${room.id}.json`, text: t("exportJson") }),
          this.actionNote,
        ),
      ),
      this.timeline,
      this.conclusion,
      h("details", { class: "usage-box" }, h("summary", { text: t("usage") }), this.usageBox),
      h("form", { class: "intervene", onsubmit: (e) => { e.preventDefault(); this.send(); } }, this.input, h("button", { type: "submit", id: "send", text: t("send") }), this.sendNote),
      this.back,
    );
    // Following the end stops when the reader scrolls up (the page itself only ever scrolls down) and
    // starts again at the bottom or with "back to live".
    this.lastY = window.scrollY;
    this.onScroll = () => {
      const y = window.scrollY;
      const gap = document.documentElement.scrollHeight - window.innerHeight - y;
      if (gap < 60) this.following = true;
      else if (y < this.lastY - 4) this.following = false;
      this.lastY = y;
      this.back.hidden = this.following;
    };
    window.addEventListener("scroll", this.onScroll, { passive: true });
    this.showRoom(room);
  }

  // -- the room's state and controls ---------------------------------------------------------------------------

  showRoom(room) {
    this.room = room;
    this.status.className = `status s-${room.status}`;
    this.status.textContent = t(`st_${room.status}`);
    this.status.dataset.status = room.status;
    this.roundNote.textContent = room.round ? t("roundOf", room.round, room.max_rounds) : "";
    const allowed = new Set(room.allowed);
    const resumable = ["paused", "interrupted", "error"].includes(room.status);
    this.buttons.run.textContent = resumable ? t("resume") : t("run");
    this.buttons.run.disabled = !allowed.has("run");
    this.buttons.pause.disabled = !allowed.has("pause");
    this.buttons.stop.disabled = !allowed.has("stop");
    this.input.disabled = !allowed.has("intervene");
    this.showUsage();
  }

  async refresh() {
    if (this.closed) return;
    try {
      this.showRoom(await api("GET", `/rooms/${this.id}`));
    } catch (error) {
      this.actionNote.textContent = error.message;
    }
  }

  refreshSoon() {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => this.refresh(), 50);
  }

  async act(what) {
    this.actionNote.textContent = "";
    for (const button of Object.values(this.buttons)) button.disabled = true;
    try {
      this.showRoom(await api("POST", `/rooms/${this.id}/${what}`));
    } catch (error) {
      this.actionNote.textContent = error.message;
      await this.refresh();
    }
  }

  async send() {
    const text = this.input.value.trim();
    if (!text || this.input.disabled) return;
    this.sendNote.textContent = "";
    try {
      await api("POST", `/rooms/${this.id}/messages`, { text });
      this.input.value = "";
    } catch (error) {
      this.sendNote.textContent = error.message;
    }
  }

  // -- the stream ------------------------------------------------------------------------------------------------

  connect() {
    if (this.closed) return;
    const source = new EventSource(`${API}/rooms/${this.id}/events?follow=true&after=${this.lastSeq}`);
    this.source = source;
    const take = (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      this.retry = 500;
      this.liveNote.hidden = true;
      this.queue.push(event);
      this.schedule();
    };
    for (const type of EVENT_TYPES) source.addEventListener(type, take);
    source.addEventListener("reconnect", () => this.reconnect(0));
    source.onerror = () => this.reconnect(this.retry);
  }

  reconnect(delay) {
    if (this.source) this.source.close();
    this.source = null;
    if (this.closed) return;
    this.liveNote.hidden = delay === 0;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      this.flush(); // resume after the last event taken in, not only the last one drawn
      this.connect();
      this.refresh();
    }, delay);
    this.retry = Math.min(5000, this.retry * 2);
  }

  close() {
    this.closed = true;
    if (this.source) this.source.close();
    clearTimeout(this.reconnectTimer);
    cancelAnimationFrame(this.frame);
    window.removeEventListener("scroll", this.onScroll);
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => this.flush());
    this.fallback = setTimeout(() => this.flush(), 250); // a hidden tab draws no frames
  }

  flush() {
    cancelAnimationFrame(this.frame);
    clearTimeout(this.fallback);
    this.frame = 0;
    const events = this.queue;
    this.queue = [];
    for (const event of events) {
      if (event.seq <= this.lastSeq) continue; // a replay overlapping what was shown
      this.lastSeq = event.seq;
      this.apply(event);
    }
    for (const turn of this.dirty) this.draw(turn);
    this.dirty.clear();
    if (events.length && this.following) {
      window.scrollTo(0, document.documentElement.scrollHeight);
      this.lastY = window.scrollY;
    }
    this.back.hidden = this.following;
  }

  toLive() {
    this.following = true;
    this.back.hidden = true;
    window.scrollTo(0, document.documentElement.scrollHeight);
    this.lastY = window.scrollY;
  }

  // -- events to the page ----------------------------------------------------------------------------------------

  apply(event) {
    switch (event.type) {
      case "room_started":
        for (const agent of event.agents) this.agents.set(agent.name, { ...this.agents.get(agent.name), ...agent });
        this.moderator = event.moderator;
        if (event.resumed) this.note(this.lastSection(), t("resumed"), "resumed");
        if (event.simulated && !this.simNote) this.simNote = this.note(this.roundOf(0), t("simulated"), "simulated");
        this.refreshSoon();
        break;
      case "room_warning":
        this.note(this.roundOf(this.lastRound || 0), event.message, "warning");
        break;
      case "round_started":
        this.lastRound = event.round;
        this.roundOf(event.round);
        this.roundNote.textContent = t("roundOf", event.round, event.max_rounds);
        break;
      case "turn_started": {
        const turn = this.turn(event.turn_id, event.round, event.kind, event.speaker);
        turn.text = "";
        this.setState(turn, "speaking");
        this.dirty.add(turn);
        break;
      }
      case "turn_delta": {
        const turn = this.turns.get(event.turn_id) || this.turn(event.turn_id, event.round, kindOf(event.turn_id), event.speaker);
        turn.text += event.text;
        if (turn.state !== "speaking" && turn.state !== "restarted") this.setState(turn, "speaking");
        this.dirty.add(turn);
        break;
      }
      case "turn_restarted": {
        const turn = this.turns.get(event.turn_id) || this.turn(event.turn_id, event.round, kindOf(event.turn_id), event.speaker);
        if (event.discard) turn.text = "";
        this.setState(turn, "restarted");
        turn.info.textContent = t("restartedNote", event.speaker, event.reason);
        this.dirty.add(turn);
        break;
      }
      case "turn_completed": {
        const turn = this.turn(event.turn_id, event.round, event.kind, event.speaker);
        turn.text = event.text;
        turn.info.textContent = "";
        this.setState(turn, "done");
        const usage = event.usage || {};
        const mine = this.usage.get(event.speaker) || { input: 0, output: 0 };
        mine.input += usage.input_tokens || 0;
        mine.output += usage.output_tokens || 0;
        this.usage.set(event.speaker, mine);
        turn.foot.textContent = `${event.model} · ${usage.input_tokens || 0} → ${usage.output_tokens || 0}`;
        this.dirty.add(turn);
        this.addressed(event);
        this.showUsage();
        break;
      }
      case "turn_failed": {
        const turn = this.turn(event.turn_id, event.round, event.kind, event.speaker);
        this.setState(turn, "failed");
        turn.info.textContent = `${event.error_type}: ${event.error}`;
        break;
      }
      case "round_progress": {
        const round = this.roundOf(event.round);
        round.progress.textContent = t("progress", event.completed, event.total);
        for (const [speaker, state] of Object.entries(event.states)) {
          const turn = this.turn(`r${event.round}:speech:${speaker}`, event.round, "speech", speaker);
          const shown = STATE_OF_PROGRESS[state] || state;
          if (turn.state !== shown && !(shown === "speaking" && turn.state === "restarted")) this.setState(turn, shown);
        }
        break;
      }
      case "intervention_added": {
        const round = this.roundOf(event.round);
        const item = h(
          "div",
          { class: "note intervention", dataset: { round: event.round } },
          h("div", { class: "who", text: t("intervention", event.author) }),
          h("div", { class: "said", text: event.text }),
          h("div", { class: "muted joined", text: event.stop ? `${t("joined", event.round)} · ${t("stopAsked")}` : t("joined", event.round) }),
        );
        round.flow.appendChild(item);
        this.pending.push(item);
        break;
      }
      case "history_compressed":
        this.note(this.roundOf(event.round), t("compressed", event.entries), "compressed");
        break;
      case "round_completed":
        this.roundOf(event.round).section.classList.add("over");
        break;
      case "room_concluded":
        this.showConclusion(event);
        break;
      case "positions_recorded": {
        const score = typeof event.consensus === "number" ? Math.round(event.consensus * 100) : "?";
        this.note(this.roundOf(event.round), t("consensusScore", score, stanceWord(event.leading)), "consensus-score");
        break;
      }
      case "speaker_selected":
        this.note(this.roundOf(event.round), event.reason ? `${t("speakerSelected", event.speaker)}: ${event.reason}` : t("speakerSelected", event.speaker), "selected");
        break;
      case "choice_requested":
        this.note(this.roundOf(event.round), `${event.prompt || t("choose")} (${(event.options || []).join(", ")})`, "choice");
        break;
      case "estimates_aggregated":
        this.note(this.roundOf(event.round), t("estimates", num(event.median), num(event.low), num(event.high)), "estimates");
        break;
      case "rankings_aggregated":
        this.note(this.roundOf(event.round), t("rankings", (event.answers || []).map((a) => `${a.agent} (${num(a.mean_rank)})`).join(", ")), "rankings");
        break;
      case "room_completed":
        for (const [name, usage] of Object.entries(event.usage_by_agent || {})) {
          this.usage.set(name, { input: usage.input_tokens || 0, output: usage.output_tokens || 0 });
        }
        this.note(this.lastSection(), t("completed", t(`stop_${event.stop_reason}`)), "completed");
        this.interrupt();
        this.refreshSoon();
        break;
      case "room_paused":
        this.note(this.lastSection(), t("paused"), "paused");
        this.interrupt();
        this.refreshSoon();
        break;
      case "room_failed":
        this.note(this.lastSection(), t("failed", event.error), "failed");
        this.interrupt();
        this.refreshSoon();
        break;
      default:
        break;
    }
  }

  interrupt() {
    for (const turn of this.turns.values()) {
      if (turn.state === "speaking" || turn.state === "restarted" || turn.state === "waiting") this.setState(turn, "interrupted");
    }
  }

  addressed(event) {
    if (!this.pending.length) return;
    if (this.protocol === "board" ? event.kind === "summary" || event.kind === "conclusion" : true) {
      const words = this.protocol === "board" ? t("addressed", event.round) : t("seenBy");
      for (const item of this.pending) item.appendChild(h("div", { class: "muted addressed", text: words }));
      this.pending = [];
    }
  }

  roundOf(number) {
    let round = this.rounds.get(number);
    if (round) return round;
    const progress = h("span", { class: "muted progress" });
    const title = number === 0 ? t("opening") : t("roundN", number);
    const grid = h("div", { class: "grid" });
    const flow = h("div", { class: "flow" });
    const section = h("section", { class: "round", dataset: { round: number } }, h("h2", {}, title, " ", progress), grid, flow);
    round = { section, grid, flow, progress };
    this.rounds.set(number, round);
    const later = [...this.rounds.keys()].filter((n) => n > number).sort((a, b) => a - b)[0];
    if (later !== undefined) this.timeline.insertBefore(section, this.rounds.get(later).section);
    else this.timeline.appendChild(section);
    return round;
  }

  lastSection() {
    return this.roundOf(Math.max(0, ...this.rounds.keys()));
  }

  note(round, text, kind) {
    const item = h("div", { class: `note ${kind}`, text });
    round.flow.appendChild(item);
    return item;
  }

  turn(id, roundNumber, kind, speaker) {
    let turn = this.turns.get(id);
    if (turn) return turn;
    const agent = this.agents.get(speaker) || {};
    const round = this.roundOf(roundNumber);
    const avatar = agent.avatar && !/^(https?:|data:|\/)/i.test(agent.avatar) ? agent.avatar : (speaker || "?").slice(0, 1).toUpperCase();
    const stateBadge = h("span", { class: "state" });
    const body = h("div", { class: "body" });
    const info = h("div", { class: "info" });
    const foot = h("div", { class: "foot muted" });
    const label = kind === "summary" ? t("summary") : kind === "conclusion" ? t("rawAnswer") : kind === "opening" ? t("opening") : "";
    const card = h(
      "article",
      { class: `turn k-${kind}`, dataset: { turn: id, speaker, kind, round: roundNumber } },
      h("header", {}, h("span", { class: "avatar", text: avatar }), h("strong", { class: "speaker", text: speaker }), label ? h("span", { class: "muted kind", text: label }) : null, stateBadge),
      info,
      body,
      foot,
    );
    const colour = colourOf(agent.colour);
    if (colour) card.style.setProperty("--c", colour);
    const sideBySide = this.protocol === "board" && kind === "speech";
    (sideBySide ? round.grid : round.flow).appendChild(card);
    turn = { id, kind, speaker, card, body, info, foot, stateBadge, text: "", state: "" };
    this.turns.set(id, turn);
    this.setState(turn, "waiting");
    return turn;
  }

  setState(turn, state) {
    turn.state = state;
    turn.card.dataset.state = state;
    turn.stateBadge.textContent = t(`st_${state}`);
  }

  // A streaming turn is drawn in two parts: the blocks before its last blank line (outside code) are
  // rendered once and kept; only the tail after it is rendered again on each frame.
  draw(turn) {
    if (turn.kind === "conclusion") {
      turn.body.replaceChildren(h("pre", { class: "raw", text: turn.text }));
      return;
    }
    // a summary's positions block is shown as a table of member stances, apart from its prose
    const split = turn.kind === "summary" ? splitPositions(turn.text) : null;
    const text = split ? split.prose : turn.text;
    if (!turn.done || text.slice(0, turn.stableLen) !== turn.stable) {
      turn.done = h("div", { class: "md" });
      turn.tail = h("div", { class: "md" });
      turn.extra = h("div", { class: "positions-box" });
      turn.shownPositions = "";
      turn.stableLen = 0;
      turn.stable = "";
      turn.body.replaceChildren(turn.done, turn.tail, turn.extra);
    }
    const cut = settledEnd(text, turn.stableLen);
    if (cut > turn.stableLen) {
      turn.done.append(...renderMarkdown(text.slice(turn.stableLen, cut)).childNodes);
      turn.stableLen = cut;
      turn.stable = text.slice(0, cut);
    }
    turn.tail.replaceChildren(...renderMarkdown(text.slice(turn.stableLen)).childNodes);
    const key = split && split.positions ? JSON.stringify(split.positions) : split && split.pending ? "pending" : "";
    if (key !== turn.shownPositions) {
      turn.shownPositions = key;
      if (split && split.positions && split.positions.length) turn.extra.replaceChildren(positionsTable(split.positions));
      else if (key === "pending") turn.extra.replaceChildren(h("p", { class: "muted", text: t("positionsComing") }));
      else turn.extra.replaceChildren();
    }
  }

  showConclusion(event) {
    const list = (items, cls) => h("ul", { class: cls }, ...items.map((item) => renderInlineItem(item)));
    this.conclusion.replaceChildren(
      h(
        "section",
        { class: "conclusion card", id: "conclusion-card" },
        h("h2", { text: event.number > 1 ? t("conclusionN", event.number) : t("conclusion") }),
        h("div", { class: "summary" }, renderMarkdown(event.summary)),
        h("h3", { text: t("decisionAdvice") }),
        h("div", { class: "advice" }, renderMarkdown(event.decision_advice)),
        h("div", { class: "points" },
          h("div", {}, h("h3", { text: t("consensus") }), list(event.consensus_points || [], "consensus")),
          h("div", {}, h("h3", { text: t("dissent") }), list(event.dissent_points || [], "dissent"))),
        Array.isArray(event.positions) && event.positions.length ? [h("h3", { text: t("positions") }), positionsTable(event.positions)] : null,
      ),
    );
  }

  showUsage() {
    const rows = [...this.usage.entries()].map(([name, u]) =>
      h("tr", { dataset: { agent: name } }, h("td", { text: name }), h("td", { text: u.input }), h("td", { text: u.output })),
    );
    const total = this.room.usage || { input_tokens: 0, output_tokens: 0 };
    this.usageBox.replaceChildren(
      h("p", { id: "usage-room", text: t("usageRoom", total.input_tokens, total.output_tokens) }),
      h("table", {}, h("thead", {}, h("tr", {}, h("th", { text: t("agent") }), h("th", { text: t("tokensIn") }), h("th", { text: t("tokensOut") }))), h("tbody", {}, ...rows)),
    );
  }
}

function renderInlineItem(text) {
  const li = document.createElement("li");
  for (const child of Array.from(renderMarkdown(text).childNodes)) {
    for (const inner of Array.from(child.childNodes)) li.appendChild(inner);
  }
  return li;
}

function stanceWord(stance) {
  return STANCES.includes(stance) ? t(`stance_${stance}`) : String(stance ?? "");
}

function num(value) {
  return typeof value === "number" && Number.isFinite(value) ? String(Math.round(value * 100) / 100) : "–";
}

// Where each member stands: a row per member, with its stance, confidence and one-line reason.
function positionsTable(positions) {
  const rows = positions.map((p) =>
    h(
      "tr",
      { dataset: { agent: String(p.agent), stance: String(p.stance) } },
      h("td", { class: "agent", text: String(p.agent) }),
      h("td", {}, h("span", { class: `stance st-${STANCES.includes(p.stance) ? p.stance : "other"}`, text: stanceWord(p.stance) }), p.changed === true ? h("span", { class: "muted changed", text: ` ${t("changed")}` }) : null),
      h("td", { class: "confidence", text: typeof p.confidence === "number" ? `${Math.round(p.confidence * 100)}%` : "" }),
      h("td", { class: "reason", text: typeof p.reason === "string" ? p.reason : "" }),
    ),
  );
  return h(
    "table",
    { class: "positions" },
    h("thead", {}, h("tr", {}, h("th", { text: t("agent") }), h("th", { text: t("stance") }), h("th", { text: t("confidence") }), h("th", { text: t("reason") }))),
    h("tbody", {}, ...rows),
  );
}

function kindOf(turnId) {
  return String(turnId).split(":")[1] || "speech";
}

async function showRoom(id) {
  let room;
  try {
    room = await api("GET", `/rooms/${id}`);
  } catch (error) {
    if (error.status === 404) return view(h("p", { class: "error", text: t("notFound") }));
    throw error;
  }
  const live = new RoomView(room);
  view(live.root);
  document.title = `${room.title || room.task.slice(0, 60)} · Moot`;
  leaving = () => live.close();
  window.mootRoom = live; // for people and tests poking at the page's state
  live.connect();
}

// ---- start --------------------------------------------------------------------------------------------------

document.addEventListener("click", (event) => {
  const a = event.target.closest && event.target.closest("a[data-link]");
  if (!a || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", route);
document.getElementById("lang").addEventListener("click", () => {
  const next = LANGUAGES[(LANGUAGES.indexOf(language()) + 1) % LANGUAGES.length];
  setLanguage(next, true);
  route();
});
document.getElementById("signout").addEventListener("click", async () => {
  try {
    await api("POST", "/logout");
  } finally {
    me = null;
    navigate("/login", true);
  }
});
setLanguage(pickLanguage());
route();
