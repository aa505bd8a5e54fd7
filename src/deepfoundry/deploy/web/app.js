// The demo page of `deepfoundry serve`: what to show comes from GET /v1/model (input_kind, input_shape,
// columns, labels); answers come from POST /v1/predict (JSON) or /v1/predict/file (uploads).
"use strict";

const $ = (id) => document.getElementById(id);
let model = null;
let key = sessionStorage.getItem("deepfoundry-key") || "";

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function detailText(body) {
  if (!body || body.detail === undefined) return JSON.stringify(body);
  if (typeof body.detail === "string") return body.detail;
  return body.detail.map((d) => d.msg + (d.loc ? "  (" + d.loc.join(".") + ")" : "")).join("\n");
}

async function call(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (e) { body = { detail: response.statusText }; }
  if (response.status === 401) { askKey(detailText(body)); throw new Error(detailText(body)); }
  if (!response.ok) throw new Error(response.status + ": " + detailText(body));
  return body;
}

function askKey(message) {
  $("key-panel").hidden = false;
  $("input-panel").hidden = true;
  $("key-error").textContent = key ? message : "";
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  key = $("key").value;
  sessionStorage.setItem("deepfoundry-key", key);
  start();
});

// ------------------------------------------------------------------------------------------ showing answers
function showAnswers(result) {
  $("error").textContent = "";
  const row = result.predictions[0];
  const list = $("predictions");
  list.innerHTML = "";
  if (row.probabilities) {
    $("answer").textContent = row.label;
    const top = Object.entries(row.probabilities).sort((a, b) => b[1] - a[1]).slice(0, 5);
    for (const [label, p] of top) {
      const li = document.createElement("li");
      li.dataset.label = label;
      li.textContent = label + ": " + (100 * p).toFixed(1) + "%";
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = Math.max(1, Math.round(200 * p)) + "px";
      li.appendChild(bar);
      list.appendChild(li);
    }
  } else if (row.value !== undefined) {
    $("answer").textContent = Number(row.value).toPrecision(5);
  } else if (row.values !== undefined) {
    $("answer").textContent = row.values.map((v) => Number(v).toPrecision(4)).join(", ");
  } else {
    $("answer").textContent = JSON.stringify(row);
  }
}

function showError(error) {
  $("answer").textContent = "\u2013";
  $("predictions").innerHTML = "";
  $("error").textContent = String(error.message || error);
}

async function predictExample(example) {
  try {
    showAnswers(await call("/v1/predict", { method: "POST", headers: headers(true),
                                            body: JSON.stringify({ inputs: [example] }) }));
  } catch (error) { showError(error); }
}

async function predictFile(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    showAnswers(await call("/v1/predict/file", { method: "POST", headers: headers(false), body: form }));
  } catch (error) { showError(error); }
}

// ------------------------------------------------------------------------------------------ images: a canvas
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
let drawing = false;

function clearCanvas() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
}

function point(event) {
  const r = canvas.getBoundingClientRect();
  return [(event.clientX - r.left) * canvas.width / r.width, (event.clientY - r.top) * canvas.height / r.height];
}

canvas.addEventListener("pointerdown", (event) => {
  drawing = true;
  canvas.setPointerCapture(event.pointerId);
  ctx.beginPath();
  ctx.moveTo(...point(event));
});
canvas.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = canvas.width / 10;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.lineTo(...point(event));
  ctx.stroke();
});
canvas.addEventListener("pointerup", () => { drawing = false; });
$("clear").addEventListener("click", () => { clearCanvas(); $("answer").textContent = "\u2013"; $("predictions").innerHTML = ""; });

// The drawing resampled to the model's (C, H, W): each output pixel is the mean of its block of canvas
// pixels (area averaging), in [0, 1]; grayscale models take the mean of R, G and B.
function canvasExample() {
  const [channels, height, width] = model.input_shape;
  const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  const example = [];
  for (let c = 0; c < channels; c++) {
    const plane = [];
    for (let y = 0; y < height; y++) {
      const row = [];
      const y0 = Math.floor(y * canvas.height / height), y1 = Math.floor((y + 1) * canvas.height / height);
      for (let x = 0; x < width; x++) {
        const x0 = Math.floor(x * canvas.width / width), x1 = Math.floor((x + 1) * canvas.width / width);
        let sum = 0, n = 0;
        for (let yy = y0; yy < y1; yy++) {
          for (let xx = x0; xx < x1; xx++) {
            const i = 4 * (yy * canvas.width + xx);
            sum += channels === 1 ? (pixels[i] + pixels[i + 1] + pixels[i + 2]) / 3 : pixels[i + c];
            n++;
          }
        }
        row.push(sum / n / 255);
      }
      plane.push(row);
    }
    example.push(plane);
  }
  return example;
}

$("image-file").addEventListener("change", (event) => {
  if (event.target.files.length) predictFile(event.target.files[0]);
  event.target.value = "";
});

// ------------------------------------------------------------------------------------------ tabular: a form
function buildForm(columns) {
  const form = $("tabular-input");
  form.innerHTML = "";
  for (const column of columns) {
    const label = document.createElement("label");
    label.textContent = column.name;
    label.htmlFor = "col-" + column.name;
    let input;
    if (column.categories) {
      input = document.createElement("select");
      input.appendChild(new Option("(missing)", ""));
      for (const c of column.categories) input.appendChild(new Option(c, c));
    } else {
      input = document.createElement("input");
      input.type = "number";
      input.step = "any";
      input.placeholder = "(missing)";
    }
    input.id = "col-" + column.name;
    input.dataset.column = column.name;
    input.dataset.numeric = column.categories ? "" : "1";
    form.append(label, input);
  }
}

function formExample() {
  const row = {};
  for (const input of $("tabular-input").querySelectorAll("[data-column]")) {
    const v = input.value;
    row[input.dataset.column] = v === "" ? null : (input.dataset.numeric ? Number(v) : v);
  }
  return row;
}

// ------------------------------------------------------------------------------------------ the page
const EXAMPLE = {
  image: () => canvasExample(),
  text: () => $("text").value,
  tabular: () => formExample(),
};

$("predict").addEventListener("click", () => {
  let example;
  try {
    example = EXAMPLE[model.input_kind] ? EXAMPLE[model.input_kind]() : JSON.parse($("array").value);
  } catch (error) { showError(error); return; }
  predictExample(example);
});

async function start() {
  try {
    model = await call("/v1/model", { headers: headers(false) });
  } catch (error) {
    $("subtitle").textContent = String(error.message || error);
    return;
  }
  $("key-panel").hidden = true;
  $("input-panel").hidden = false;
  $("title").textContent = model.name;
  $("subtitle").textContent = "a " + model.task + " model taking " + model.input_kind + " inputs"
    + (model.labels ? " (" + model.labels.length + " classes)" : "");
  $("version").textContent = "model " + model.version + " \u00b7 " + model.backend + " \u00b7 deepfoundry " + model.deepfoundry;
  for (const el of document.querySelectorAll(".kind")) el.hidden = true;
  if (model.input_kind === "image") {
    $("image-input").hidden = false;
    $("image-size").textContent = model.input_shape[1] + "\u00d7" + model.input_shape[2];
    clearCanvas();
  } else if (model.input_kind === "text") {
    $("text-input").hidden = false;
  } else if (model.input_kind === "tabular") {
    buildForm(model.columns);
    $("tabular-input").hidden = false;
  } else {
    $("array-input").hidden = false;
    $("array-shape").textContent = JSON.stringify(model.input_shape);
  }
  document.body.dataset.ready = "1";
}

start();
