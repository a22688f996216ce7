// The photo grid: newest first, paged as it grows, thumbnails fetched with the token, and kept live by
// GET /events (or, on a server without it, by polling the photos still in progress).
import { ApiError, getBlob, getJson, session } from "./api.js";
import { EventStream } from "./sse.js";
import { $, formatDate, h, showErrors, statusText } from "./dom.js";

const PAGE = 24;
const THUMB_CONCURRENCY = 4;
const POLL_MS = 2000;

const newestFirst = (a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : a.id < b.id ? 1 : -1);
const pending = (p) => p.status === "queued" || p.status === "processing";

export class Gallery {
  constructor({ onOpen, onChange }) {
    this.onOpen = onOpen; // (photo) the person opened a photo
    this.onChange = onChange; // (photo | {id, deleted: true}) a photo changed or went away
    this.grid = $("grid");
    this.photos = new Map(); // id -> photo JSON
    this.asOf = new Map(); // id -> when the state shown was current (performance.now()), so none goes back in time
    this.cards = new Map(); // id -> {li, img, status, bar, size}
    this.thumbs = new Map(); // id -> blob: URL
    this.thumbQueue = [];
    this.thumbsLoading = 0;
    this.done = false;
    this.loading = false;
    this.stream = null;
    this.pollTimer = null;
    this.generation = 0; // bumps on stop(): answers for an old session are dropped

    this.thumbObserver = new IntersectionObserver((entries) => {
      for (const e of entries)
        if (e.isIntersecting) {
          this.thumbObserver.unobserve(e.target);
          this.queueThumb(e.target.dataset.id);
        }
    }, { rootMargin: "200px" });
    this.moreObserver = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.loadMore();
    }, { rootMargin: "400px" });
    $("load-more").addEventListener("click", () => this.loadMore());
  }

  start() {
    this.stop();
    const generation = this.generation;
    this.done = false;
    this.loadMore().then(() => {
      if (generation === this.generation) this.moreObserver.observe($("sentinel"));
    });
    this.stream = new EventStream("/events", () => session.authHeaders(), {
      onEvent: (ev) => this.event(ev),
      onOpen: () => this.resync(),
      onState: (state) => this.live(state),
      onRefused: (status, detail, auth) =>
        session.refused(status, detail, (auth.Authorization || "").replace(/^Bearer /, "") || null),
    });
    this.stream.start();
  }

  // The live stream off and on again (around a password change, which replaces the token).
  pause() {
    if (this.stream) this.stream.stop();
  }

  resume() {
    if (this.stream && session.signedIn) this.stream.start();
  }

  stop() {
    this.generation++;
    if (this.stream) this.stream.stop();
    this.stream = null;
    clearInterval(this.pollTimer);
    this.pollTimer = null;
    this.moreObserver.disconnect();
    this.thumbObserver.disconnect();
    for (const url of this.thumbs.values()) URL.revokeObjectURL(url);
    this.thumbs.clear();
    this.thumbQueue = [];
    this.photos.clear();
    this.asOf.clear();
    this.cards.clear();
    this.grid.replaceChildren();
    this.loading = false;
    showErrors($("gallery-errors"), null);
    $("live").textContent = "";
  }

  live(state) {
    const text = { live: "Live", connecting: "Reconnecting…", unavailable: "Updating every few seconds" }[state];
    $("live").textContent = text || "";
    $("live").dataset.state = state;
    if (state === "unavailable" && !this.pollTimer) this.pollTimer = setInterval(() => this.poll(), POLL_MS);
  }

  async loadMore() {
    if (this.loading || this.done || !session.signedIn) return;
    this.loading = true;
    const generation = this.generation;
    $("load-more").disabled = true;
    try {
      const asked = performance.now();
      const page = await getJson(`/photos?skip=${this.photos.size}&limit=${PAGE}`);
      if (generation !== this.generation) return;
      for (const p of page) this.upsert(p, asked);
      this.done = page.length < PAGE;
      showErrors($("gallery-errors"), null);
      // Still at the end of the list (a tall screen): the observer will not fire again by itself.
      requestAnimationFrame(() => {
        if (!this.done && $("sentinel").getBoundingClientRect().top < innerHeight + 400) this.loadMore();
      });
    } catch (e) {
      if (generation === this.generation && !(e instanceof ApiError && e.status === 401)) showErrors($("gallery-errors"), e);
    } finally {
      if (generation === this.generation) {
        this.loading = false;
        $("load-more").disabled = false;
        $("load-more").hidden = this.done;
        this.updateEmpty();
      }
    }
  }

  // After a (re)connect: what changed while the stream was down.
  async resync() {
    const generation = this.generation;
    const count = Math.min(Math.max(this.photos.size, PAGE), 1000);
    try {
      const asked = performance.now();
      const page = await getJson(`/photos?skip=0&limit=${count}`);
      if (generation !== this.generation) return;
      const seen = new Set(page.map((p) => p.id));
      const oldest = page.length ? page[page.length - 1] : null;
      for (const p of page) this.upsert(p, asked);
      // Photos in the span this answer covers that it no longer lists were deleted meanwhile (unless they
      // came after the question was asked).
      for (const p of [...this.photos.values()])
        if (!seen.has(p.id) && (this.asOf.get(p.id) || 0) < asked &&
            (page.length < count || (oldest && newestFirst(p, oldest) < 0)))
          this.remove(p.id);
    } catch {
      /* the next reconnect tries again */
    }
  }

  async poll() {
    const generation = this.generation;
    const ids = [...this.photos.values()].filter(pending).slice(0, 8).map((p) => p.id);
    for (const id of ids) {
      try {
        const asked = performance.now();
        const p = await getJson(`/photos/${id}/info`);
        if (generation === this.generation) this.upsert(p, asked);
      } catch (e) {
        if (e instanceof ApiError && e.status === 404 && generation === this.generation) this.remove(id);
      }
    }
  }

  event(ev) {
    let data;
    try {
      data = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (ev.type === "photo" && data && data.id) {
      // A photo we have not listed that is older than the last one loaded belongs to a page not loaded yet:
      // it comes with that page (adding it now would also shift the next page's skip).
      const oldest = this.oldest();
      if (!this.photos.has(data.id) && !this.done && oldest && newestFirst(data, oldest) > 0) return;
      this.upsert(data, performance.now());
    }
    else if (ev.type === "deleted" && data && data.id) this.remove(data.id);
  }

  oldest() {
    let oldest = null;
    for (const p of this.photos.values()) if (!oldest || newestFirst(p, oldest) > 0) oldest = p;
    return oldest;
  }

  // Adds a photo where it belongs (newest first) or updates its card. `asOf`: when this state was current
  // (for an answer, when it was asked for); an answer asked for before the last event about the photo is older
  // than what it shows, so it changes nothing (a list that left before a "completed" event must not undo it).
  upsert(photo, asOf = performance.now()) {
    const known = this.photos.get(photo.id);
    if (known && (this.asOf.get(photo.id) || 0) > asOf) return known;
    this.asOf.set(photo.id, asOf);
    const merged = known ? { ...known, ...photo } : photo;
    this.photos.set(photo.id, merged);
    let card = this.cards.get(photo.id);
    if (!card) {
      card = this.card(merged);
      this.cards.set(photo.id, card);
      const next = [...this.photos.values()]
        .filter((p) => p.id !== photo.id && this.cards.has(p.id) && newestFirst(merged, p) < 0)
        .sort(newestFirst)[0];
      this.grid.insertBefore(card.li, next ? this.cards.get(next.id).li : null);
      this.thumbObserver.observe(card.li);
    }
    this.render(card, merged);
    this.updateEmpty();
    if (this.onChange) this.onChange(merged);
    return merged;
  }

  remove(id) {
    const card = this.cards.get(id);
    if (card) card.li.remove();
    this.cards.delete(id);
    this.photos.delete(id);
    this.asOf.delete(id);
    const url = this.thumbs.get(id);
    if (url) URL.revokeObjectURL(url);
    this.thumbs.delete(id);
    this.updateEmpty();
    if (this.onChange) this.onChange({ id, deleted: true });
  }

  updateEmpty() {
    $("empty").hidden = this.photos.size > 0 || !this.done;
  }

  card(p) {
    const img = h("img", { alt: "", class: "thumb-img", decoding: "async" });
    const open = h("button", { type: "button", class: "thumb", onclick: () => this.onOpen(this.photos.get(p.id)) }, img);
    const status = h("span", { class: "status" });
    const bar = h("progress", { max: 1, value: 0, "aria-label": "Progress" });
    const size = h("small", { class: "size" });
    const li = h("li", { class: "photo", "data-id": p.id }, open, h("div", { class: "meta" }, status, bar, size));
    return { li, img, open, status, bar, size };
  }

  render(card, p) {
    card.li.dataset.status = p.status;
    card.status.textContent = statusText(p);
    const progress = p.status === "completed" ? 1 : typeof p.progress === "number" ? p.progress : null;
    card.bar.hidden = !pending(p);
    if (progress == null) card.bar.removeAttribute("value");
    else card.bar.value = progress;
    const result = p.upscaled_width ? ` → ${p.upscaled_width}×${p.upscaled_height}` : "";
    card.size.textContent = p.width ? `${p.width}×${p.height}${result}` : "";
    card.open.setAttribute("aria-label", `Open photo of ${formatDate(p.created_at)}: ${statusText(p)}`);
    if (this.thumbs.has(p.id)) card.img.src = this.thumbs.get(p.id);
  }

  thumbnail(id) {
    return this.thumbs.get(id) || null;
  }

  queueThumb(id) {
    if (!this.thumbs.has(id)) this.thumbQueue.push(id);
    this.pumpThumbs();
  }

  async pumpThumbs() {
    while (this.thumbsLoading < THUMB_CONCURRENCY && this.thumbQueue.length) {
      const id = this.thumbQueue.shift();
      if (!this.photos.has(id) || this.thumbs.has(id)) continue;
      this.thumbsLoading++;
      const generation = this.generation;
      getBlob(`/photos/${id}?type=thumbnail`)
        .then((blob) => {
          if (generation !== this.generation || !this.photos.has(id)) return;
          this.thumbs.set(id, URL.createObjectURL(blob));
          const card = this.cards.get(id);
          if (card) {
            card.img.src = this.thumbs.get(id);
            card.li.classList.add("has-thumb");
          }
        })
        .catch(() => {
          const card = this.cards.get(id);
          if (card) card.li.classList.add("no-thumb");
        })
        .finally(() => {
          this.thumbsLoading--;
          this.pumpThumbs();
        });
    }
  }
}
