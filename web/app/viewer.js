// The photo viewer: before/after over the same region at the same size (the original scaled up without
// smoothing against the result), a keyboard slider, 100% zoom, downloads and delete.
import { ApiError, getBlob, request } from "./api.js";
import { $, confirmDialog, extensionOf, formatDate, h, saveBlob, showErrors, statusText } from "./dom.js";

const BROWSER_IMAGE = /\.(jpe?g|png|webp)$/i; // what <img> can show; HEIC originals cannot be

export class Viewer {
  constructor(gallery, notify) {
    this.gallery = gallery;
    this.notify = notify;
    this.dialog = $("viewer");
    this.photo = null;
    this.urls = [];
    this.fullResult = null;
    this.zoomed = false;
    this.loadToken = 0;

    const slider = $("compare-slider");
    slider.addEventListener("input", () => this.position(slider.value));
    $("viewer-close").addEventListener("click", () => this.dialog.close());
    this.dialog.addEventListener("close", () => this.cleanup());
    $("zoom").addEventListener("click", () => this.zoom(!this.zoomed));
    $("download-original").addEventListener("click", () => this.download("original"));
    $("download-result").addEventListener("click", () => this.download("upscaled"));
    $("download-preview").addEventListener("click", () => this.download("preview"));
    $("delete-photo").addEventListener("click", () => this.remove());

    // Dragging across the picture moves the slider too.
    const compare = $("compare");
    const drag = (e) => {
      if (!this.comparable || (e.type === "pointermove" && !(e.buttons & 1))) return;
      const r = compare.getBoundingClientRect();
      slider.value = Math.round(Math.min(1, Math.max(0, (e.clientX - r.left) / r.width)) * 100);
      this.position(slider.value);
    };
    compare.addEventListener("pointerdown", drag);
    compare.addEventListener("pointermove", drag);
  }

  get comparable() {
    return this.photo && this.photo.status === "completed";
  }

  open(photo) {
    this.photo = photo;
    this.zoomed = false;
    showErrors($("viewer-errors"), null);
    $("compare-slider").value = 50;
    this.position(50);
    this.show();
    if (!this.dialog.open) this.dialog.showModal();
    $("compare-slider").focus();
  }

  // Called for every change the gallery hears of.
  changed(photo) {
    if (!this.dialog.open || !this.photo || photo.id !== this.photo.id) return;
    if (photo.deleted) {
      this.dialog.close();
      this.notify("That photo was deleted.");
      return;
    }
    const finished = photo.status !== this.photo.status;
    this.photo = photo;
    if (finished) this.show();
    else this.describe();
  }

  cleanup() {
    this.loadToken++;
    for (const url of this.urls) URL.revokeObjectURL(url);
    this.urls = [];
    $("img-before").removeAttribute("src");
    $("img-after").removeAttribute("src");
    this.photo = null;
  }

  describe() {
    const p = this.photo;
    $("viewer-title").textContent = `Photo of ${formatDate(p.created_at)}`;
    // The status line is for what is not done yet, or what the viewer is doing.
    $("viewer-status").textContent = p.status === "completed" ? "" : statusText(p);
    const rows = [
      ["Status", statusText(p)],
      ["Original", p.width ? `${p.width} × ${p.height} px` : "–"],
      ["Result", p.upscaled_width ? `${p.upscaled_width} × ${p.upscaled_height} px (${p.format || "jpeg"}, ${p.outscale}×)` : `${p.outscale || 4}× ${p.format || "jpeg"}, not ready`],
      ["Location", p.latitude || p.longitude ? `${p.latitude.toFixed(5)}, ${p.longitude.toFixed(5)}` : "–"],
      ["Uploaded", formatDate(p.created_at)],
    ];
    $("viewer-info").replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    const ready = p.status === "completed";
    for (const id of ["download-result", "download-preview", "zoom", "compare-slider"]) $(id).disabled = !ready;
  }

  // Loads the pictures for the photo's state.
  async show() {
    this.describe();
    const p = this.photo;
    const token = ++this.loadToken;
    this.fullResult = null;
    const compare = $("compare");
    compare.style.setProperty("--ratio", p.width && p.height ? `${p.width} / ${p.height}` : "4 / 3");
    compare.style.setProperty("--ratio-num", p.width && p.height ? String(p.width / p.height) : "1.333");
    compare.classList.toggle("single", !this.comparable);
    this.setZoomed(false);
    const before = $("img-before");
    const after = $("img-after");
    try {
      const thumb = this.gallery.thumbnail(p.id);
      if (thumb) before.src = thumb; // at once, while the original loads
      if (!this.comparable) {
        after.removeAttribute("src");
        if (!thumb) before.src = await this.blobUrl(`/photos/${p.id}?type=thumbnail`, token);
        return;
      }
      const [orig, preview] = await Promise.all([
        BROWSER_IMAGE.test(p.original_path) ? this.blobUrl(`/photos/${p.id}?type=original`, token) : null,
        this.blobUrl(`/photos/${p.id}?type=preview`, token),
      ]);
      if (token !== this.loadToken) return;
      after.src = preview;
      if (orig) before.src = orig;
      else $("viewer-status").textContent = "Done. This browser cannot show the HEIC original: comparing with its thumbnail.";
    } catch (e) {
      if (token === this.loadToken && !(e instanceof ApiError && e.status === 401)) showErrors($("viewer-errors"), e);
    }
  }

  async blobUrl(path, token) {
    const blob = await getBlob(path);
    const url = URL.createObjectURL(blob);
    if (token !== this.loadToken) {
      URL.revokeObjectURL(url);
      throw new DOMException("stale", "AbortError");
    }
    this.urls.push(url);
    return url;
  }

  position(value) {
    $("compare").style.setProperty("--pos", `${value}%`);
    $("compare-slider").setAttribute("aria-valuetext", `${value}% original, ${100 - value}% result`);
  }

  setZoomed(on) {
    this.zoomed = on;
    const compare = $("compare");
    compare.classList.toggle("zoomed", on);
    $("zoom").setAttribute("aria-pressed", String(on));
    $("zoom").textContent = on ? "Fit to screen" : "Zoom to 100%";
    if (on) {
      compare.style.setProperty("--w", `${this.photo.upscaled_width}px`);
      compare.style.setProperty("--h", `${this.photo.upscaled_height}px`);
    }
  }

  // 100%: one pixel of the result per CSS pixel, from the full result (the preview is at most 2048 px).
  async zoom(on) {
    if (!this.comparable) return;
    this.setZoomed(on);
    const stage = $("viewer-stage");
    if (!on) return;
    const token = this.loadToken;
    stage.scrollLeft = (stage.scrollWidth - stage.clientWidth) / 2;
    stage.scrollTop = (stage.scrollHeight - stage.clientHeight) / 2;
    if (this.fullResult) return;
    $("viewer-status").textContent = "Loading the full result…";
    try {
      const url = await this.blobUrl(`/photos/${this.photo.id}?type=upscaled`, token);
      if (token !== this.loadToken) return;
      this.fullResult = url;
      $("img-after").src = url;
      $("viewer-status").textContent = `Showing the result at 100% (${this.photo.upscaled_width} × ${this.photo.upscaled_height} px)`;
    } catch (e) {
      if (token === this.loadToken && !(e instanceof ApiError && e.status === 401)) showErrors($("viewer-errors"), e);
    }
  }

  async download(type) {
    const p = this.photo;
    const short = p.id.slice(0, 8);
    const names = {
      original: `petcam-${short}-original.${extensionOf(p.original_path, "jpg")}`,
      upscaled: `petcam-${short}-${p.outscale || 4}x.${extensionOf(p.upscaled_path, "jpg")}`,
      preview: `petcam-${short}-preview.jpg`,
    };
    showErrors($("viewer-errors"), null);
    try {
      saveBlob(await getBlob(`/photos/${p.id}?type=${type}`), names[type]);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) showErrors($("viewer-errors"), e);
    }
  }

  async remove() {
    const p = this.photo;
    if (!p || !(await confirmDialog("Delete this photo and its result? This cannot be undone."))) return;
    try {
      await request(`/photos/${p.id}`, { method: "DELETE" });
      this.dialog.close();
      this.gallery.remove(p.id);
      this.notify("Photo deleted.");
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        this.dialog.close();
        this.gallery.remove(p.id);
      } else if (!(e instanceof ApiError && e.status === 401)) showErrors($("viewer-errors"), e);
    }
  }
}
