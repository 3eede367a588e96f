// The preview: the gateway's windowed 8-bit PNG drawn on a canvas, with window/level applied to
// its grey values, zoom and pan. Drag = window/level, shift-drag = pan, wheel = zoom.
"use strict";

const viewer = (() => {
  const canvas = dx.$("preview");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  let grey = null; // Uint8ClampedArray of the PNG's grey values
  let out = null;
  let level = 128, width = 256, zoom = 1, panX = 0, panY = 0;
  let field = null; // X-Ray Collimator edges of the shown image (1-based columns/rows of the image)

  function render() {
    if (!grey) return;
    const lo = level - width / 2;
    const k = 255 / Math.max(1, width);
    const lut = new Uint8ClampedArray(256);
    for (let v = 0; v < 256; v++) lut[v] = (v - lo) * k;
    const d = out.data;
    for (let i = 0, p = 0; i < grey.length; i++, p += 4) {
      const g = lut[grey[i]];
      d[p] = d[p + 1] = d[p + 2] = g;
      d[p + 3] = 255;
    }
    ctx.putImageData(out, 0, 0);
    if (field) {  // the collimated field the image carries, scaled from its size to the preview's
      const sx = canvas.width / field.columns, sy = canvas.height / field.rows;
      ctx.strokeStyle = "#ffd24d";
      ctx.lineWidth = Math.max(1, Math.round(canvas.width / 256));
      ctx.setLineDash([6 * ctx.lineWidth, 4 * ctx.lineWidth]);
      ctx.strokeRect((field.left - 1) * sx, (field.upper - 1) * sy, (field.right - field.left + 1) * sx,
        (field.lower - field.upper + 1) * sy);
    }
    canvas.style.transform = `translate(${panX}px, ${panY}px) scale(${zoom})`;
    dx.$("wl-readout").textContent = `W ${Math.round(width)} L ${Math.round(level)} · ${Math.round(zoom * 100)} %`;
  }

  // The collimated field of the image (null: none), drawn over the preview; the canvas carries it
  // as data-collimation (preview pixels: left,top,right,bottom) for tests and assistive tools.
  function setField(f) {
    field = f && f.shape === "RECTANGULAR" ? f : null;
    if (field) {
      const sx = canvas.width / field.columns, sy = canvas.height / field.rows;
      canvas.dataset.collimation = [(field.left - 1) * sx, (field.upper - 1) * sy, field.right * sx, field.lower * sy]
        .map((v) => v.toFixed(1)).join(",");
    } else {
      delete canvas.dataset.collimation;
    }
    render();
  }

  async function show(url) {
    field = null;
    delete canvas.dataset.collimation;
    const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (!r.ok) throw new Error(r.status === 410 ? "this image's preview is no longer held" : `preview: ${r.status}`);
    const bitmap = await createImageBitmap(await r.blob());
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    ctx.drawImage(bitmap, 0, 0);
    const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height);
    grey = new Uint8ClampedArray(bitmap.width * bitmap.height);
    for (let i = 0; i < grey.length; i++) grey[i] = rgba.data[i * 4];
    out = rgba;
    reset();
    canvas.classList.remove("hidden");
    dx.$("viewer-empty").classList.add("hidden");
  }

  function clear() {
    grey = null;
    field = null;
    delete canvas.dataset.collimation;
    canvas.classList.add("hidden");
    canvas.removeAttribute("data-uid");
    dx.$("viewer-empty").classList.remove("hidden");
    dx.$("wl-readout").textContent = "";
  }

  function reset() { level = 128; width = 256; zoom = 1; panX = 0; panY = 0; render(); }
  function zoomBy(f) { zoom = Math.min(16, Math.max(0.25, zoom * f)); render(); }

  let drag = null;
  canvas.addEventListener("pointerdown", (e) => {
    drag = { x: e.clientX, y: e.clientY, pan: e.shiftKey || e.button === 1 };
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const dxp = e.clientX - drag.x, dyp = e.clientY - drag.y;
    drag.x = e.clientX; drag.y = e.clientY;
    if (drag.pan) { panX += dxp; panY += dyp; } else {
      width = Math.min(512, Math.max(2, width + dxp));
      level = Math.min(255, Math.max(0, level + dyp));
    }
    render();
  });
  canvas.addEventListener("pointerup", () => { drag = null; });
  canvas.addEventListener("wheel", (e) => { e.preventDefault(); zoomBy(e.deltaY < 0 ? 1.2 : 1 / 1.2); }, { passive: false });
  dx.$("zoom-in").addEventListener("click", () => zoomBy(1.25));
  dx.$("zoom-out").addEventListener("click", () => zoomBy(0.8));
  dx.$("zoom-fit").addEventListener("click", reset);

  return { show, clear, reset, zoomBy, setField, canvas };
})();
