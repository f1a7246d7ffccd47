// vision-serve's try-it page: photos in, species / aesthetic score / zero-shot answers out, and a search over the
// photos on the page (CLIP text and image embeddings, ranked by dot product in the browser). No build step.
"use strict";
const TASK = "/api/tasks/zero-shot-image-classification";
const TEXT_TASK = "/api/tasks/text-embedding";
const KEY = "vision-serve-api-key";
const PARALLEL_PHOTOS = 3; // photos in flight at once; the rest wait their turn
const $ = (selector, root = document) => root.querySelector(selector);

// --- talking to the service -------------------------------------------------------------------------------------
let keyPrompt = null;

function askKey(message) {
  if (!keyPrompt) {
    keyPrompt = new Promise((resolve) => {
      const form = $("#key-form");
      $("#key-error").textContent = message || "";
      form.hidden = false;
      $("#key").focus();
      form.onsubmit = (event) => {
        event.preventDefault();
        sessionStorage.setItem(KEY, $("#key").value.trim());
        form.hidden = true;
        keyPrompt = null;
        resolve();
      };
    });
  }
  return keyPrompt;
}

async function api(path, init = {}) {
  for (;;) {
    const headers = new Headers(init.headers || {});
    const key = sessionStorage.getItem(KEY);
    if (key) headers.set("Authorization", `Bearer ${key}`);
    const response = await fetch(path, { ...init, headers });
    if (response.status !== 401) return response;
    await askKey(key ? "That key was refused; try again." : "");
  }
}

async function json(response) {
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (!response.ok) {
    const detail = body && (body.detail || body.error);
    throw new Error(`${detail || response.statusText || "request failed"} (${response.status}${body && body.error ? " " + body.error : ""})`);
  }
  return body;
}

// --- drawing ----------------------------------------------------------------------------------------------------
function tag(section, model) {
  const span = $(".tag", section);
  span.textContent = model.tag;
  if (model.variant === "dev") {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = "dev model: answers are meaningless";
    span.append(" ", badge);
  }
}

const percent = (p) => `${(100 * p).toFixed(1)}%`;

function bars(list, rows, label = percent) {
  list.replaceChildren(...rows.map(([name, p]) => {
    const li = document.createElement("li");
    li.dataset.name = name;
    li.dataset.p = String(p);
    const text = document.createElement("span");
    text.textContent = name;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("role", "img");
    bar.setAttribute("aria-label", label(p));
    const fill = document.createElement("span");
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    bar.append(fill);
    const value = document.createElement("span");
    value.textContent = label(p);
    li.append(text, bar, value);
    return li;
  }));
}

function state(section, text, status) {
  const p = $(".state", section);
  p.textContent = text;
  p.dataset.status = status;
  p.classList.toggle("error", status === "error");
}

// --- the three answers for one photo ----------------------------------------------------------------------------
const STATUS_TEXT = { identified: "identified", uncertain: "uncertain", not_organism: "not an organism" };

async function species(section, file) {
  const k = $("#top-k").value;
  const body = await json(await api(`/classify?top_k=${k}`, { method: "POST", body: file }));
  tag(section, body.model);
  bars($(".bars", section), body.predictions.map((p) => [p.common_name ? `${p.species} (${p.common_name})` : p.species, p.score]));
  $(".bars", section).querySelectorAll("li").forEach((li, i) => {
    const lineage = body.predictions[i].lineage;
    if (lineage) li.title = lineage.join(" › ");
  });
  const verdict = $(".verdict", section);
  verdict.dataset.status = body.status;
  const rolled = body.rollup ? ` · most likely the ${body.rollup.rank} ${body.rollup.name} (${(100 * body.rollup.score).toFixed(0)}%)` : "";
  verdict.textContent = `${STATUS_TEXT[body.status] || body.status}${rolled}`;
  state(section, `top ${k}`, "done");
}

const MEASURES = [["sharpness_score", "sharpness"], ["exposure_score", "exposure"], ["resolution_score", "resolution"],
  ["rule_of_thirds_score", "rule of thirds"], ["visual_interest_score", "visual interest"]];

async function aesthetic(section, file) {
  const body = await json(await api("/score?report=1", { method: "POST", body: file }));
  tag(section, body.model);
  const scale = $(".scale", section);
  scale.hidden = false;
  $(".marker", scale).style.left = `${body.score * 10}%`;
  const value = $(".value", section);
  value.textContent = `${body.score.toFixed(2)} / 10`;
  value.title = `raw ${body.raw}`;
  scale.title = value.title;
  state(section, "0 (worst) to 10 (best)", "done");
  const report = $(".report", section);
  report.hidden = false;
  const overall = $(".overall", report);
  overall.textContent = `Overall ${body.overall_score.toFixed(0)} / 100 (technical ${body.technical_score.toFixed(1)}, composition ${body.composition_score.toFixed(1)}; ${body.image_width}×${body.image_height} px)`;
  overall.dataset.overall = String(body.overall_score);
  bars($(".bars", report), MEASURES.map(([field, name]) => [name, body[field] / 10]), (p) => `${(10 * p).toFixed(1)} / 10`);
  $(".notes", report).replaceChildren(...body.notes.map((text) => {
    const li = document.createElement("li");
    li.textContent = text;
    return li;
  }));
}

function dataUri(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error("The file could not be read."));
    reader.readAsDataURL(file);
  });
}

function splitList(text, commas) {
  const lines = text.split("\n").map((s) => s.trim()).filter(Boolean);
  return commas && lines.length === 1 ? lines[0].split(",").map((s) => s.trim()).filter(Boolean) : lines;
}

async function zeroShot(section, file) {
  const classes = splitList($("#classes").value, true);
  const model = $("#model").value;
  if (!classes.length || !model) { state(section, "skipped: no classes or no model", "skipped"); return; }
  const templates = splitList($("#templates").value, false);
  const config = templates.length ? { templates } : {};
  const image = await dataUri(file);
  const job = await json(await api(`${TASK}/${model}/jobs`, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ image, classes, config }) }));
  const seen = [job.status];
  state(section, `job ${seen.join(" → ")}`, job.status);
  let status = job;
  while (!["complete", "failed", "cancelled"].includes(status.status)) {
    status = await json(await api(`${TASK}/jobs/${job.id}?wait=2`));
    if (status.status !== seen[seen.length - 1]) seen.push(status.status);
    state(section, `job ${seen.join(" → ")}`, status.status);
  }
  $(".tag", section).textContent = model;
  if (status.status !== "complete") throw new Error(status.error || `The job was ${status.status}.`);
  const rows = classes.map((c, i) => [c, status.result.probabilities[i]]).sort((a, b) => b[1] - a[1]);
  bars($(".bars", section), rows);
}

// --- search over the photos on the page -------------------------------------------------------------------------
function imageEmbedding(card, model) {
  card.embeddings = card.embeddings || {}; // per model, asked once per photo
  if (!card.embeddings[model]) {
    card.embeddings[model] = api(`/embed?model=${encodeURIComponent(model)}`, { method: "POST", body: card.file })
      .then(json).then((body) => body.embedding);
    card.embeddings[model].catch(() => { delete card.embeddings[model]; });
  }
  return card.embeddings[model];
}

async function search(event) {
  event.preventDefault();
  const out = $("#search-state");
  const query = $("#query").value.trim();
  const model = $("#search-model").value;
  const cards = [...document.querySelectorAll("#cards .card")];
  out.classList.remove("error");
  if (!cards.length || !query || !model) {
    out.textContent = !cards.length ? "Add some photos first." : "Type what to look for.";
    return;
  }
  out.textContent = "searching…";
  try {
    const text = await json(await api("/embed/text", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model, texts: [query] }) }));
    const q = text.embeddings[0];
    const ranked = await Promise.all(cards.map(async (card) => {
      const v = await imageEmbedding(card, model);
      return [card, v.reduce((sum, x, i) => sum + x * q[i], 0)];
    }));
    ranked.sort((a, b) => b[1] - a[1]);
    ranked.forEach(([card, similarity], i) => {
      card.dataset.rank = String(i + 1);
      card.dataset.similarity = String(similarity);
      $(".similarity", card).textContent = `#${i + 1} for “${query}” (similarity ${similarity.toFixed(3)})`;
    });
    $("#cards").append(...ranked.map(([card]) => card));
    const notes = [text.truncated[0] ? "the query was cut to the model's context" : "",
      text.model.variant === "dev" ? "dev model: the order is meaningless" : ""].filter(Boolean);
    out.textContent = `${ranked.length} photos ranked by ${model}, best first` + (notes.length ? ` (${notes.join("; ")})` : "");
    out.dataset.status = "done";
  } catch (err) {
    out.textContent = err.message;
    out.classList.add("error");
    out.dataset.status = "error";
  }
}

async function photo(file) {
  const card = $("#card-template").content.firstElementChild.cloneNode(true);
  card.file = file;
  const img = $("img", card);
  img.src = URL.createObjectURL(file);
  img.alt = `Photo ${file.name || "pasted"}`;
  $(".name", card).textContent = `${file.name || "pasted image"} (${Math.round(file.size / 1024)} KB)`;
  $("#cards").prepend(card);
  return async () => {
    await Promise.all([[".species", species], [".aesthetic", aesthetic], [".zero-shot", zeroShot]].map(
      async ([selector, run]) => {
        const section = $(selector, card);
        state(section, "working…", "working");
        try { await run(section, file); } catch (err) { state(section, err.message, "error"); }
      }));
    card.dataset.done = "true";
  };
}

async function addFiles(files) {
  const jobs = [];
  for (const file of files) jobs.push(await photo(file));
  let next = 0;
  const lane = async () => { while (next < jobs.length) await jobs[next++](); };
  await Promise.all(Array.from({ length: Math.min(PARALLEL_PHOTOS, jobs.length) }, lane));
}

// --- set-up -----------------------------------------------------------------------------------------------------
async function loadModels(select, task, what) {
  try {
    const names = await json(await api(`${task}/models`));
    select.replaceChildren(...names.map((name) => new Option(name, name)));
  } catch (err) {
    select.replaceChildren(new Option("(no models)", ""));
    $("#page-error").textContent = `${what} models could not be listed: ${err.message}`;
  }
}

function setUp() {
  const topK = $("#top-k");
  for (let k = 1; k <= 10; k++) topK.append(new Option(String(k), String(k), k === 5, k === 5));
  const input = $("#files");
  input.addEventListener("change", () => { addFiles([...input.files]); input.value = ""; });
  const drop = $("#drop");
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); addFiles([...e.dataTransfer.files]); });
  document.addEventListener("paste", (e) => {
    const files = [...e.clipboardData.items].filter((i) => i.kind === "file").map((i) => i.getAsFile());
    if (files.length) addFiles(files);
  });
  $("#search").addEventListener("submit", search);
  loadModels($("#model"), TASK, "Zero-shot");
  loadModels($("#search-model"), TEXT_TASK, "Search");
}

setUp();
