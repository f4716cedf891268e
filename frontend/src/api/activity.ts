// The caller's runs as they change, pushed by the server (GET /api/activity, Server-Sent Events).
// The notices are hints, not a log: no ids, no resume, so whatever happened while there was no
// connection is lost and every (re)connect tells the caller to read the state again (onOpen).
// Same transport as RunStream (ReconnectingStream in ./sse): fetch + a ReadableStream, backoff
// with jitter, a watchdog for a silent connection, and a stop for good when the server says the
// feed is not for us.

import { ReconnectingStream, SSEParser, type ReconnectingStreamOptions } from "./sse";
import type { Run } from "./types";

export interface ActivityStreamOptions extends Omit<ReconnectingStreamOptions, "onFatal"> {
  /** A connection is up: what happened before it is unknown, read the state again. */
  onOpen: () => void;
  onRun: (run: Run) => void;
  /** The session ended (401, 403) or the server has no feed (404): stopped without retrying. */
  onUnavailable?: (status: number, message: string) => void;
  /** Only a connection that lasted this long resets the backoff: a server that ends it at once is not hammered. */
  stableMs?: number;
}

/** The activity feed: connects, parses, hands each run notice on, reconnects until closed. */
export class ActivityStream extends ReconnectingStream {
  private readonly opts: Required<Pick<ActivityStreamOptions, "stableMs">> & ActivityStreamOptions;

  constructor(options: ActivityStreamOptions) {
    super({ ...options, onFatal: options.onUnavailable });
    this.opts = { stableMs: 10_000, ...options };
  }

  protected override resetsBackoff(liveMs: number): boolean {
    return liveMs >= this.opts.stableMs;
  }

  /** One connection, until the server ends it (it restarts, we lagged, credentials changed) or it is dropped. */
  protected override async connectOnce(signal: AbortSignal, arm: () => void): Promise<boolean> {
    const reader = await this.open("/api/activity", {}, signal);
    const parser = new SSEParser();
    let opened = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false; // never finished: the loop connects again
      arm();
      if (!opened) {
        // live at the first bytes (": connected"), not at the headers: behind a proxy that
        // buffers the stream nothing would arrive, and the caller's fallback must keep going
        opened = true;
        this.live();
        this.opts.onOpen();
      }
      for (const frame of parser.feed(value)) {
        if (frame.event !== "run") continue; // a kind of notice this UI does not know yet
        const run = parseRun(frame.data);
        if (run) this.opts.onRun(run);
      }
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
