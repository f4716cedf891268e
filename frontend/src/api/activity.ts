// The caller's runs as they change, pushed by the server (GET /api/activity, Server-Sent Events).
// The notices are hints, not a log: no ids, no resume, so whatever happened while there was no
// connection is lost and every (re)connect tells the caller to read the state again (onOpen).
// Same transport as RunStream: fetch + a ReadableStream, backoff with jitter, a watchdog for a
// silent connection, and a stop for good when the server says the feed is not for us.

import { authHeaders, errorFrom } from "./http";
import { backoffDelay, SSEParser, type StreamInfo, type StreamState } from "./sse";
import type { Run } from "./types";

export interface ActivityStreamOptions {
  /** A connection is up: what happened before it is unknown, read the state again. */
  onOpen: () => void;
  onRun: (run: Run) => void;
  onState: (state: StreamState, info: StreamInfo) => void;
  /** The session ended (401, 403) or the server has no feed (404): stopped without retrying. */
  onUnavailable?: (status: number, message: string) => void;
  /** A silent connection (no bytes, not even a heartbeat) is dropped after this long. */
  watchdogMs?: number;
  backoffMs?: readonly number[];
  /** Only a connection that lasted this long resets the backoff: a server that ends it at once is not hammered. */
  stableMs?: number;
  fetchImpl?: typeof fetch;
  onlineEvents?: boolean;
}

type Defaults = "watchdogMs" | "stableMs" | "fetchImpl" | "onlineEvents";

/** The activity feed: connects, parses, hands each run notice on, reconnects until closed. */
export class ActivityStream {
  private closed = false;
  private controller: AbortController | null = null;
  private wake: (() => void) | null = null;
  private attempt = 0;
  /** When the current connection became live (null: it is not). */
  private liveSince: number | null = null;
  private readonly opts: Required<Pick<ActivityStreamOptions, Defaults>> & ActivityStreamOptions;
  private readonly handleOnline = (): void => this.retryNow();
  private readonly handleOffline = (): void => {
    this.controller?.abort();
  };

  constructor(options: ActivityStreamOptions) {
    this.opts = {
      watchdogMs: 45_000,
      stableMs: 10_000,
      fetchImpl: (input, init) => fetch(input, init),
      onlineEvents: typeof window !== "undefined",
      ...options,
    };
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

  /** Skip the current backoff wait (the network came back). */
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
        // returns when the server ends the stream (it restarts, we lagged, credentials changed)
        await this.connectOnce();
      } catch (exc) {
        if (this.closed) return;
        if (exc instanceof UnavailableError) {
          this.opts.onUnavailable?.(exc.status, exc.message);
          this.opts.onState("ended", { attempt: this.attempt, retryInMs: null, error: exc.message });
          this.close();
          return;
        }
        error = exc instanceof Error ? exc.message : String(exc);
      }
      if (this.closed) return;
      if (this.liveSince !== null && Date.now() - this.liveSince >= this.opts.stableMs) this.attempt = 0;
      this.liveSince = null;
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

  /** One connection, until the server ends it or it is dropped. */
  private async connectOnce(): Promise<void> {
    const controller = new AbortController();
    this.controller = controller;
    let watchdog: ReturnType<typeof setTimeout> | null = null;
    const arm = (): void => {
      if (watchdog !== null) clearTimeout(watchdog);
      watchdog = setTimeout(() => controller.abort(), this.opts.watchdogMs);
    };
    try {
      arm();
      const response = await this.opts.fetchImpl("/api/activity", {
        headers: { Accept: "text/event-stream", ...authHeaders("GET") },
        credentials: "same-origin",
        cache: "no-store",
        signal: controller.signal,
      });
      if (!response.ok) {
        const err = await errorFrom(response);
        if (response.status === 401 || response.status === 403 || response.status === 404) {
          throw new UnavailableError(response.status, err.message);
        }
        throw new Error(err.message);
      }
      if (!response.body) throw new Error("the stream has no body");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new SSEParser();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        arm();
        if (this.liveSince === null) {
          // live at the first bytes (": connected"), not at the headers: behind a proxy that
          // buffers the stream nothing would arrive, and the caller's fallback must keep going
          this.liveSince = Date.now();
          this.opts.onState("live", { attempt: 0, retryInMs: null, error: null });
          this.opts.onOpen();
        }
        for (const frame of parser.feed(value)) {
          if (frame.event !== "run") continue; // a kind of notice this UI does not know yet
          const run = parseRun(frame.data);
          if (run) this.opts.onRun(run);
        }
      }
    } finally {
      if (watchdog !== null) clearTimeout(watchdog);
      if (this.controller === controller) this.controller = null;
    }
  }
}

/** A notice is a hint: one that is not a run is skipped rather than worth a reconnect. */
function parseRun(data: string): Run | null {
  try {
    const run: unknown = JSON.parse(data);
    if (run && typeof run === "object" && "id" in run && "conversation_id" in run && "status" in run) {
      return run as Run;
    }
  } catch {
    // not JSON: skipped
  }
  return null;
}

class UnavailableError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}
