// @vitest-environment node
import { describe, expect, it } from "vitest";
import { backoffDelay, RunStream, SSEParser, type StreamState } from "../src/api/sse";
import type { RunEvent } from "../src/api/types";
import { applyEvents, attachRun, emptyTranscript, findTurn } from "../src/core/transcript";
import { completedRunLog } from "./fixtures";

function frame(e: RunEvent): string {
  return `id: ${e.seq}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`;
}

describe("SSEParser", () => {
  it("parses frames split at every possible point", () => {
    const log = completedRunLog();
    const text = ": connected\n\n" + log.map(frame).join(": heartbeat\n\n");
    for (const size of [1, 2, 3, 5, 17, 64, text.length]) {
      const parser = new SSEParser();
      const got: RunEvent[] = [];
      for (let i = 0; i < text.length; i += size) {
        for (const f of parser.feed(text.slice(i, i + size))) {
          const event = JSON.parse(f.data) as RunEvent;
          expect(f.id).toBe(String(event.seq));
          expect(f.event).toBe(event.type);
          got.push(event);
        }
      }
      expect(got).toEqual(log);
    }
  });

  it("accepts CRLF and CR line ends, multi-line data, and fields without a space", () => {
    const parser = new SSEParser();
    const frames = [
      ...parser.feed("id:1\r\nevent:a\r\ndata:x\r\ndata: y\r\n\r"),
      ...parser.feed("\nid: 2\rdata: z\r\r"),
    ];
    expect(frames).toEqual([
      { id: "1", event: "a", data: "x\ny" },
      { id: "2", event: null, data: "z" },
    ]);
  });
});

describe("backoffDelay", () => {
  it("grows, caps, and jitters within ±20%", () => {
    expect(backoffDelay(0, [100, 200], () => 0.5)).toBe(100);
    expect(backoffDelay(5, [100, 200], () => 0.5)).toBe(200);
    expect(backoffDelay(0, [100], () => 0)).toBe(80);
    expect(backoffDelay(0, [100], () => 1)).toBe(120);
  });
});

/** A fetch that serves the log over several connections, each cut after `cuts[i]` events. */
function flakyServer(log: RunEvent[], cuts: number[]) {
  const requests: { after: string | null; lastEventId: string | null }[] = [];
  const fetchImpl = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const url = new URL(String(input), "http://x");
    const headers = new Headers(init?.headers);
    requests.push({ after: url.searchParams.get("after"), lastEventId: headers.get("Last-Event-ID") });
    const attempt = requests.length - 1;
    if (attempt === 1) throw new TypeError("Failed to fetch"); // the network is down once
    const after = Number(url.searchParams.get("after") ?? 0);
    const cut = cuts[attempt] ?? Infinity;
    // replay from `after`, but also resend two old events: the client must drop them
    const events = log.filter((e) => e.seq > Math.max(0, after - 2)).slice(0, cut);
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        const enc = new TextEncoder();
        controller.enqueue(enc.encode(": connected\n\n"));
        for (const e of events) controller.enqueue(enc.encode(frame(e)));
        controller.close();
      },
    });
    return new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
  };
  return { requests, fetchImpl };
}

describe("RunStream", () => {
  it("resumes after the last applied seq until the terminal event, and the view has every event once", async () => {
    const log = completedRunLog();
    const server = flakyServer(log, [4, 0, 6, 5, 100]);
    const t = emptyTranscript();
    attachRun(t, "run_1", "say hi", "queued");
    const states: StreamState[] = [];
    await new Promise<void>((resolve) => {
      new RunStream({
        runId: "run_1",
        lastApplied: () => findTurn(t, "run_1")?.lastSeq ?? 0,
        onEvents: (events) => {
          expect(applyEvents(t, events)).toBe("applied");
        },
        onState: (state) => {
          states.push(state);
          if (state === "ended") resolve();
        },
        backoffMs: [1],
        fetchImpl: server.fetchImpl,
        onlineEvents: false,
      }).start();
    });
    const once = emptyTranscript();
    attachRun(once, "run_1", "say hi", "queued");
    applyEvents(once, log);
    expect(t).toEqual(once);
    expect(server.requests.map((r) => r.after)).toEqual(["0", "4", "4", "8", "11"]);
    expect(server.requests.map((r) => r.lastEventId)).toEqual(["0", "4", "4", "8", "11"]);
    expect(states[0]).toBe("connecting");
    expect(states).toContain("reconnecting");
    expect(states.at(-1)).toBe("ended");
  });

  it("stops for good when the run does not exist", async () => {
    const fatal = await new Promise<number>((resolve) => {
      new RunStream({
        runId: "nope",
        lastApplied: () => 0,
        onEvents: () => undefined,
        onState: () => undefined,
        onFatal: (status) => resolve(status),
        fetchImpl: async () => new Response(JSON.stringify({ error: { code: "not_found", message: "no run" } }), { status: 404 }),
        onlineEvents: false,
      }).start();
    });
    expect(fatal).toBe(404);
  });
});
