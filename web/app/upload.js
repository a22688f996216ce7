// The upload panel: files from a drop or the picker, sent as separate photos (POST /upscale each) or as one
// best-cut burst (POST /bestcut), with upload progress and every refusal in plain words.
import { ApiError, getJson, multipart, newKey, upload } from "./api.js";
import { $, formatBytes, h, showErrors } from "./dom.js";

const CONCURRENT_UPLOADS = 2;

export class Uploader {
  constructor(gallery) {
    this.gallery = gallery;
    this.staged = [];
    this.controller = new AbortController(); // aborted at sign-out: nothing of one session lands in the next
    const zone = $("drop-zone");
    const input = $("file-input");
    input.addEventListener("change", () => {
      this.stage([...input.files]);
      input.value = "";
    });
    for (const type of ["dragenter", "dragover"])
      zone.addEventListener(type, (e) => {
        e.preventDefault();
        zone.classList.add("dragging");
      });
    for (const type of ["dragleave", "drop"]) zone.addEventListener(type, () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      this.stage([...e.dataTransfer.files]);
    });
    // A drop beside the zone must not navigate away to the file.
    window.addEventListener("dragover", (e) => e.preventDefault());
    window.addEventListener("drop", (e) => e.preventDefault());

    const scale = $("outscale");
    const showScale = () => ($("outscale-out").textContent = `${Number(scale.value)}×`);
    scale.addEventListener("input", showScale);
    showScale();

    if (navigator.geolocation && window.isSecureContext) {
      $("use-location").hidden = false;
      $("use-location").addEventListener("click", () => this.locate());
    }
    for (const r of document.querySelectorAll("input[name=mode]")) r.addEventListener("change", () => this.renderStaged());
    $("upload-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.send();
    });
  }

  reset() {
    this.controller.abort();
    this.controller = new AbortController();
    this.staged = [];
    this.renderStaged();
    $("uploads").replaceChildren();
    showErrors($("upload-errors"), null);
  }

  stage(files) {
    this.staged.push(...files);
    this.renderStaged();
  }

  renderStaged() {
    const list = $("staged");
    list.replaceChildren(
      ...this.staged.map((f, i) =>
        h(
          "li",
          {},
          h("span", { class: "name" }, f.name),
          h("small", {}, formatBytes(f.size)),
          h("button", {
            type: "button",
            class: "icon",
            "aria-label": `Remove ${f.name}`,
            onclick: () => {
              this.staged.splice(i, 1);
              this.renderStaged();
            },
          }, "✕"),
        ),
      ),
    );
    const n = this.staged.length;
    const bestcut = this.mode() === "bestcut";
    $("upload-button").disabled = n === 0;
    $("upload-button").textContent = n === 0 ? "Upload" : bestcut && n > 1 ? `Upload ${n} as one best cut` : `Upload ${n === 1 ? "1 photo" : `${n} photos`}`;
  }

  mode() {
    return document.querySelector("input[name=mode]:checked").value;
  }

  locate() {
    navigator.geolocation.getCurrentPosition(
      (pos) => {
        $("lat").value = pos.coords.latitude.toFixed(6);
        $("lng").value = pos.coords.longitude.toFixed(6);
      },
      (err) => showErrors($("upload-errors"), [`Location unavailable: ${err.message}`]),
      { timeout: 10000 },
    );
  }

  // The form's fields, or null (with the reason shown) when they cannot be sent.
  fields() {
    const lat = $("lat").value.trim();
    const lng = $("lng").value.trim();
    const errors = [];
    if ((lat === "") !== (lng === "")) errors.push("Give both latitude and longitude, or neither.");
    if (lat !== "" && !(Math.abs(Number(lat)) <= 90)) errors.push("Latitude: a number from -90 to 90.");
    if (lng !== "" && !(Math.abs(Number(lng)) <= 180)) errors.push("Longitude: a number from -180 to 180.");
    showErrors($("upload-errors"), errors.length ? errors : null);
    if (errors.length) return null;
    const f = { outscale: $("outscale").value, format: $("format").value };
    if (lat !== "") Object.assign(f, { lat, lng });
    return f;
  }

  async send() {
    const fields = this.fields();
    if (!fields || !this.staged.length) return;
    const files = this.staged;
    this.staged = [];
    this.renderStaged();
    const jobs =
      this.mode() === "bestcut" && files.length > 1
        ? [this.item("/bestcut", files, fields)]
        : files.map((f) => this.item("/upscale", [f], fields));
    const queue = [...jobs];
    const signal = this.controller.signal;
    const worker = async () => {
      while (queue.length && !signal.aborted) await queue.shift()();
    };
    await Promise.all(Array.from({ length: CONCURRENT_UPLOADS }, worker));
  }

  // One upload in the list; returns the function that (re)sends it.
  item(path, files, fields) {
    const label = path === "/bestcut" ? `Best cut of ${files.length}: ${files.map((f) => f.name).join(", ")}` : files[0].name;
    const bar = h("progress", { max: 1, value: 0, "aria-label": `Upload progress of ${label}` });
    const text = h("span", { class: "upload-status" }, "Waiting…");
    const errors = h("div", { class: "errors", role: "alert" });
    const retry = h("button", { type: "button", hidden: true }, "Retry");
    const dismiss = h("button", { type: "button", class: "icon", "aria-label": `Dismiss ${label}` }, "✕");
    const li = h("li", { class: "upload-item" }, h("span", { class: "name" }, label), bar, text, errors, h("div", { class: "row" }, retry, dismiss));
    dismiss.addEventListener("click", () => li.remove());
    $("uploads").prepend(li);
    // One key and one body per upload: a retry is the same request, answered again rather than stored twice.
    const key = newKey();
    const name = path === "/bestcut" ? "files" : "file";
    const form = multipart([...files.map((f) => [name, f]), ...Object.entries(fields)]);
    const total = form.body.size;

    const run = async () => {
      retry.hidden = true;
      showErrors(errors, null);
      li.dataset.state = "sending";
      const signal = this.controller.signal;
      try {
        const body = await upload(path, form, {
          key,
          signal,
          onProgress: (sent, size) => {
            li.dataset.progressEvents = Number(li.dataset.progressEvents || 0) + 1;
            bar.value = (size || total) ? sent / (size || total) : 0;
            text.textContent = sent >= (size || total) ? "Uploaded, waiting for the server…" : `Uploading ${formatBytes(sent)} of ${formatBytes(size || total)}`;
          },
        });
        bar.value = 1;
        li.dataset.state = "done";
        text.textContent = typeof body.score === "number" ? `Best cut chosen (sharpness score ${body.score.toFixed(1)})` : "Uploaded";
        li.dataset.photoId = body.id;
        if (signal.aborted) return;
        try {
          const asked = performance.now();
          this.gallery.upsert(await getJson(`/photos/${body.id}/info`), asked);
        } catch {
          /* the event stream or the next page brings it */
        }
      } catch (e) {
        if (e.name === "AbortError") return;
        li.dataset.state = "failed";
        bar.hidden = true;
        text.textContent = "Not uploaded";
        showErrors(errors, e instanceof ApiError ? e : [String(e.message || e)]);
        if (e instanceof ApiError && e.retriable) retry.hidden = false;
      }
    };
    retry.addEventListener("click", () => {
      bar.hidden = false;
      run();
    });
    return run;
  }
}
