// The demo page: shoppers, their history, their top 10 with buy probabilities, and a review
// classifier. It uses the public API only (relative URLs, so it works under any prefix) and
// shows every API error it gets.
"use strict";

const HISTORY_SHOWN = 20;
const HISTORY_SENT = 200; // the API's limit on history length
const K = 10;

const $ = (id) => document.getElementById(id);
let current = 0; // the newest shopper request; older answers are dropped

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

class ApiError extends Error {}

async function api(path, body) {
  const headers = { Accept: "application/json" };
  const key = $("api-key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  const init = { headers };
  if (body !== undefined) {
    init.method = "POST";
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(`${path}: the service cannot be reached (${e.message}).`);
  }
  let data = null;
  try {
    data = await response.json();
  } catch (e) {
    data = null;
  }
  if (!response.ok) {
    const err = data && data.error;
    const detail = err ? `${err.code}: ${err.message}` : response.statusText;
    throw new ApiError(`${path} answered ${response.status} (${detail})`);
  }
  return data;
}

function showError(e) {
  const box = $("error");
  box.textContent = e instanceof ApiError ? e.message : `Unexpected error: ${e}`;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function productLabel(item) {
  return item.title ? item.title : item.id;
}

function bar(p) {
  return el("span", { class: "bar", style: `width: ${Math.round(p * 100)}px` });
}

async function loadModels() {
  try {
    const data = await api("v1/models");
    const names = data.models.map(
      (m) => `${m.name} v${m.version ?? "?"} (${m.task ?? m.state})`
    );
    $("models").textContent = names.length ? `Serving ${names.join(", ")}` : "No models loaded.";
  } catch (e) {
    $("models").textContent = "Models: unknown";
    showError(e);
  }
}

async function loadUsers() {
  const select = $("user-select");
  try {
    const data = await api("v1/users?limit=100");
    select.replaceChildren(el("option", { value: "" }, `Pick one of ${data.total} shoppers`));
    const list = $("user-ids");
    list.replaceChildren();
    for (const user of data.users) {
      select.append(el("option", { value: user.id }, `${user.id} (${user.events} events)`));
      list.append(el("option", { value: user.id }));
    }
    if (data.users.length) {
      select.value = data.users[0].id;
      await showUser(data.users[0].id);
    }
  } catch (e) {
    select.replaceChildren(el("option", { value: "" }, "No shoppers"));
    showError(e);
  }
}

function renderHistory(history) {
  const list = $("history");
  list.replaceChildren();
  if (!history.length) list.append(el("li", { class: "muted" }, "No events."));
  for (const item of history.slice(0, HISTORY_SHOWN)) {
    list.append(
      el(
        "li",
        { dataset: { id: item.id } },
        el("span", { class: `event ${item.event}` }, item.event),
        " ",
        productLabel(item),
        el("span", { class: "muted" }, ` · ${item.category ?? ""} · ${item.timestamp.slice(0, 10)}`)
      )
    );
  }
}

function renderRecommendations(items, probabilities) {
  const body = $("recommendations").querySelector("tbody");
  body.replaceChildren();
  items.forEach((item, i) => {
    const p = probabilities ? probabilities[i] : null;
    body.append(
      el(
        "tr",
        { class: "rec", dataset: { id: item.id } },
        el("td", {}, i + 1),
        el("td", {}, productLabel(item), el("div", { class: "muted" }, item.id)),
        el("td", {}, item.category ?? ""),
        el("td", {}, item.score.toFixed(2)),
        el("td", { class: "probability" }, ...(p === null ? ["–"] : [bar(p), `${(p * 100).toFixed(1)}%`]))
      )
    );
  });
  if (!items.length) body.append(el("tr", {}, el("td", { colspan: 5 }, "No recommendations.")));
}

async function showUser(userId) {
  const request = ++current;
  clearError();
  $("rec-user").textContent = userId;
  $("rec-meta").textContent = "Ranking…";
  $("recommendations").querySelector("tbody").replaceChildren(); // not the previous shopper's
  try {
    const user = await api(`v1/users/${encodeURIComponent(userId)}?limit=${HISTORY_SENT}`);
    if (request !== current) return;
    renderHistory(user.history);
    const history = user.history.map((h) => ({ id: h.id, event: h.event }));
    const recs = await api("v1/recommend", { user: { history }, k: K });
    if (request !== current) return;
    renderRecommendations(recs.items, null);
    $("rec-meta").textContent = `ranker ${recs.model} v${recs.version}; scoring…`;
    if (!recs.items.length) return;
    const scores = await api("v1/score", {
      user: { history },
      products: recs.items.map((item) => item.id),
    });
    if (request !== current) return;
    renderRecommendations(
      recs.items,
      scores.scores.map((s) => s.probability)
    );
    $("rec-meta").textContent =
      `ranker ${recs.model} v${recs.version}; buy probabilities from ${scores.model} v${scores.version}`;
  } catch (e) {
    if (request === current) {
      $("rec-meta").textContent = "";
      showError(e);
    }
  }
}

async function classify(event) {
  event.preventDefault();
  clearError();
  const text = $("review-text").value;
  const out = $("classification");
  const button = event.submitter || $("review-form").querySelector("button");
  button.disabled = true;
  try {
    const data = await api("v1/classify", { texts: [text] });
    const prediction = data.predictions[0];
    const rows = Object.entries(prediction.probabilities).sort((a, b) => b[1] - a[1]);
    out.replaceChildren(
      el("div", { class: "label", dataset: { label: prediction.label } }, prediction.label),
      el(
        "table",
        {},
        el(
          "tbody",
          {},
          ...rows.map(([label, p]) =>
            el("tr", {}, el("td", {}, label), el("td", {}, bar(p), `${(p * 100).toFixed(1)}%`))
          )
        )
      ),
      el("p", { class: "muted" }, `${data.model} v${data.version}`)
    );
  } catch (e) {
    out.replaceChildren();
    showError(e);
  } finally {
    button.disabled = false;
  }
}

function init() {
  const saved = sessionStorage.getItem("recsys-api-key");
  if (saved) $("api-key").value = saved;
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem("recsys-api-key", $("api-key").value.trim());
    loadModels();
    loadUsers();
  });
  $("user-select").addEventListener("change", (e) => {
    if (e.target.value) showUser(e.target.value);
  });
  $("user-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("user-id").value.trim() || $("user-select").value;
    if (id) showUser(id);
  });
  $("review-form").addEventListener("submit", classify);
  loadModels();
  loadUsers();
}

init();
