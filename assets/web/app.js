// The Taskdeck dashboard: tasks (server-side sort, filter and paging,
// updated live from the event stream), one-click random mock tasks, a
// create form built from the task types, task details with the live log
// and progress, resource history, workers and queues.

import { api, ApiError, followEvents, followLog, forgetToken, saveToken, takeToken, whenUnauthorized } from "./api.js";
import { heatStrip, lineChart } from "./charts.js";

const $ = (id) => document.getElementById(id);
const PAGE = 50;

const state = {
  view: { status: "", task: "", sort: "id", order: "desc", offset: 0 },
  total: 0,
  rows: new Map(),
  selected: null,
  taskTypes: [],
  workers: new Map(),
  queues: new Map(),
  paused: false,
  minutes: 15,
  history: [],
  events: null,
  log: null,
};

// ---------- small helpers ----------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child != null) node.append(child);
  }
  return node;
}

function seconds(s) {
  if (s == null) return "";
  if (s < 1) return Math.round(s * 1000) + " ms";
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
  if (s < 3600) return Math.floor(s / 60) + "m " + String(Math.round(s % 60)).padStart(2, "0") + "s";
  return Math.floor(s / 3600) + "h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
}

function bytes(n) {
  if (n == null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return n.toFixed(n < 10 && i > 0 ? 1 : 0) + " " + units[i];
}

function when(at) {
  if (at == null) return "";
  const date = new Date(at * 1000);
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toTimeString().slice(0, 8) : date.toISOString().slice(5, 10) + " " + date.toTimeString().slice(0, 5);
}

function argsText(task) {
  const parts = (task.args || []).map((a) => (typeof a === "string" ? a : JSON.stringify(a)));
  for (const [k, v] of Object.entries(task.kwargs || {})) parts.push(k + "=" + (typeof v === "string" ? v : JSON.stringify(v)));
  return parts.join(", ");
}

/** How long a task took (finished) or has run so far (running). */
function took(task) {
  if (task.run_time_s != null) return task.run_time_s;
  if (task.status === "running" && task.started_at != null) return Math.max(0, Date.now() / 1000 - task.started_at);
  return null;
}

let noticeTimer = null;
function notice(text, kind = "error") {
  $("notice-text").textContent = text;
  $("notice").className = "notice " + (kind === "info" ? "info" : "");
  $("notice").hidden = false;
  clearTimeout(noticeTimer);
  if (kind === "info") noticeTimer = setTimeout(() => ($("notice").hidden = true), 5000);
}

function failed(what) {
  return (error) => notice(what + ": " + (error instanceof ApiError ? error.message : String(error)));
}

/** Runs `fn` at most once per `ms`, trailing calls folded into one. */
function throttle(ms, fn) {
  let last = 0;
  let timer = null;
  return () => {
    if (timer) return;
    const wait = Math.max(0, last + ms - Date.now());
    timer = setTimeout(async () => {
      last = Date.now();
      try {
        await fn();
      } finally {
        timer = null;
      }
    }, wait);
  };
}

// ---------- the secret ----------

function askToken(message) {
  $("token-error").hidden = !message;
  $("token-error").textContent = message || "";
  $("token-input").value = "";
  if (!$("token-dialog").open) $("token-dialog").showModal();
  $("token-input").focus();
}

whenUnauthorized((message) => {
  forgetToken();
  if (state.events) state.events.abort();
  state.events = null;
  askToken("The server refused this secret: " + message);
});

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("token-input").value.trim();
  if (!value) return;
  saveToken(value);
  $("token-dialog").close();
  boot();
});

// ---------- tasks ----------

function listQuery() {
  const { status, task, sort, order, offset } = state.view;
  const query = new URLSearchParams({ limit: PAGE, offset, sort, order });
  if (status) query.set("status", status);
  if (task) query.set("task", task);
  return query;
}

// Only the answer to the latest listing is shown: an older one that
// arrives later (the view changed meanwhile) is dropped.
let listing = 0;

async function loadTasks() {
  const mine = ++listing;
  const answer = await api("GET", "api/v1/tasks?" + listQuery());
  if (mine !== listing) return;
  state.total = answer.total ?? answer.count;
  if (answer.count === 0 && state.view.offset > 0 && state.total > 0) {
    state.view.offset = Math.max(0, Math.floor((state.total - 1) / PAGE) * PAGE);
    return loadTasks();
  }
  state.rows = new Map(answer.tasks.map((t) => [t.id, t]));
  renderTasks();
}
const refreshTasks = throttle(700, () => loadTasks().catch(failed("Listing tasks")));

function statusPill(task) {
  return el("span", { class: "status s-" + task.status }, task.status);
}

function progressCell(task) {
  const fraction = task.progress && task.progress.fraction;
  if (task.status === "completed") return el("span", { class: "muted" }, "done");
  if (fraction == null) {
    if (task.status === "running") return el("span", { class: "muted" }, (task.progress && task.progress.message) || "running");
    if (task.waiting) return el("span", { class: "muted", title: task.waiting.message }, task.waiting.code.replace(/_/g, " "));
    return "";
  }
  const bar = el("div", { class: "progress", title: (task.progress.message || "") }, el("div", { class: "bar" }), el("span", {}, Math.round(fraction * 100) + "%"));
  bar.firstChild.style.width = (fraction * 100).toFixed(1) + "%";
  return bar;
}

function actionsCell(task) {
  const cell = el("td", { class: "actions" });
  if (["queued", "retrying", "running"].includes(task.status)) {
    const label = task.status === "running" ? "Stop" : "Remove";
    cell.append(el("button", { type: "button", class: "danger remove", title: label + " task " + task.id, onclick: (e) => { e.stopPropagation(); removeTask(task.id); } }, label));
  } else if (task.status === "failed" || task.status === "cancelled") {
    cell.append(el("button", { type: "button", class: "quiet retry", title: "Retry task " + task.id, onclick: (e) => { e.stopPropagation(); retryTask(task.id); } }, "Retry"));
  }
  return cell;
}

function taskRow(task) {
  const row = el("tr", { dataset: { id: task.id, status: task.status }, onclick: () => select(task.id) });
  if (task.id === state.selected) row.classList.add("selected");
  const args = argsText(task);
  row.append(
    el("td", { class: "num" }, String(task.id)),
    el("td", { title: task.task }, task.task),
    el("td", { class: "args", title: args }, args),
    el("td", {}, statusPill(task), task.held ? el("span", { class: "held" }, "held") : null),
    el("td", { class: "num" }, String(task.priority)),
    el("td", {}, progressCell(task)),
    el("td", { class: "num took" }, seconds(took(task))),
    el("td", { class: "num muted", title: new Date(task.submitted_at * 1000).toString() }, when(task.submitted_at)),
    actionsCell(task),
  );
  return row;
}

function renderTasks() {
  const body = $("task-rows");
  body.replaceChildren(...[...state.rows.values()].map(taskRow));
  $("empty").hidden = state.rows.size > 0;
  const { offset } = state.view;
  const shown = state.rows.size;
  $("page-info").textContent = shown ? `${(offset + 1).toLocaleString()}–${(offset + shown).toLocaleString()} of ${state.total.toLocaleString()}` : `0 of ${state.total.toLocaleString()}`;
  $("page-prev").disabled = offset === 0;
  $("page-next").disabled = offset + shown >= state.total;
  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.classList.toggle("sorted", th.dataset.sort === state.view.sort);
    th.classList.toggle("asc", th.dataset.sort === state.view.sort && state.view.order === "asc");
  }
  $("remove-selected").disabled = !removable(state.rows.get(state.selected));
  // Time to first render, as BENCHMARKS measures it.
  if (state.rows.size && !performance.getEntriesByName("tasks-rendered").length) performance.mark("tasks-rendered");
}

function removable(task) {
  return !!task && ["queued", "retrying", "running"].includes(task.status);
}

/** A task changed: its row (if shown) and the details follow at once. */
function taskChanged(task) {
  if (state.rows.has(task.id)) {
    const merged = { ...state.rows.get(task.id), ...task };
    state.rows.set(task.id, merged);
    const old = document.querySelector(`#task-rows tr[data-id="${task.id}"]`);
    if (old) old.replaceWith(taskRow(merged));
    if (task.id === state.selected) $("remove-selected").disabled = !removable(merged);
  }
  if (task.id === state.selected) renderDetails(task);
}

async function removeTask(id) {
  try {
    const answer = await api("DELETE", `api/v1/tasks/${id}`);
    notice(answer.outcome === "removed" ? `Task ${id} removed from the queue.` : `Task ${id} is being stopped.`, "info");
    if (answer.task) taskChanged(answer.task);
    refreshTasks();
    refreshCounts();
  } catch (error) {
    failed(`Removing task ${id}`)(error);
  }
}

async function retryTask(id) {
  try {
    await api("POST", `api/v1/tasks/${id}/retry`);
    notice(`Task ${id} queued again.`, "info");
    refreshTasks();
    refreshCounts();
  } catch (error) {
    failed(`Retrying task ${id}`)(error);
  }
}

async function createRandom() {
  $("create-random").disabled = true;
  try {
    const answer = await api("POST", "api/v1/tasks/example");
    notice(`Submitted task ${answer.id}: ${answer.task} (${argsText(answer)}).`, "info");
    if (state.view.offset !== 0 && state.view.sort === "id" && state.view.order === "desc") state.view.offset = 0;
    await loadTasks();
    refreshCounts();
  } catch (error) {
    failed("Submitting a random mock task")(error);
  } finally {
    $("create-random").disabled = false;
  }
}

// ---------- details ----------

function select(id) {
  state.selected = id;
  for (const row of document.querySelectorAll("#task-rows tr")) row.classList.toggle("selected", Number(row.dataset.id) === id);
  $("remove-selected").disabled = !removable(state.rows.get(id));
  $("details").hidden = false;
  $("details-log").textContent = "";
  if (state.log) state.log.abort();
  state.log = null;
  api("GET", `api/v1/tasks/${id}`).then((task) => {
    if (state.selected !== id) return;
    renderDetails(task);
  }, failed(`Reading task ${id}`));
}

function renderDetails(task) {
  $("details-title").textContent = `Task ${task.id} · ${task.task}`;
  const fields = [
    ["Status", statusPill(task)],
    ["Arguments", argsText(task) || "none"],
    ["Queue", task.queue],
    ["Priority", String(task.priority)],
    ["Attempts", String(task.attempts) + (task.max_retries != null ? ` (retries ${task.max_retries})` : "")],
    ["Worker", task.worker || ""],
    ["Submitted", when(task.submitted_at)],
    ["Started", when(task.started_at)],
    ["Finished", when(task.finished_at)],
    ["Waited", seconds(task.queue_wait_s)],
    ["Took", seconds(took(task))],
    ["Waiting", task.waiting ? task.waiting.message : ""],
    ["Result", task.result != null ? JSON.stringify(task.result) : ""],
    ["Error", task.error || ""],
  ].filter(([, v]) => v !== "" && v != null);
  $("details-fields").replaceChildren(...fields.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  $("details-remove").disabled = !removable(task);
  $("details-remove").textContent = task.status === "running" ? "Stop" : "Remove";
  $("details-retry").disabled = !(task.status === "failed" || task.status === "cancelled");
  const progress = task.progress;
  $("details-progress").hidden = !(progress && progress.fraction != null);
  if (progress && progress.fraction != null) {
    $("details-progress").querySelector(".bar").style.width = (progress.fraction * 100).toFixed(1) + "%";
    const metrics = Object.entries(progress.metrics || {}).map(([k, v]) => `${k} ${Number(v).toPrecision(4)}`).join(" · ");
    $("details-progress").querySelector("span").textContent = [Math.round(progress.fraction * 100) + "%", progress.message, metrics].filter(Boolean).join("  ");
  }
  if (!state.log && task.attempts > 0) startLog(task.id);
  else if (!state.log && !$("details-log").textContent) $("details-log").textContent = "(no output yet: the task has not started)";
}

function startLog(id) {
  const controller = new AbortController();
  state.log = controller;
  const pre = $("details-log");
  pre.textContent = "";
  followLog(id, (text) => {
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.append(text);
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }, controller.signal).then((found) => {
    if (!found && state.log === controller) pre.textContent = "(this task writes no output log; its progress and result show here)";
  }, (error) => {
    if (!controller.signal.aborted) pre.textContent = "(log unavailable: " + error.message + ")";
  });
}

// ---------- counts, workers, queues ----------

async function loadCounts() {
  const report = await api("GET", "api/v1/report");
  const counts = report.counts || {};
  $("counts").replaceChildren(...["queued", "running", "retrying", "completed", "failed", "cancelled"].filter((s) => counts[s] || s === "queued" || s === "running").map((s) => el("span", { class: "count s-" + s + "-count", title: s }, s, el("b", {}, (counts[s] || 0).toLocaleString()))));
  state.paused = !!report.paused;
  $("pause-all").textContent = state.paused ? "Resume all" : "Pause all";
  $("pause-all").classList.toggle("danger", state.paused);
}
const refreshCounts = throttle(1000, () => loadCounts().catch(() => {}));

function renderWorkers() {
  const workers = [...state.workers.values()].sort((a, b) => a.id - b.id);
  const busy = workers.filter((w) => w.state === "busy").length;
  $("workers-summary").textContent = `${busy} busy of ${workers.length}`;
  $("workers").replaceChildren(...workers.map((w) => {
    const running = (w.running && w.running.length ? w.running : w.current_task != null ? [w.current_task] : []);
    const where = w.kind === "process" ? `process${w.host ? " on " + w.host : ""}` : "thread";
    return el("div", { class: "item worker", dataset: { name: w.name } },
      el("span", { class: "dot " + w.state }),
      el("span", { class: "what", title: `${w.name} (${where}), ${w.tasks_run} run, ${w.tasks_failed} failed` }, w.name, el("small", {}, where + ` · ${w.tasks_run} run`)),
      el("span", { class: "muted" }, running.length ? "task " + running.join(", ") : w.state));
  }));
  if (!workers.length) $("workers").append(el("div", { class: "empty muted" }, "No workers (serve --workers 0, or waiting for worker processes)"));
}

function renderQueues() {
  const queues = [...state.queues.values()].sort((a, b) => a.name.localeCompare(b.name));
  $("queues").replaceChildren(...queues.map((q) => el("div", { class: "item queue", dataset: { name: q.name } },
    el("span", { class: "dot " + (q.paused ? "paused" : q.running ? "busy" : "") }),
    el("span", { class: "what" }, q.name, el("small", {}, `${q.queued} queued · ${q.running} running${q.limit != null ? " · limit " + q.limit : ""}${q.paused ? " · paused" : ""}`)),
    el("button", { type: "button", class: "quiet", onclick: () => setQueuePaused(q.name, !q.paused) }, q.paused ? "Resume" : "Pause"))));
  if (!queues.length) $("queues").append(el("div", { class: "empty muted" }, "No queues yet"));
}

async function setQueuePaused(name, paused) {
  try {
    const queue = await api("PATCH", `api/v1/queues/${encodeURIComponent(name)}`, { paused });
    state.queues.set(queue.name, queue);
    renderQueues();
  } catch (error) {
    failed(`Changing queue ${name}`)(error);
  }
}

async function loadWorkersAndQueues() {
  const [workers, queues] = await Promise.all([api("GET", "api/v1/workers"), api("GET", "api/v1/queues")]);
  state.workers = new Map(workers.workers.map((w) => [w.name, w]));
  state.queues = new Map(queues.queues.map((q) => [q.name, q]));
  renderWorkers();
  renderQueues();
}

// ---------- resources ----------

async function loadHistory() {
  const answer = await api("GET", `api/v1/monitoring/history?minutes=${state.minutes}`);
  state.history = answer.samples.filter((s) => s.sampled_at != null);
  drawCharts();
}

function addSample(sample) {
  if (sample.sampled_at == null) return;
  const last = state.history[state.history.length - 1];
  if (last && last.sampled_at >= sample.sampled_at) return;
  state.history.push(sample);
  const cutoff = sample.sampled_at - state.minutes * 60;
  let drop = 0;
  while (drop < state.history.length && state.history[drop].sampled_at < cutoff) drop++;
  if (drop) state.history.splice(0, drop);
  if (!document.hidden) drawCharts();
}

function pct(v) {
  return v == null ? "" : v.toFixed(0) + "%";
}

function drawCharts() {
  const samples = state.history;
  const times = samples.map((s) => s.sampled_at);
  const to = times.length ? times[times.length - 1] : Date.now() / 1000;
  const range = { from: to - state.minutes * 60, to };
  const colour = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  const latest = samples[samples.length - 1];
  lineChart($("chart-cpu"), times, [{ values: samples.map((s) => s.cpu.percent), colour: colour("--accent"), fill: true }], range);
  $("cpu-now").textContent = latest ? pct(latest.cpu.percent) : "";
  const cores = latest ? latest.cpu.per_core.length : 0;
  const rows = Array.from({ length: cores }, (_, c) => samples.map((s) => (s.cpu.per_core[c] ?? null)));
  heatStrip($("chart-cores"), times, rows, range);
  $("cores-now").textContent = cores ? cores + " cores" : "";
  lineChart($("chart-mem"), times, [{ values: samples.map((s) => s.memory.percent), colour: colour("--accent-2"), fill: true }], range);
  $("mem-now").textContent = latest ? `${bytes(latest.memory.used_bytes)} / ${bytes(latest.memory.total_bytes)}` : "";
  drawGpus(samples, times, range, colour, latest);
  const disks = latest ? latest.disks : [];
  $("disks").replaceChildren(...disks.map((d) => {
    const fill = el("div", { class: "fill" });
    fill.style.width = (d.percent || 0).toFixed(1) + "%";
    return el("div", { class: "meter" }, el("span", { class: "name", title: d.mount }, d.mount), el("div", { class: "track" }, fill), el("span", { class: "value" }, `${bytes(d.used_bytes)} · ${pct(d.percent)}`));
  }));
}

function drawGpus(samples, times, range, colour, latest) {
  const box = $("gpu-charts");
  const devices = latest && latest.gpus.available ? latest.gpus.devices : [];
  if (box.childElementCount !== devices.length) {
    box.replaceChildren(...devices.map((d, i) => el("figure", {}, el("figcaption", {}, el("span", {}, `GPU ${d.index} ${d.name}`), el("b", { id: "gpu-now-" + i })), el("canvas", { id: "chart-gpu-" + i }))));
  }
  devices.forEach((d, i) => {
    const of = (s) => (s.gpus.devices || []).find((g) => g.index === d.index);
    const util = samples.map((s) => of(s)?.utilization_percent ?? null);
    const memory = samples.map((s) => {
      const g = of(s);
      return g && g.memory_total_bytes ? (100 * g.memory_used_bytes) / g.memory_total_bytes : null;
    });
    lineChart($("chart-gpu-" + i), times, [{ values: util, colour: colour("--ok"), fill: true }, { values: memory, colour: colour("--warn") }], range);
    $("gpu-now-" + i).textContent = `util ${pct(d.utilization_percent)} · mem ${bytes(d.memory_used_bytes)} / ${bytes(d.memory_total_bytes)}`;
  });
}

// ---------- the create form ----------

async function loadTaskTypes() {
  const answer = await api("GET", "api/v1/task-types");
  state.taskTypes = answer.task_types;
  const names = state.taskTypes.map((t) => t.name);
  $("filter-task").replaceChildren(el("option", { value: "" }, "all"), ...names.map((n) => el("option", { value: n }, n)));
  $("filter-task").value = state.view.task;
  $("create-task").replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  fillParams();
}

function fillParams() {
  const type = state.taskTypes.find((t) => t.name === $("create-task").value);
  $("create-description").textContent = type ? type.description : "";
  const params = type ? type.params : [];
  const inputs = params.map((p) => el("label", {}, `${p.name} (${p.type})`, el("input", { type: "text", name: p.name, "data-type": p.type, placeholder: p.default !== undefined ? "default " + JSON.stringify(p.default) : "required" })));
  if (type && type.rest) inputs.push(el("label", {}, `${type.rest} (more arguments, JSON array)`, el("input", { type: "text", name: "__rest", placeholder: "[]" })));
  $("create-params").replaceChildren(...inputs);
  $("create-error").hidden = true;
}

/** A typed value from the form's text; text the server will judge stays text. */
function parseValue(text, type) {
  if (["u_int", "int", "number"].includes(type)) return /^-?\d+(\.\d+)?(e-?\d+)?$/i.test(text) ? Number(text) : text;
  if (type === "bool") return text === "true" ? true : text === "false" ? false : text;
  if (type === "string") return text;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function numberOrText(text) {
  return /^-?\d+(\.\d+)?$/.test(text) ? Number(text) : text;
}

async function submitForm(event) {
  event.preventDefault();
  const body = { task: $("create-task").value, args: [], kwargs: {} };
  for (const input of $("create-params").querySelectorAll("input")) {
    const text = input.value.trim();
    if (!text) continue;
    if (input.name === "__rest") {
      const rest = parseValue(text, "array");
      body.args = Array.isArray(rest) ? rest : [rest];
    } else body.kwargs[input.name] = parseValue(text, input.dataset.type);
  }
  const options = { priority: "create-priority", max_retries: "create-retries", timeout_s: "create-timeout" };
  for (const [key, id] of Object.entries(options)) {
    const text = $(id).value.trim();
    if (text) body[key] = numberOrText(text);
  }
  if ($("create-queue").value.trim()) body.queue = $("create-queue").value.trim();
  $("create-submit").disabled = true;
  try {
    const answer = await api("POST", "api/v1/tasks", body);
    $("create-dialog").close();
    notice(`Submitted task ${answer.id}: ${body.task}.`, "info");
    await loadTasks();
    refreshCounts();
  } catch (error) {
    $("create-error").textContent = error instanceof ApiError ? error.message : String(error);
    $("create-error").hidden = false;
  } finally {
    $("create-submit").disabled = false;
  }
}

// ---------- the event stream ----------

function onEvent(type, data) {
  switch (type) {
    case "task":
      if (data.task && data.task.task !== undefined) taskChanged(data.task);
      refreshTasks();
      refreshCounts();
      break;
    case "tasks":
      refreshTasks();
      refreshCounts();
      break;
    case "worker":
      if (data.gone) state.workers.delete(data.worker.name);
      else state.workers.set(data.worker.name, data.worker);
      renderWorkers();
      break;
    case "queue":
      state.queues.set(data.queue.name, data.queue);
      renderQueues();
      break;
    case "resources":
      addSample(data);
      break;
    case "reset":
      loadEverything();
      break;
  }
}

function follow() {
  if (state.events) state.events.abort();
  const controller = new AbortController();
  state.events = controller;
  followEvents("task,worker,queue,resources", onEvent, (live) => {
    $("link").classList.toggle("live", live);
    $("link").textContent = live ? "live" : "reconnecting…";
    if (live) loadEverything();
  }, controller.signal);
}

function loadEverything() {
  loadTasks().catch(failed("Listing tasks"));
  loadCounts().catch(() => {});
  loadWorkersAndQueues().catch(failed("Reading workers and queues"));
  loadHistory().catch((error) => {
    if (!(error instanceof ApiError && error.status === 404)) failed("Reading the resource history")(error);
  });
}

async function boot() {
  try {
    await loadTaskTypes();
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) failed("Connecting")(error);
    return;
  }
  $("notice").hidden = true;
  follow();
}

// ---------- wiring ----------

$("create-random").addEventListener("click", createRandom);
$("open-create").addEventListener("click", () => {
  $("create-error").hidden = true;
  $("create-dialog").showModal();
});
$("create-cancel").addEventListener("click", () => $("create-dialog").close());
$("create-task").addEventListener("change", fillParams);
$("create-form").addEventListener("submit", submitForm);
$("notice-close").addEventListener("click", () => ($("notice").hidden = true));
$("remove-selected").addEventListener("click", () => state.selected != null && removeTask(state.selected));
$("details-remove").addEventListener("click", () => state.selected != null && removeTask(state.selected));
$("details-retry").addEventListener("click", () => state.selected != null && retryTask(state.selected));
$("details-close").addEventListener("click", () => {
  $("details").hidden = true;
  if (state.log) state.log.abort();
  state.log = null;
  state.selected = null;
  renderTasks();
});
$("pause-all").addEventListener("click", async () => {
  try {
    await api("POST", state.paused ? "api/v1/resume" : "api/v1/pause");
    await loadCounts();
  } catch (error) {
    failed("Pausing the scheduler")(error);
  }
});
for (const [id, key] of [["filter-status", "status"], ["filter-task", "task"]]) {
  $(id).addEventListener("change", () => {
    state.view[key] = $(id).value;
    state.view.offset = 0;
    loadTasks().catch(failed("Listing tasks"));
  });
}
for (const th of document.querySelectorAll("th[data-sort]")) {
  th.addEventListener("click", () => {
    const sort = th.dataset.sort;
    if (state.view.sort === sort) state.view.order = state.view.order === "desc" ? "asc" : "desc";
    else {
      state.view.sort = sort;
      state.view.order = sort === "task" || sort === "status" ? "asc" : "desc";
    }
    state.view.offset = 0;
    loadTasks().catch(failed("Listing tasks"));
  });
}
$("page-prev").addEventListener("click", () => {
  state.view.offset = Math.max(0, state.view.offset - PAGE);
  loadTasks().catch(failed("Listing tasks"));
});
$("page-next").addEventListener("click", () => {
  state.view.offset += PAGE;
  loadTasks().catch(failed("Listing tasks"));
});
for (const button of document.querySelectorAll("#window button")) {
  button.addEventListener("click", () => {
    state.minutes = Number(button.dataset.minutes);
    for (const b of document.querySelectorAll("#window button")) b.classList.toggle("on", b === button);
    loadHistory().catch(failed("Reading the resource history"));
  });
}
// Running tasks' times tick without a round trip.
setInterval(() => {
  for (const row of document.querySelectorAll('#task-rows tr[data-status="running"]')) {
    const task = state.rows.get(Number(row.dataset.id));
    const cell = row.querySelector(".took");
    if (task && cell) cell.textContent = seconds(took(task));
  }
}, 1000);
window.addEventListener("resize", () => drawCharts());
document.addEventListener("visibilitychange", () => !document.hidden && drawCharts());

// Streams end with the page: a page the browser keeps for going back (or
// is leaving) would otherwise hold a connection each, and the browser has
// only six to this server.
window.addEventListener("pagehide", () => {
  if (state.events) state.events.abort();
  state.events = null;
  if (state.log) state.log.abort();
  state.log = null;
});
window.addEventListener("pageshow", (event) => {
  if (event.persisted && takeToken()) follow();
});

if (takeToken()) boot();
else askToken("");
