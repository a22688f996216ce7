// Server-Sent Events over fetch: EventSource cannot send an Authorization header, so we read the stream
// ourselves and parse it as the HTML standard's event-stream format says.

// Feed it text as it arrives; it returns the events completed by that text.
export class SseParser {
  constructor() {
    this.buffer = "";
    this.reset();
    this.lastEventId = "";
    this.retry = null;
  }

  reset() {
    this.event = "";
    this.data = [];
  }

  push(text) {
    this.buffer += text;
    const events = [];
    // A line ends at CRLF, LF or CR; a CR at the very end may be the first half of a CRLF still to come.
    const re = /\r\n|\n|\r(?!$)/g;
    let start = 0;
    let m;
    while ((m = re.exec(this.buffer))) {
      const line = this.buffer.slice(start, m.index);
      start = m.index + m[0].length;
      const ev = this.line(line);
      if (ev) events.push(ev);
    }
    this.buffer = this.buffer.slice(start);
    return events;
  }

  line(line) {
    if (line === "") {
      if (!this.data.length) {
        this.reset();
        return null;
      }
      const ev = { type: this.event || "message", data: this.data.join("\n"), id: this.lastEventId };
      this.reset();
      return ev;
    }
    if (line.startsWith(":")) return null; // a comment: keep-alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
    return null;
  }
}

// Keeps one event stream open, reconnecting with exponential backoff (1 s doubling to 30 s, with jitter).
// handlers: onEvent(ev), onState("live" | "connecting" | "unavailable"), onOpen() after every (re)connect,
// onRefused(status, detail, headers) for a 4xx other than 404 (with the headers it was asked with), which ends
// the stream.
export class EventStream {
  constructor(url, headers, handlers) {
    this.url = url;
    this.headers = headers;
    this.h = handlers;
    this.controller = null;
    this.delay = 1000;
    this.stopped = true;
    this.timer = null;
    this.lastEventId = "";
    this.run = 0; // each start() is a run; a connection of an earlier run never reconnects
  }

  start() {
    this.stop();
    this.stopped = false;
    this.connect(this.run);
  }

  stop() {
    this.run++;
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.controller) this.controller.abort();
    this.controller = null;
  }

  async connect(run) {
    if (this.stopped || run !== this.run) return;
    this.h.onState("connecting");
    this.controller = new AbortController();
    const auth = this.headers();
    const headers = { Accept: "text/event-stream", ...auth };
    if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
    let response;
    try {
      response = await fetch(this.url, { headers, signal: this.controller.signal, cache: "no-store" });
    } catch (e) {
      this.retryLater(run);
      return;
    }
    if (run !== this.run) return;
    if (response.status === 404) {
      // A server without live events: the caller polls instead.
      this.stopped = true;
      this.h.onState("unavailable");
      return;
    }
    if (!response.ok || !response.body) {
      const text = await response.text().catch(() => "");
      let detail = null;
      try {
        detail = JSON.parse(text).detail;
      } catch {
        /* not JSON */
      }
      if (response.status >= 400 && response.status < 500 && response.status !== 429) {
        this.stopped = true;
        this.h.onRefused(response.status, detail, auth);
        return;
      }
      this.retryLater(run, Number.parseInt(response.headers.get("Retry-After") || "", 10) * 1000);
      return;
    }
    this.h.onState("live");
    this.h.onOpen();
    const opened = Date.now();
    const parser = new SseParser();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        if (run !== this.run) break;
        for (const ev of parser.push(value)) {
          if (ev.id) this.lastEventId = ev.id;
          this.h.onEvent(ev);
        }
      }
    } catch {
      /* the connection dropped, or stop() aborted it */
    }
    if (parser.retry != null) this.delay = parser.retry;
    if (Date.now() - opened > 10000) this.delay = 1000; // it was healthy for a while: start the backoff over
    this.retryLater(run);
  }

  retryLater(run, atLeast = 0) {
    if (this.stopped || run !== this.run) return;
    this.h.onState("connecting");
    const wait = Math.max(atLeast || 0, this.delay * (0.75 + Math.random() * 0.5));
    this.delay = Math.min(this.delay * 2, 30000);
    this.timer = setTimeout(() => this.connect(run), wait);
  }
}
