// Following a run's log over Server-Sent Events with fetch + a ReadableStream, so that the UI owns
// resumption: every (re)connect asks for events after the last *applied* seq (`?after=` and
// `Last-Event-ID`), failures back off with jitter, and a silent connection is dropped by a watchdog.

import { authHeaders, errorFrom } from "./http";
import { TERMINAL_EVENTS, type RunEvent } from "./types";

export interface SSEFrame {
  id: string | null;
  event: string | null;
  data: string;
}

/** Incremental parser of the text/event-stream format (any of \n, \r\n, \r as line ends). */
export class SSEParser {
  private buffer = "";
  private data: string[] = [];
  private id: string | null = null;
  private event: string | null = null;
  private pendingCR = false;

  feed(chunk: string): SSEFrame[] {
    let text = chunk;
    if (this.pendingCR && text.startsWith("\n")) text = text.slice(1);
    this.pendingCR = false;
    this.buffer += text;
    const frames: SSEFrame[] = [];
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      if (!match) break;
      const end = match.index;
      if (match[0] === "\r" && end === this.buffer.length - 1) {
        // a lone \r at the end may be the first half of \r\n: decide on the next chunk
        this.pendingCR = true;
      }
      const line = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + match[0].length);
      const frame = this.line(line);
      if (frame) frames.push(frame);
    }
    return frames;
  }

  private line(line: string): SSEFrame | null {
    if (line === "") {
      if (this.data.length === 0) {
        this.event = null;
        return null;
      }
      const frame = { id: this.id, event: this.event, data: this.data.join("\n") };
      this.data = [];
      this.event = null;
      this.id = null;
      return frame;
    }
    if (line.startsWith(":")) return null; // comment (heartbeat)
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "id") this.id = value;
    else if (field === "event") this.event = value;
    return null;
  }
}

export type StreamState = "connecting" | "live" | "reconnecting" | "offline" | "ended";

export interface StreamInfo {
  attempt: number;
  retryInMs: number | null;
  error: string | null;
}

export interface RunStreamOptions {
  runId: string;
  /** The last seq the view has applied; each (re)connect resumes after it. */
  lastApplied: () => number;
  onEvents: (events: RunEvent[]) => void;
  onState: (state: StreamState, info: StreamInfo) => void;
  /** The run is gone (404) or the session ended (401): stop without retrying. */
  onFatal?: (status: number, message: string) => void;
  /** A silent connection (no bytes, not even a heartbeat) is dropped after this long. */
  watchdogMs?: number;
  backoffMs?: readonly number[];
  fetchImpl?: typeof fetch;
  onlineEvents?: boolean;
}

const DEFAULT_BACKOFF = [250, 500, 1000, 2000, 4000, 8000] as const;

export function backoffDelay(attempt: number, steps: readonly number[] = DEFAULT_BACKOFF, random = Math.random): number {
  const base = steps[Math.min(attempt, steps.length - 1)] ?? 1000;
  return Math.round(base * (0.8 + 0.4 * random()));
}

/** One run's live log: connects, parses, hands batches of events on, resumes until the terminal event. */
export class RunStream {
  private closed = false;
  private controller: AbortController | null = null;
  private wake: (() => void) | null = null;
  private attempt = 0;
  private readonly opts: Required<Omit<RunStreamOptions, "onFatal">> & Pick<RunStreamOptions, "onFatal">;
  private readonly handleOnline = (): void => this.retryNow();
  private readonly handleOffline = (): void => {
    this.controller?.abort();
  };

  constructor(options: RunStreamOptions) {
    this.opts = {
      watchdogMs: 45_000,
      backoffMs: DEFAULT_BACKOFF,
      fetchImpl: (input, init) => fetch(input, init),
      onlineEvents: typeof window !== "undefined",
      ...options,
    };
  }

  get runId(): string {
    return this.opts.runId;
  }

  start(): this {
    if (this.opts.onlineEvents) {
      window.addEventListener("online", this.handleOnline);
      window.addEventListener("offline", this.handleOffline);
    }
    void this.loop();
    return this;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.controller?.abort();
    this.wake?.();
    if (this.opts.onlineEvents) {
      window.removeEventListener("online", this.handleOnline);
      window.removeEventListener("offline", this.handleOffline);
    }
  }

  /** Drop the current connection and resume after the last applied seq (after a short backoff). */
  reconnect(): void {
    this.controller?.abort();
  }

  /** Skip the current backoff wait (the network came back, the tab became visible). */
  retryNow(): void {
    this.wake?.();
  }

  private isOffline(): boolean {
    return typeof navigator !== "undefined" && navigator.onLine === false;
  }

  private async loop(): Promise<void> {
    while (!this.closed) {
      if (this.isOffline()) {
        this.opts.onState("offline", { attempt: this.attempt, retryInMs: null, error: null });
        await this.sleep(null);
        continue;
      }
      this.opts.onState(this.attempt === 0 ? "connecting" : "reconnecting", {
        attempt: this.attempt,
        retryInMs: null,
        error: null,
      });
      let error: string | null = null;
      try {
        const finished = await this.connectOnce();
        if (finished) {
          this.opts.onState("ended", { attempt: 0, retryInMs: null, error: null });
          this.close();
          return;
        }
      } catch (exc) {
        if (this.closed) return;
        if (exc instanceof FatalStreamError) {
          this.opts.onFatal?.(exc.status, exc.message);
          this.opts.onState("ended", { attempt: this.attempt, retryInMs: null, error: exc.message });
          this.close();
          return;
        }
        error = exc instanceof Error ? exc.message : String(exc);
      }
      if (this.closed) return;
      const delay = backoffDelay(this.attempt, this.opts.backoffMs);
      this.attempt += 1;
      const state = this.isOffline() ? "offline" : "reconnecting";
      this.opts.onState(state, { attempt: this.attempt, retryInMs: delay, error });
      await this.sleep(state === "offline" ? null : delay);
    }
  }

  private sleep(ms: number | null): Promise<void> {
    return new Promise((resolve) => {
      const timer = ms === null ? null : setTimeout(done, ms);
      const self = this;
      function done(): void {
        if (timer !== null) clearTimeout(timer);
        self.wake = null;
        resolve();
      }
      this.wake = done;
    });
  }

  /** One connection; true when the terminal event was applied. */
  private async connectOnce(): Promise<boolean> {
    const controller = new AbortController();
    this.controller = controller;
    let watchdog: ReturnType<typeof setTimeout> | null = null;
    const arm = (): void => {
      if (watchdog !== null) clearTimeout(watchdog);
      watchdog = setTimeout(() => controller.abort(), this.opts.watchdogMs);
    };
    const after = this.opts.lastApplied();
    try {
      arm();
      const response = await this.opts.fetchImpl(`/api/runs/${encodeURIComponent(this.opts.runId)}/stream?after=${after}`, {
        headers: { Accept: "text/event-stream", "Last-Event-ID": String(after), ...authHeaders("GET") },
        credentials: "same-origin",
        cache: "no-store",
        signal: controller.signal,
      });
      if (!response.ok) {
        const err = await errorFrom(response);
        if (response.status === 404 || response.status === 401 || response.status === 403) {
          throw new FatalStreamError(response.status, err.message);
        }
        throw new Error(err.message);
      }
      if (!response.body) throw new Error("the stream has no body");
      this.attempt = 0;
      this.opts.onState("live", { attempt: 0, retryInMs: null, error: null });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new SSEParser();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return false; // closed without the terminal event: resume
        arm();
        const batch: RunEvent[] = [];
        let terminal = false;
        for (const frame of parser.feed(value)) {
          const event = JSON.parse(frame.data) as RunEvent;
          batch.push(event);
          if (TERMINAL_EVENTS.has(event.type)) terminal = true;
        }
        if (batch.length) this.opts.onEvents(batch);
        if (terminal) {
          void reader.cancel().catch(() => undefined);
          return true;
        }
      }
    } finally {
      if (watchdog !== null) clearTimeout(watchdog);
      if (this.controller === controller) this.controller = null;
    }
  }
}

class FatalStreamError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}
