// @vitest-environment node
import { describe, expect, it } from "vitest";
import { ActivityStream } from "../src/api/activity";
import type { StreamState } from "../src/api/sse";
import type { Run } from "../src/api/types";
import { makeRun } from "./fixtures";

function runFrame(run: Run): string {
  return `event: run\ndata: ${JSON.stringify(run)}\n\n`;
}

function sse(chunks: string[]): Response {
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      const enc = new TextEncoder();
      for (const chunk of chunks) controller.enqueue(enc.encode(chunk));
      controller.close();
    },
  });
  return new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
}

type Answer = Response | Error | ((signal: AbortSignal) => Response);

/** A fetch that answers each connection from a list (a Response, an error to throw, or a stream to abort), then 404. */
function server(answers: Answer[]) {
  const requests: { url: string; accept: string | null }[] = [];
  const fetchImpl = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    requests.push({ url: String(input), accept: new Headers(init?.headers).get("Accept") });
    const answer = answers[requests.length - 1] ?? new Response(null, { status: 404 });
    if (answer instanceof Error) throw answer;
    if (typeof answer === "function") return answer(init?.signal ?? new AbortController().signal);
    return answer;
  };
  return { requests, fetchImpl };
}

describe("ActivityStream", () => {
  it("hands on run notices, opens on every (re)connect and reconnects after the server ends the stream", async () => {
    const a = makeRun("run_a", "queued");
    const b = makeRun("run_b", "running", "conv_2");
    const text = ": connected\n\n" + runFrame(a) + ": heartbeat\n\nevent: other\ndata: {}\n\n" + runFrame(b);
    // the first connection arrives in awkward pieces; the network fails once; the third is quiet
    const chunks = text.match(/[\s\S]{1,7}/g) ?? [];
    const { requests, fetchImpl } = server([
      sse(chunks),
      new TypeError("Failed to fetch"),
      sse([": connected\n\n", runFrame({ ...a, status: "completed" })]),
      sse([": lagged\n\n"]),
    ]);
    const events: string[] = [];
    const states: StreamState[] = [];
    const unavailable = await new Promise<number>((resolve) => {
      new ActivityStream({
        onOpen: () => events.push("open"),
        onRun: (run) => events.push(`${run.id}:${run.status}`),
        onState: (state) => states.push(state),
        onUnavailable: (status) => resolve(status),
        backoffMs: [1],
        fetchImpl,
        onlineEvents: false,
      }).start();
    });
    expect(events).toEqual(["open", "run_a:queued", "run_b:running", "open", "run_a:completed", "open"]);
    expect(requests).toHaveLength(5);
    expect(requests.every((r) => r.url === "/api/activity" && r.accept === "text/event-stream")).toBe(true);
    expect(unavailable).toBe(404);
    expect(states[0]).toBe("connecting");
    expect(states).toContain("live");
    expect(states).toContain("reconnecting");
    expect(states.at(-1)).toBe("ended");
  });

  it("stops for good when the session is gone (401), without opening", async () => {
    const { requests, fetchImpl } = server([
      new Response(JSON.stringify({ error: { code: "unauthorized", message: "sign in" } }), { status: 401 }),
    ]);
    let opened = 0;
    const got = await new Promise<[number, string]>((resolve) => {
      new ActivityStream({
        onOpen: () => opened++,
        onRun: () => undefined,
        onState: () => undefined,
        onUnavailable: (status, message) => resolve([status, message]),
        backoffMs: [1],
        fetchImpl,
        onlineEvents: false,
      }).start();
    });
    expect(got).toEqual([401, "sign in"]);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(requests).toHaveLength(1);
    expect(opened).toBe(0);
  });

  it("retries a server error, and is not live before the first bytes", async () => {
    let release: () => void = () => undefined;
    const held = new ReadableStream<Uint8Array>({
      start(controller) {
        release = () => controller.enqueue(new TextEncoder().encode(": connected\n\n"));
      },
    });
    const { requests, fetchImpl } = server([
      new Response("oops", { status: 503 }),
      new Response(held, { status: 200, headers: { "content-type": "text/event-stream" } }),
    ]);
    const states: StreamState[] = [];
    let opened = 0;
    const stream = new ActivityStream({
      onOpen: () => opened++,
      onRun: () => undefined,
      onState: (state) => states.push(state),
      backoffMs: [1],
      fetchImpl,
      onlineEvents: false,
    }).start();
    await expect.poll(() => requests.length).toBe(2);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(states).not.toContain("live");
    expect(opened).toBe(0);
    release();
    await expect.poll(() => opened).toBe(1);
    expect(states.at(-1)).toBe("live");
    stream.close();
  });

  it("drops a silent connection (watchdog) and connects again", async () => {
    // connected, then nothing at all (as a real fetch, the body fails when the request is aborted)
    const silent = (signal: AbortSignal): Response => {
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode(": connected\n\n"));
          signal.addEventListener("abort", () => controller.error(new DOMException("aborted", "AbortError")));
        },
      });
      return new Response(body, { status: 200 });
    };
    const { requests, fetchImpl } = server([silent, silent]);
    let opened = 0;
    const stream = new ActivityStream({
      onOpen: () => opened++,
      onRun: () => undefined,
      onState: () => undefined,
      watchdogMs: 30,
      backoffMs: [1],
      fetchImpl,
      onlineEvents: false,
    }).start();
    await expect.poll(() => opened).toBe(2);
    stream.close();
    expect(requests.length).toBeGreaterThanOrEqual(2);
  });
});
