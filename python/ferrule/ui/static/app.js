// Ferrule's dashboard: plain JavaScript, no library, nothing fetched from elsewhere.
// Every figure comes from /ui/api/* (the ledger, read by Ferrule); charts arrive as SVG drawn
// by the server. Writes carry the session's CSRF token in x-csrf-token.
"use strict";

let CSRF = "";
let SESSION = null;
let PERIOD = new URLSearchParams(location.search).get("period") || "24h";
const PERIODS = [["1h", "Last hour"], ["24h", "Last day"], ["30d", "Last 30 days"]];

function el(tag, attrs, ...kids) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined) continue;
    node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return node;
}

const num = (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US"));
const usd = (v) => {
  if (v === null || v === undefined) return "unpriced";
  const a = Math.abs(v);
  return "$" + (a < 1 ? v.toFixed(4) : v.toLocaleString("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2}));
};
const pct = (v) => (v === null || v === undefined ? "–" : (v * 100).toFixed(1) + "%");
const ms = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(1) + " ms");
const rate = (v) => (v >= 100 ? v.toFixed(0) : v >= 1 ? v.toFixed(2) : v.toFixed(4)) + "/s";
const when = (ts) => new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";

function status(text) { document.getElementById("status").textContent = text; }

async function api(path, options) {
  const opts = Object.assign({credentials: "same-origin", headers: {}}, options || {});
  if (opts.method && opts.method !== "GET") opts.headers["x-csrf-token"] = CSRF;
  const resp = await fetch(path, opts);
  if (resp.status === 401) { location.assign("/ui/login"); throw new Error("signed out"); }
  const data = await resp.json();
  if (!resp.ok) throw new Error((data.error && data.error.message) || resp.statusText);
  return data;
}

function main(...kids) {
  const m = document.getElementById("main");
  m.replaceChildren(...kids);
}

function periodPicker(render) {
  return el("div", {class: "periods", role: "group", "aria-label": "Period"},
    PERIODS.map(([p, label]) => el("button", {
      type: "button", "aria-pressed": p === PERIOD ? "true" : "false", "data-period": p, text: label,
      onclick: () => {
        PERIOD = p;
        history.replaceState(null, "", location.pathname + "?period=" + p);
        render();
      },
    })));
}

function kpi(id, label, shown, value) {
  return el("div", {class: "kpi", id: "kpi-" + id, "data-value": value === null || value === undefined ? "" : value},
    el("dt", {text: label}), el("dd", {text: shown}));
}

function chart(title, svgText) {
  const box = el("figure", {class: "chart-box"}, el("figcaption", {text: title}));
  const holder = el("div", {class: "chart-holder"});
  // The server drew this SVG from numbers and escaped every label (ferrule/ui/svg.py).
  holder.innerHTML = svgText || "";
  box.append(holder);
  return box;
}

// -- Overview ---------------------------------------------------------------------------------

async function overview() {
  const d = await api("/ui/api/overview?period=" + PERIOD);
  const t = d.totals;
  const p = d.percentiles;
  const grid = el("dl", {class: "kpis"},
    kpi("requests", "Requests", num(t.requests), t.requests),
    kpi("requests-per-s", "Requests/s", rate(d.requests_per_s), d.requests_per_s),
    kpi("tokens", "Billed tokens", num(d.tokens), d.tokens),
    kpi("tokens-per-s", "Tokens/s", rate(d.tokens_per_s), d.tokens_per_s),
    kpi("cost", "Spend", usd(t.cost_usd), t.cost_usd),
    kpi("saved", "Saved", t.saved_total_usd === null ? "–" : usd(t.saved_total_usd), t.saved_total_usd),
    kpi("error-rate", "Error rate", pct(d.error_rate), d.error_rate),
    kpi("prompt-cache", "Prompt cache read share", pct(d.prompt_cache_read_share), d.prompt_cache_read_share),
    kpi("response-cache", "Response cache hit ratio", pct(d.response_cache_hit_ratio), d.response_cache_hit_ratio),
  );
  const pctTable = el("table", {class: "data", id: "percentiles"},
    el("caption", {text: "Time to first byte and latency"}),
    el("thead", {}, el("tr", {}, el("th", {scope: "col", text: ""}), ["p50", "p90", "p99"].map((q) => el("th", {scope: "col", text: q})))),
    el("tbody", {},
      el("tr", {}, el("th", {scope: "row", text: "TTFB"}), ["p50", "p90", "p99"].map((q) => el("td", {text: ms(p.ttfb_ms[q])}))),
      el("tr", {}, el("th", {scope: "row", text: "Latency"}), ["p50", "p90", "p99"].map((q) => el("td", {text: ms(p.latency_ms[q])})))));
  const errs = el("table", {class: "data", id: "errors"},
    el("caption", {text: "Errors by kind"}),
    el("thead", {}, el("tr", {}, el("th", {scope: "col", text: "Kind"}), el("th", {scope: "col", text: "Requests"}))),
    el("tbody", {}, d.errors_by_kind.length
      ? d.errors_by_kind.map((e) => el("tr", {}, el("td", {text: e.kind}), el("td", {text: num(e.requests)})))
      : el("tr", {}, el("td", {colspan: "2", text: "No errors in this period."}))));
  const charts = d.charts || {};
  main(
    el("h1", {text: "Overview"}),
    periodPicker(overview),
    el("p", {class: "period", id: "period", "data-since": d.since, "data-until": d.until,
      text: when(d.since) + " to " + when(d.until)}),
    grid,
    el("div", {class: "charts"},
      chart("Requests", charts.requests), chart("Billed tokens", charts.tokens), chart("Spend and savings", charts.spend)),
    el("div", {class: "pair"}, pctTable, errs),
  );
}

// -- Tables -----------------------------------------------------------------------------------

const TABLE_COLUMNS = [
  ["name", "Name", (r) => r.name === null ? "(none)" : r.name],
  ["requests", "Requests", (r) => num(r.requests)],
  ["input_tokens", "Input", (r) => num(r.input_tokens)],
  ["cache_read_tokens", "Cache read", (r) => num(r.cache_read_tokens)],
  ["output_tokens", "Output", (r) => num(r.output_tokens)],
  ["cost_usd", "Spend", (r) => usd(r.cost_usd)],
  ["saved_total_usd", "Saved", (r) => r.saved_total_usd === null ? "–" : usd(r.saved_total_usd)],
  ["response_cache_hits", "Cache hits", (r) => num(r.response_cache_hits)],
  ["errors", "Errors", (r) => num(r.errors)],
];

function sortable(id, caption, rows, linkFor) {
  let key = "requests";
  let dir = -1;
  const table = el("table", {class: "data sortable", id});
  function draw() {
    const sorted = rows.slice().sort((a, b) => {
      const x = a[key], y = b[key];
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * dir;
    });
    table.replaceChildren(
      el("caption", {text: caption}),
      el("thead", {}, el("tr", {}, TABLE_COLUMNS.map(([k, label]) => el("th", {
        scope: "col", "aria-sort": k === key ? (dir > 0 ? "ascending" : "descending") : "none"},
        el("button", {type: "button", "data-sort": k, text: label, onclick: () => {
          dir = k === key ? -dir : (k === "name" ? 1 : -1); key = k; draw();
        }}))))),
      el("tbody", {}, sorted.length ? sorted.map((r) => el("tr", {},
        TABLE_COLUMNS.map(([k, , cell], i) => {
          const text = cell(r);
          if (i === 0 && linkFor && r.name !== null) return el("th", {scope: "row"}, el("a", {href: linkFor(r), text}));
          return i === 0 ? el("th", {scope: "row", text}) : el("td", {"data-value": r[k] === null ? "" : r[k], text});
        }))) : el("tr", {}, el("td", {colspan: String(TABLE_COLUMNS.length), text: "No requests in this period."}))));
  }
  draw();
  return table;
}

function tablePage(by, title) {
  const render = async () => {
    const d = await api("/ui/api/table?by=" + by + "&period=" + PERIOD);
    const link = by === "key" ? (r) => "/ui/key/" + encodeURIComponent(r.name) + "?period=" + PERIOD : null;
    main(el("h1", {text: title}), periodPicker(render), sortable("table-" + by, title + ", " + when(d.since) + " to " + when(d.until), d.rows, link));
  };
  return render;
}

// -- One key ----------------------------------------------------------------------------------

async function keyPage() {
  const name = decodeURIComponent(location.pathname.slice("/ui/key/".length));
  const d = await api("/ui/api/key?name=" + encodeURIComponent(name) + "&period=" + PERIOD);
  const t = d.totals;
  const parts = [el("h1", {text: "Key " + name}), periodPicker(keyPage)];
  const k = d.key;
  if (k && k.budget_usd !== null && k.budget_usd !== undefined) {
    const spent = k.spent_usd || 0;
    const share = k.budget_usd > 0 ? Math.min(1, spent / k.budget_usd) : 1;
    parts.push(el("section", {class: "card"},
      el("h2", {text: "Budget (" + (k.budget_period || "total") + ")"}),
      el("div", {class: "bar", role: "progressbar", id: "budget-bar", "aria-label": "Budget used",
        "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(Math.round(share * 100))},
        el("span", {class: "fill", "data-share": share.toFixed(3)})),
      el("p", {id: "budget-remaining", text: usd(spent) + " spent of " + usd(k.budget_usd) + " (" + (share * 100).toFixed(1) + "%), " + usd(Math.max(0, k.budget_usd - spent)) + " remaining"})));
    // The width is set from script (the page's CSP allows no inline style attribute).
    parts[parts.length - 1].querySelector(".fill").style.width = (share * 100).toFixed(1) + "%";
  }
  if (k && k.limits) {
    parts.push(el("section", {class: "card"}, el("h2", {text: "Rate limits"}),
      el("ul", {}, Object.entries(k.limits).map(([lim, v]) => el("li", {text: lim + ": " + v.used + " of " + v.limit})))));
  }
  parts.push(el("dl", {class: "kpis"},
    kpi("key-requests", "Requests", num(t.requests), t.requests),
    kpi("key-cost", "Spend", usd(t.cost_usd), t.cost_usd),
    kpi("key-errors", "Errors", num(t.errors), t.errors)));
  parts.push(el("table", {class: "data", id: "key-recent"},
    el("caption", {text: "Recent requests (no payloads are kept)"}),
    el("thead", {}, el("tr", {}, ["When", "Model", "Route", "Status", "Outcome", "Input", "Output", "Spend", "Latency"].map((c) => el("th", {scope: "col", text: c})))),
    el("tbody", {}, d.recent.length ? d.recent.map((r) => el("tr", {},
      el("td", {text: when(r.ts)}), el("td", {text: r.model}), el("td", {text: r.route}), el("td", {text: r.status}),
      el("td", {text: r.outcome + (r.error_type ? " (" + r.error_type + ")" : "")}), el("td", {text: num(r.input_tokens)}),
      el("td", {text: num(r.output_tokens)}), el("td", {text: usd(r.cost_usd)}), el("td", {text: ms(r.latency_ms)}))) :
      el("tr", {}, el("td", {colspan: "9", text: "No requests with this key."})))));
  main(...parts);
}

// -- Live -------------------------------------------------------------------------------------

let SOURCE = null;

function live() {
  const count = el("p", {class: "big", id: "live-inflight", "data-value": "0", text: "0 in flight"});
  const flying = el("tbody", {});
  const done = el("tbody", {});
  const note = el("p", {class: "hint", id: "live-worker"});
  main(el("h1", {text: "Live"}), count, note,
    el("table", {class: "data", id: "live-flying"}, el("caption", {text: "In flight"}),
      el("thead", {}, el("tr", {}, ["Model", "Route", "Stream", "Key", "Age"].map((c) => el("th", {scope: "col", text: c})))), flying),
    el("table", {class: "data", id: "live-recent"}, el("caption", {text: "Last completed"}),
      el("thead", {}, el("tr", {}, ["When", "Model", "Route", "Status", "Outcome", "Key", "In", "Out", "Cache", "TTFB", "Latency"].map((c) => el("th", {scope: "col", text: c})))), done));
  if (SOURCE) SOURCE.close();
  SOURCE = new EventSource("/ui/api/live");
  SOURCE.addEventListener("error", () => {
    // The browser retries by itself; a closed stream means the session ended (or the server went).
    if (SOURCE.readyState === EventSource.CLOSED) api("/ui/api/session").catch(() => status("Live feed lost: reload the page."));
  });
  SOURCE.addEventListener("snapshot", (ev) => {
    const s = JSON.parse(ev.data);
    count.dataset.value = String(s.in_flight);
    count.textContent = s.in_flight + " in flight";
    note.textContent = "Worker " + s.pid + (SESSION && SESSION.workers > 1 ? " (one of " + SESSION.workers + ": each worker has its own feed)" : "");
    flying.replaceChildren(...s.in_flight_requests.map((r) => el("tr", {},
      el("td", {text: r.model}), el("td", {text: r.route}), el("td", {text: r.stream ? "yes" : "no"}),
      el("td", {text: r.key_name || "–"}), el("td", {text: r.age_s.toFixed(1) + " s"}))));
    done.replaceChildren(...s.recent.map((r) => el("tr", {"data-request-id": r.request_id},
      el("td", {text: when(r.ts)}), el("td", {text: r.model}), el("td", {text: r.route}), el("td", {text: r.status}),
      el("td", {text: r.outcome}), el("td", {text: r.key_name || "–"}), el("td", {text: num(r.input_tokens)}),
      el("td", {text: num(r.output_tokens)}), el("td", {text: r.cache || "–"}), el("td", {text: ms(r.ttfb_ms)}),
      el("td", {text: ms(r.latency_ms)}))));
    done.dataset.count = String(s.recent.length);
  });
}

// -- Keys -------------------------------------------------------------------------------------

const FIELDS = [
  ["budget_usd", "Budget (USD)", "number"],
  ["rpm", "Requests/min", "number"],
  ["tpm", "Tokens/min", "number"],
  ["max_parallel", "Parallel", "number"],
  ["models", "Models (comma list)", "text"],
  ["expires_in", "Expires in (e.g. 30d)", "text"],
];

function limitsFrom(form, creating) {
  const body = {};
  for (const [name, , kind] of FIELDS) {
    const v = form.elements[name].value.trim();
    if (v === "") continue;
    if (v === "none") { body[name] = null; continue; }
    if (name === "models") body[name] = v.split(",").map((m) => m.trim()).filter(Boolean);
    else if (name === "budget_usd") body[name] = Number(v);
    else if (kind === "number") body[name] = parseInt(v, 10);
    else body[name] = v;
  }
  const period = form.elements.budget_period.value;
  if (period) body.budget_period = period;
  return body;
}

function limitFields(prefix) {
  return [
    FIELDS.map(([name, label, kind]) => el("label", {for: prefix + name}, label,
      el("input", {id: prefix + name, name, type: kind === "number" ? "text" : "text", inputmode: kind === "number" ? "decimal" : null, size: "10"}))),
    el("label", {for: prefix + "budget_period"}, "Budget period",
      el("select", {id: prefix + "budget_period", name: "budget_period"},
        el("option", {value: "", text: "(unchanged / month)"}),
        ["day", "week", "month", "total"].map((p) => el("option", {value: p, text: p})))),
  ];
}

function shownOnce(title, info) {
  return el("div", {class: "shown-once", role: "alert", id: "new-key"},
    el("strong", {text: title + " — copy it now, it is not shown again: "}),
    el("code", {id: "new-key-value", text: info.key}));
}

async function keys() {
  const data = await api("/ui/api/keys");
  const notice = el("div", {id: "key-notice"});
  const limit = (v) => (v === null || v === undefined ? "–" : String(v));
  const rows = data.data.map((k) => el("tr", {"data-key": k.name},
    el("th", {scope: "row"}, el("a", {href: "/ui/key/" + encodeURIComponent(k.name), text: k.name})),
    el("td", {class: "key-status", text: k.status}),
    el("td", {text: k.budget_usd === null ? "–" : usd(k.budget_usd) + " / " + k.budget_period}),
    el("td", {text: limit(k.rpm)}), el("td", {text: limit(k.tpm)}), el("td", {text: limit(k.max_parallel)}),
    el("td", {text: k.models.length ? k.models.join(", ") : "any"}),
    el("td", {text: k.expires_at ? when(k.expires_at) : "never"}),
    el("td", {}, k.status === "revoked" ? "" : [
      el("button", {type: "button", class: "plain", "data-action": "rotate", "aria-label": "Rotate " + k.name, text: "Rotate",
        onclick: async () => {
          if (!confirm("Rotate " + k.name + "? The old key keeps working for 24 hours.")) return;
          const info = await api("/ui/api/keys/" + encodeURIComponent(k.name) + "/rotate", {method: "POST", headers: {"content-type": "application/json"}, body: "{}"});
          await keys();
          document.getElementById("key-notice").replaceChildren(shownOnce("New key for " + k.name, info));
        }}),
      " ",
      el("button", {type: "button", class: "danger", "data-action": "revoke", "aria-label": "Revoke " + k.name, text: "Revoke",
        onclick: async () => {
          if (!confirm("Revoke " + k.name + "? Requests with it are refused at once.")) return;
          await api("/ui/api/keys/" + encodeURIComponent(k.name), {method: "DELETE"});
          await keys();
          status("Revoked " + k.name + ".");
        }}),
    ])));
  const table = el("table", {class: "data", id: "keys-table"}, el("caption", {text: "Virtual keys"}),
    el("thead", {}, el("tr", {}, ["Name", "Status", "Budget", "RPM", "TPM", "Parallel", "Models", "Expires", "Actions"].map((c) => el("th", {scope: "col", text: c})))),
    el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", {colspan: "9", text: "No keys yet."}))));
  const create = el("form", {class: "inline", id: "create-key", "aria-label": "Create a key"},
    el("label", {for: "new-name"}, "Name", el("input", {id: "new-name", name: "name", required: true, size: "14"})),
    limitFields("new-"),
    el("button", {type: "submit", text: "Create key"}));
  create.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const body = Object.assign({name: create.elements.name.value.trim()}, limitsFrom(create, true));
      const info = await api("/ui/api/keys", {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body)});
      await keys();
      document.getElementById("key-notice").replaceChildren(shownOnce("Key " + info.name, info));
    } catch (err) { status("Not created: " + err.message); }
  });
  const names = data.data.filter((k) => k.status !== "revoked").map((k) => k.name);
  const update = el("form", {class: "inline", id: "update-key", "aria-label": "Change a key's limits"},
    el("label", {for: "upd-name"}, "Key", el("select", {id: "upd-name", name: "name"}, names.map((n) => el("option", {value: n, text: n})))),
    limitFields("upd-"),
    el("button", {type: "submit", text: "Update limits"}));
  update.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const name = update.elements.name.value;
      const body = limitsFrom(update, false);
      await api("/ui/api/keys/" + encodeURIComponent(name), {method: "PATCH", headers: {"content-type": "application/json"}, body: JSON.stringify(body)});
      await keys();
      status("Updated " + name + ".");
    } catch (err) { status("Not updated: " + err.message); }
  });
  main(el("h1", {text: "Keys"}), notice, table,
    el("section", {class: "card"}, el("h2", {text: "Create a key"}), create),
    names.length ? el("section", {class: "card"}, el("h2", {text: "Change limits"}),
      el("p", {class: "hint", text: "Empty fields stay as they are; \"none\" removes a limit."}), update) : "");
}

// -- start ------------------------------------------------------------------------------------

const PAGES = {
  "/ui": ["overview", overview],
  "/ui/": ["overview", overview],
  "/ui/models": ["models", tablePage("model", "By model")],
  "/ui/by-key": ["by-key", tablePage("key", "By key")],
  "/ui/upstream-keys": ["upstream-keys", tablePage("upstream-key", "By upstream key")],
  "/ui/live": ["live", live],
  "/ui/keys": ["keys", keys],
};

async function start() {
  SESSION = await api("/ui/api/session");
  CSRF = SESSION.csrf;
  if (SESSION.keys_mode) document.getElementById("nav-keys").hidden = false;
  document.getElementById("logout").addEventListener("click", async () => {
    await api("/ui/logout", {method: "POST"});
    location.assign("/ui/login");
  });
  const [name, render] = location.pathname.startsWith("/ui/key/") ? ["by-key", keyPage] : (PAGES[location.pathname] || PAGES["/ui"]);
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === name) a.setAttribute("aria-current", "page");
  }
  try {
    await render();
    document.body.dataset.ready = "1";
  } catch (err) {
    status("Could not load this page: " + err.message);
  }
}

start();
