// Following a run's log over Server-Sent Events with fetch + a ReadableStream, so that the UI owns
// resumption: every (re)connect asks for events after the last *applied* seq (`?after=` and
// `Last-Event-ID`), failures back off with jitter, and a silent connection is dropped by a watchdog.
// That transport (ReconnectingStream) is shared with the activity feed (./activity).

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

/** The options every reconnecting stream takes (RunStream's and ActivityStream's). */
export interface ReconnectingStreamOptions {
  onState: (state: StreamState, info: StreamInfo) => void;
  /** The server refused the stream for good (401, 403, 404): stopped without retrying. */
  onFatal?: (status: number, message: string) => void;
  /** A silent connection (no bytes, not even a heartbeat) is dropped after this long. */
  watchdogMs?: number;
  backoffMs?: readonly number[];
  fetchImpl?: typeof fetch;
  onlineEvents?: boolean;
}

export interface RunStreamOptions extends ReconnectingStreamOptions {
  runId: string;
  /** The last seq the view has applied; each (re)connect resumes after it. */
  lastApplied: () => number;
  onEvents: (events: RunEvent[]) => void;
  /** The run is gone (404) or the session ended (401): stop without retrying. */
  onFatal?: (status: number, message: string) => void;
}

const DEFAULT_BACKOFF = [250, 500, 1000, 2000, 4000, 8000] as const;

export function backoffDelay(attempt: number, steps: readonly number[] = DEFAULT_BACKOFF, random = Math.random): number {
  const base = steps[Math.min(attempt, steps.length - 1)] ?? 1000;
  return Math.round(base * (0.8 + 0.4 * random()));
}

/** Statuses that no retry will change: the session ended (401, 403), the stream does not exist (404). */
const FATAL_STATUSES = new Set([401, 403, 404]);

/**
 * The transport of a server-sent stream: connects, and after a failure backs off with jitter and
 * connects again, until the subclass says the stream is finished, the server refuses it for good
 * or it is closed. Offline it waits for the network to come back instead of retrying on a timer,
 * and a watchdog drops a connection that stays silent (not even a heartbeat).
 */
export abstract class ReconnectingStream {
  private closed = false;
  private controller: AbortController | null = null;
  private wake: (() => void) | null = null;
  private attempt = 0;
  /** When the current connection became live (null: it is not). */
  private liveSince: number | null = null;
  private readonly transport: Required<Omit<ReconnectingStreamOptions, "onFatal">> & ReconnectingStreamOptions;
  private readonly handleOnline = (): void => this.retryNow();
  private readonly handleOffline = (): void => this.drop();

  protected constructor(options: ReconnectingStreamOptions) {
    this.transport = {
      watchdogMs: 45_000,
      backoffMs: DEFAULT_BACKOFF,
      fetchImpl: (input, init) => fetch(input, init),
      onlineEvents: typeof window !== "undefined",
      ...options,
    };
  }

  /**
   * One connection, until it ends or `signal` aborts (the watchdog, going offline, drop(), close()).
   * `arm` restarts the watchdog: call it whenever bytes arrive. Resolves true when the stream is
   * finished for good; false or a throw reconnects after a backoff.
   */
  protected abstract connectOnce(signal: AbortSignal, arm: () => void): Promise<boolean>;

  /** Whether a connection that was live this long starts the backoff over; by default any does. */
  protected resetsBackoff(_liveMs: number): boolean {
    return true;
  }

  start(): this {
    if (this.transport.onlineEvents) {
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
    if (this.transport.onlineEvents) {
      window.removeEventListener("online", this.handleOnline);
      window.removeEventListener("offline", this.handleOffline);
    }
  }

  /** Skip the current backoff wait (the network came back, the tab became visible). */
  retryNow(): void {
    this.wake?.();
  }

  /** Drop the current connection: the loop backs off and connects again. */
  protected drop(): void {
    this.controller?.abort();
  }

  /** The connection is up: the caller hears it, and from now on it counts towards resetsBackoff. */
  protected live(): void {
    this.liveSince = Date.now();
    this.transport.onState("live", { attempt: 0, retryInMs: null, error: null });
  }

  /** GET `path` as an event stream: the body as text, or a throw (FatalStreamError stops the loop). */
  protected async open(
    path: string,
    headers: Record<string, string>,
    signal: AbortSignal,
  ): Promise<ReadableStreamDefaultReader<string>> {
    const response = await this.transport.fetchImpl(path, {
      headers: { Accept: "text/event-stream", ...headers, ...authHeaders("GET") },
      credentials: "same-origin",
      cache: "no-store",
      signal,
    });
    if (!response.ok) {
      const err = await errorFrom(response);
      if (FATAL_STATUSES.has(response.status)) throw new FatalStreamError(response.status, err.message);
      throw new Error(err.message);
    }
    if (!response.body) throw new Error("the stream has no body");
    return response.body.pipeThrough(new TextDecoderStream()).getReader();
  }

  private isOffline(): boolean {
    return typeof navigator !== "undefined" && navigator.onLine === false;
  }

  private async loop(): Promise<void> {
    while (!this.closed) {
      if (this.isOffline()) {
        this.transport.onState("offline", { attempt: this.attempt, retryInMs: null, error: null });
        await this.sleep(null);
        continue;
      }
      this.transport.onState(this.attempt === 0 ? "connecting" : "reconnecting", {
        attempt: this.attempt,
        retryInMs: null,
        error: null,
      });
      let error: string | null = null;
      try {
        const finished = await this.connect();
        if (finished) {
          this.transport.onState("ended", { attempt: 0, retryInMs: null, error: null });
          this.close();
          return;
        }
      } catch (exc) {
        if (this.closed) return;
        if (exc instanceof FatalStreamError) {
          this.transport.onFatal?.(exc.status, exc.message);
          this.transport.onState("ended", { attempt: this.attempt, retryInMs: null, error: exc.message });
          this.close();
          return;
        }
        error = exc instanceof Error ? exc.message : String(exc);
      }
      if (this.closed) return;
      if (this.liveSince !== null && this.resetsBackoff(Date.now() - this.liveSince)) this.attempt = 0;
      this.liveSince = null;
      const delay = backoffDelay(this.attempt, this.transport.backoffMs);
      this.attempt += 1;
      const state = this.isOffline() ? "offline" : "reconnecting";
      this.transport.onState(state, { attempt: this.attempt, retryInMs: delay, error });
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

  /** connectOnce with its own abort controller and watchdog, both gone when it ends. */
  private async connect(): Promise<boolean> {
    const controller = new AbortController();
    this.controller = controller;
    let watchdog: ReturnType<typeof setTimeout> | null = null;
    const arm = (): void => {
      if (watchdog !== null) clearTimeout(watchdog);
      watchdog = setTimeout(() => controller.abort(), this.transport.watchdogMs);
    };
    try {
      arm();
      return await this.connectOnce(controller.signal, arm);
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

/** One run's live log: connects, parses, hands batches of events on, resumes until the terminal event. */
export class RunStream extends ReconnectingStream {
  private readonly opts: RunStreamOptions;

  constructor(options: RunStreamOptions) {
    super(options);
    this.opts = options;
  }

  get runId(): string {
    return this.opts.runId;
  }

  /** Drop the current connection and resume after the last applied seq (after a short backoff). */
  reconnect(): void {
    this.drop();
  }

  /** One connection; true when the terminal event was applied. */
  protected override async connectOnce(signal: AbortSignal, arm: () => void): Promise<boolean> {
    const after = this.opts.lastApplied();
    const path = `/api/runs/${encodeURIComponent(this.opts.runId)}/stream?after=${after}`;
    const reader = await this.open(path, { "Last-Event-ID": String(after) }, signal);
    this.live();
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
  }
}
