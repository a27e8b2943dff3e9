// AdaptiveClick browser demo: upload an image, left click = positive, right click = negative.
// The server (tools/demo/web.py) keeps the image, the clicks and the masks of this browser session
// (a cookie); every answer carries an RGBA overlay of the image size that is drawn over the image.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const fileInput = $("file");
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const undoButton = $("undo");
  const resetButton = $("reset");
  const download = $("download");
  const statusEl = $("status");
  const statsEl = $("stats");
  const MIN_DISPLAY_WIDTH = 512; // small images are shown enlarged

  let baseImage = null;   // the image as the server decoded it
  let overlayImage = null;
  let busy = false;
  let nClicks = 0;

  function setStatus(text, state) {
    statusEl.textContent = text;
    statusEl.dataset.state = state;
  }

  function setEnabled() {
    const ready = baseImage !== null && !busy;
    undoButton.disabled = !ready || nClicks === 0;
    resetButton.disabled = !ready || nClicks === 0;
    download.setAttribute("aria-disabled", baseImage === null ? "true" : "false");
    fileInput.disabled = busy;
  }

  async function api(path, options) {
    const response = await fetch(path, Object.assign({ credentials: "same-origin", cache: "no-store" }, options));
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (!response.ok) {
      const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
      throw new Error(message);
    }
    return body;
  }

  function postJson(path, payload) {
    return api(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(payload || {}),
    });
  }

  function loadImage(src) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("the browser could not display the image"));
      img.src = src;
    });
  }

  function draw() {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (baseImage) ctx.drawImage(baseImage, 0, 0);
    if (overlayImage) ctx.drawImage(overlayImage, 0, 0);
  }

  function fitCanvas(width, height) {
    canvas.width = width;
    canvas.height = height;
    // CSS size: at least MIN_DISPLAY_WIDTH wide (max-width: 100% in the style sheet limits it)
    const shown = Math.max(width, MIN_DISPLAY_WIDTH);
    canvas.style.width = `${shown}px`;
    canvas.style.imageRendering = shown > width ? "pixelated" : "auto";
  }

  async function showState(state) {
    overlayImage = await loadImage(state.overlay);
    nClicks = state.n_clicks;
    draw();
    statusEl.dataset.clicks = String(state.n_clicks);
    statusEl.dataset.area = String(state.mask_area);
    statusEl.dataset.ms = String(state.ms);
    const last = state.clicks.length ? state.clicks[state.clicks.length - 1] : null;
    statusEl.dataset.lastClick = last ? `${last.row},${last.col},${last.positive ? 1 : 0}` : "";
    const word = state.n_clicks === 1 ? "click" : "clicks";
    setStatus(`${state.n_clicks} ${word}; mask area ${state.mask_area} px of ${state.width}x${state.height}`, "ready");
    statsEl.textContent = state.ms > 0
      ? `model ${state.ms.toFixed(1)} ms, server ${state.server_ms.toFixed(1)} ms for the last click`
      : "";
  }

  async function run(label, action) {
    if (busy) return;
    busy = true;
    setEnabled();
    setStatus(`${label}...`, "busy");
    try {
      await action();
    } catch (err) {
      setStatus(`Error: ${err.message}`, "error");
    } finally {
      busy = false;
      setEnabled();
    }
  }

  fileInput.addEventListener("change", () => {
    const file = fileInput.files && fileInput.files[0];
    if (!file) return;
    run(`Uploading ${file.name}`, async () => {
      const form = new FormData();
      form.append("image", file, file.name);
      const state = await api("/api/image", { method: "POST", body: form });
      const img = await loadImage(state.image);
      baseImage = img;
      overlayImage = null;
      nClicks = 0;
      fitCanvas(state.width, state.height);
      draw();
      download.setAttribute("download", `${file.name.replace(/\.[^.]*$/, "") || "image"}_mask.png`);
      statusEl.dataset.clicks = "0";
      statusEl.dataset.area = "0";
      statusEl.dataset.ms = "0";
      statusEl.dataset.lastClick = "";
      statsEl.textContent = "";
      setStatus(`${file.name}: ${state.width}x${state.height}. Left click on the object.`, "ready");
    });
    fileInput.value = ""; // choosing the same file again uploads it again
  });

  // displayed canvas position -> image pixel (row, col); the canvas has no border or padding
  function pixelAt(event) {
    const rect = canvas.getBoundingClientRect();
    const x = (event.clientX - rect.left) * (canvas.width / rect.width);
    const y = (event.clientY - rect.top) * (canvas.height / rect.height);
    const col = Math.min(canvas.width - 1, Math.max(0, Math.floor(x)));
    const row = Math.min(canvas.height - 1, Math.max(0, Math.floor(y)));
    return { row, col };
  }

  function addClick(event, positive) {
    if (!baseImage) return;
    const { row, col } = pixelAt(event);
    run(`${positive ? "Positive" : "Negative"} click at row ${row}, col ${col}`, async () => {
      await showState(await postJson("/api/click", { row, col, positive }));
    });
  }

  canvas.addEventListener("click", (event) => {
    if (event.button === 0) addClick(event, true);
  });
  canvas.addEventListener("contextmenu", (event) => {
    event.preventDefault(); // no browser menu on the image
    if (event.button === 2) addClick(event, false); // not the keyboard's menu key (no position)
  });

  function undo() {
    run("Undo", async () => showState(await postJson("/api/undo")));
  }

  undoButton.addEventListener("click", undo);
  resetButton.addEventListener("click", () => {
    run("Reset", async () => showState(await postJson("/api/reset")));
  });
  download.addEventListener("click", (event) => {
    if (download.getAttribute("aria-disabled") === "true") event.preventDefault();
  });
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z" && !undoButton.disabled) {
      event.preventDefault();
      undo();
    }
  });

  setEnabled();
})();
