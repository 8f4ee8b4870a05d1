// Forms: a new room (fields, an example, or a pasted/uploaded room file), providers and agent templates.

import { api, h, navigate, view } from "./app.js";
import { t } from "./i18n.js";

const EXAMPLES = ["board_en.yaml", "board_zh.yaml", "sequential.yaml", "parallel.yaml"];
const PERSONA = [
  ["persona", "persona", "textarea"],
  ["thinking_style", "thinkingStyle", "input"],
  ["speaking_style", "speakingStyle", "input"],
  ["decision_framework", "decisionFramework", "input"],
];

let fieldIds = 0;

function field(labelKey, control, error) {
  const id = `f${++fieldIds}`;
  control.id = control.id || id;
  return h("div", { class: "field" }, h("label", { for: control.id, text: t(labelKey) }), control, error || null);
}

function select(name, options, value) {
  return h("select", { name }, ...options.map(([v, label]) => h("option", { value: v, text: label, selected: v === value })));
}

async function all(path) {
  const page = await api("GET", `${path}?limit=100`);
  return page.items;
}

// ---- a new room ---------------------------------------------------------------------------------------------

function modelOptions(providers) {
  return [["simulated", t("simulatedModel")], ...providers.map((p) => [p.name, `${p.name}${p.default_model ? ` · ${p.default_model}` : ""}`])];
}

function agentRow(providers, templates, values, remove) {
  const inputs = {
    name: h("input", { name: "name", value: values.name || "", required: true, maxlength: 64 }),
    role: select("role", [["member", t("member")], ["moderator", t("moderator")]], values.role || "member"),
    colour: h("input", { name: "colour", value: values.colour || "", placeholder: "#2f6fdf", maxlength: 32 }),
    avatar: h("input", { name: "avatar", value: values.avatar || "", maxlength: 16 }),
    model: select("model", modelOptions(providers), values.model || (providers[0] ? providers[0].name : "simulated")),
  };
  for (const [key, , tag] of PERSONA) {
    inputs[key] = h(tag, { name: key, value: values[key] || "", rows: tag === "textarea" ? 2 : undefined });
  }
  const row = h(
    "fieldset",
    { class: "agent-row" },
    h("div", { class: "form-grid" }, field("name", inputs.name), field("role", inputs.role), field("model", inputs.model), field("colour", inputs.colour), field("avatar", inputs.avatar)),
    ...PERSONA.map(([key, label]) => field(label, inputs[key])),
    h("div", { class: "row" }, h("button", { type: "button", class: "plain", text: t("remove"), onclick: () => remove(row) })),
  );
  row.values = () => {
    const agent = { name: inputs.name.value.trim(), role: inputs.role.value };
    for (const [key] of PERSONA) if (inputs[key].value.trim()) agent[key] = inputs[key].value.trim();
    if (inputs.colour.value.trim()) agent.colour = inputs.colour.value.trim();
    if (inputs.avatar.value.trim()) agent.avatar = inputs.avatar.value.trim();
    agent.model = inputs.model.value === "simulated" ? { provider: "simulated", tokens_per_second: 40 } : inputs.model.value;
    return agent;
  };
  return row;
}

export async function showNewRoom() {
  const [providers, templates] = await Promise.all([all("/providers"), all("/agents")]);
  const task = h("textarea", { name: "task", id: "task", rows: 3, required: true });
  const title = h("input", { name: "title", id: "title" });
  const protocol = select("protocol", ["board", "parallel", "sequential"].map((p) => [p, t(`p_${p}`)]), "board");
  protocol.id = "protocol";
  const rounds = h("input", { type: "number", name: "max_rounds", id: "rounds", min: 1, max: 50, value: 2 });
  const lang = select("language", [["en", "English"], ["zh", "中文"]], document.documentElement.lang.startsWith("zh") ? "zh" : "en");
  lang.id = "language";
  const formError = h("div", { class: "field-error", id: "form-error", role: "alert" });
  const agentsBox = h("div", { id: "agents" });
  const remove = (row) => row.remove();
  const add = (values = {}) => agentsBox.appendChild(agentRow(providers, templates, values, remove));
  add({ name: "Chair", role: "moderator" });
  add({ name: "Ana" });
  add({ name: "Ben" });
  const templatePick = select("template", [["", t("fromTemplate")], ...templates.map((tp) => [String(tp.id), tp.name])], "");
  templatePick.addEventListener("change", () => {
    const chosen = templates.find((tp) => String(tp.id) === templatePick.value);
    if (chosen) {
      const model = chosen.model && chosen.model.provider !== "simulated" ? chosen.model.provider : "simulated";
      add({ ...chosen, model });
    }
    templatePick.value = "";
  });

  const create = async (run) => {
    formError.textContent = "";
    const body = {
      task: task.value.trim(),
      protocol: protocol.value,
      max_rounds: Number(rounds.value) || 1,
      language: lang.value,
      agents: [...agentsBox.children].map((row) => row.values()),
    };
    if (title.value.trim()) body.title = title.value.trim();
    await submit(body, "application/json", formError, run);
  };
  const form = h(
    "form",
    { class: "card", id: "new-room", onsubmit: (e) => { e.preventDefault(); create(true); } },
    h("h1", { text: t("newRoom") }),
    field("task", task),
    h("div", { class: "form-grid" }, field("title", title), field("protocol", protocol), field("rounds", rounds), field("language", lang)),
    h("h2", { text: t("agents") }),
    agentsBox,
    h("div", { class: "row" }, h("button", { type: "button", class: "plain", id: "add-agent", text: t("addAgent"), onclick: () => add({}) }), templates.length ? templatePick : null),
    formError,
    h("div", { class: "row" }, h("button", { type: "submit", id: "create-run", text: t("createAndRun") }), h("button", { type: "button", class: "plain", id: "create", text: t("create"), onclick: () => create(false) })),
  );

  const file = h("textarea", { id: "room-file", rows: 12, spellcheck: false, "aria-label": t("roomFile") });
  const fileError = h("div", { class: "field-error", id: "file-error", role: "alert" });
  const upload = h("input", { type: "file", id: "upload", accept: ".yaml,.yml,.json,application/json,text/yaml" });
  upload.addEventListener("change", async () => {
    if (upload.files && upload.files[0]) file.value = await upload.files[0].text();
  });
  const example = select("example", [["", t("fromExample")], ...EXAMPLES.map((name) => [name, name])], "");
  example.id = "example";
  example.addEventListener("change", async () => {
    if (!example.value) return;
    const answer = await fetch(`/static/web/examples/${example.value}`, { credentials: "same-origin" });
    if (answer.ok) file.value = await answer.text();
  });
  const paste = h(
    "form",
    { class: "card", id: "room-file-form", onsubmit: async (e) => {
      e.preventDefault();
      fileError.textContent = "";
      const text = file.value;
      let type = "application/yaml";
      try {
        JSON.parse(text);
        type = "application/json";
      } catch {
        type = "application/yaml";
      }
      await submit(text, type, fileError, true);
    } },
    h("h2", { text: t("orPaste") }),
    h("div", { class: "row" }, example, upload),
    field("roomFile", file, fileError),
    h("div", { class: "row" }, h("button", { type: "submit", id: "create-file", text: t("createFromFile") })),
  );
  view(form, paste);
}

async function submit(body, type, errorBox, run) {
  let room;
  try {
    room = await api("POST", "/rooms", body, type);
  } catch (error) {
    errorBox.textContent = error.message; // the problems as `moot validate` writes them, one a line
    return;
  }
  if (run) {
    try {
      await api("POST", `/rooms/${room.id}/run`);
    } catch (error) {
      errorBox.textContent = error.message;
    }
  }
  navigate(`/rooms/${room.id}`);
}

// ---- providers ----------------------------------------------------------------------------------------------

export async function showProviders() {
  const providers = await all("/providers");
  const list = h("ul", { class: "providers", id: "providers" });
  for (const provider of providers) {
    const result = h("span", { class: "test-result", role: "status" });
    list.appendChild(
      h(
        "li",
        { dataset: { provider: provider.name } },
        h("strong", { text: provider.name }),
        ` · ${provider.type} · ${provider.base_url || ""} · ${provider.default_model || ""} · `,
        h("span", { class: "muted", text: provider.has_api_key ? t("hasKey") : t("noKey") }),
        " ",
        h("button", { type: "button", class: "plain test", text: t("test"), onclick: async () => {
          result.textContent = "…";
          result.className = "test-result";
          try {
            const answer = await api("POST", `/providers/${provider.id}/test`);
            result.textContent = answer.ok ? t("testOk", answer.model, Math.round(answer.latency_ms || 0)) : answer.message || answer.problem;
            result.className = answer.ok ? "test-result ok" : "test-result error";
          } catch (error) {
            result.textContent = error.message;
            result.className = "test-result error";
          }
        } }),
        " ",
        h("button", { type: "button", class: "plain", text: t("delete"), onclick: async () => {
          await api("DELETE", `/providers/${provider.id}`);
          showProviders();
        } }),
        " ",
        result,
      ),
    );
  }
  if (!providers.length) list.appendChild(h("li", { class: "muted", text: t("noProviders") }));
  const inputs = {
    name: h("input", { name: "name", id: "p-name", required: true }),
    type: select("type", [["openai", "openai (OpenAI-compatible)"], ["anthropic", "anthropic"]], "openai"),
    base_url: h("input", { name: "base_url", id: "p-base-url", placeholder: "http://127.0.0.1:11434/v1" }),
    default_model: h("input", { name: "default_model", id: "p-model" }),
    api_key: h("input", { name: "api_key", id: "p-key", type: "password", autocomplete: "off" }),
  };
  const error = h("div", { class: "field-error", id: "provider-error", role: "alert" });
  const form = h(
    "form",
    { class: "card", id: "add-provider", onsubmit: async (e) => {
      e.preventDefault();
      const body = { name: inputs.name.value.trim(), type: inputs.type.value };
      for (const key of ["base_url", "default_model", "api_key"]) if (inputs[key].value.trim()) body[key] = inputs[key].value.trim();
      try {
        await api("POST", "/providers", body);
        showProviders();
      } catch (problem) {
        error.textContent = problem.message;
      }
    } },
    h("h2", { text: t("addProvider") }),
    h("div", { class: "form-grid" }, field("name", inputs.name), field("type", inputs.type), field("baseUrl", inputs.base_url), field("defaultModel", inputs.default_model)),
    field("apiKey", inputs.api_key),
    error,
    h("div", { class: "row" }, h("button", { type: "submit", text: t("save") })),
  );
  view(h("h1", { text: t("providers") }), list, form);
}

// ---- agent templates ----------------------------------------------------------------------------------------

export async function showTemplates() {
  const [templates, providers] = await Promise.all([all("/agents"), all("/providers")]);
  const list = h("ul", { class: "templates", id: "templates" });
  for (const template of templates) {
    list.appendChild(
      h(
        "li",
        {},
        h("strong", { text: template.name }),
        ` · ${template.role} · `,
        h("span", { class: "muted", text: template.persona }),
        " ",
        h("button", { type: "button", class: "plain", text: t("delete"), onclick: async () => {
          await api("DELETE", `/agents/${template.id}`);
          showTemplates();
        } }),
      ),
    );
  }
  if (!templates.length) list.appendChild(h("li", { class: "muted", text: t("noTemplates") }));
  const row = agentRow(providers, [], {}, () => {});
  row.querySelector(".row").remove();
  const error = h("div", { class: "field-error", role: "alert" });
  const form = h(
    "form",
    { class: "card", id: "add-template", onsubmit: async (e) => {
      e.preventDefault();
      const values = row.values();
      if (typeof values.model === "string") values.model = { provider: values.model };
      try {
        await api("POST", "/agents", values);
        showTemplates();
      } catch (problem) {
        error.textContent = problem.message;
      }
    } },
    h("h2", { text: t("addTemplate") }),
    row,
    error,
    h("div", { class: "row" }, h("button", { type: "submit", text: t("save") })),
  );
  view(h("h1", { text: t("templates") }), list, form);
}
