import { createPinia, setActivePinia } from "pinia";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { Conversation, Run } from "../src/api/types";
import { CHECK_INTERVAL_MS, useConversationsStore } from "../src/stores/conversations";
import { makeRun } from "./fixtures";

function conversation(id: string): Conversation {
  return { id, title: id, created_at: "2026-01-01T00:00:00Z", updated_at: "2026-01-01T00:00:00Z" };
}

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

/** The few endpoints the store reads, with an activity feed the test writes into. */
class FakeServer {
  requests: string[] = [];
  activeRuns: Run[] = [];
  recentRuns: Run[] = [];
  conversations: Conversation[] = [conversation("conv_1")];
  activityStatus = 200;
  /** While set, answers to /api/runs wait for it. */
  hold: Promise<void> | null = null;
  /** The client aborted its feed connection. */
  feedAborted = false;
  private feed: ReadableStreamDefaultController<Uint8Array> | null = null;

  readonly fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const url = String(input);
    this.requests.push(url);
    if (url === "/api/activity") {
      if (this.activityStatus !== 200) return json({ error: { code: "x", message: "no feed" } }, this.activityStatus);
      const body = new ReadableStream<Uint8Array>({
        start: (controller) => {
          this.feed = controller;
          controller.enqueue(new TextEncoder().encode(": connected\n\n"));
          init?.signal?.addEventListener("abort", () => {
            this.feedAborted = true;
            controller.error(new DOMException("aborted", "AbortError"));
          });
        },
      });
      return new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
    }
    if (url.startsWith("/api/runs?")) {
      const active = url.includes("active=true");
      const runs = active ? this.activeRuns : this.recentRuns;
      if (this.hold) await this.hold;
      return json({ runs });
    }
    if (url === "/api/conversations") return json({ conversations: this.conversations });
    return json({ error: { code: "not_found", message: url } }, 404);
  };

  notice(run: Run): void {
    this.feed?.enqueue(new TextEncoder().encode(`event: run\ndata: ${JSON.stringify(run)}\n\n`));
  }

  /** The server ends the stream (it restarts, the client lagged). */
  end(): void {
    this.feed?.close();
  }

  count(prefix: string): number {
    return this.requests.filter((r) => r.startsWith(prefix)).length;
  }
}

describe("conversations store: the activity feed", () => {
  let server: FakeServer;
  let store: ReturnType<typeof useConversationsStore>;

  beforeEach(() => {
    server = new FakeServer();
    vi.stubGlobal("fetch", server.fetch);
    setActivePinia(createPinia());
    store = useConversationsStore();
  });

  afterEach(() => {
    store.stopWatching();
    vi.unstubAllGlobals();
  });

  async function live(): Promise<void> {
    store.startWatching();
    await expect.poll(() => store.feedState).toBe("live");
    await expect.poll(() => server.count("/api/runs?active=true")).toBe(1); // caught up on open
  }

  it("catches up with one check when the feed opens", async () => {
    server.activeRuns = [makeRun("run_1", "running")];
    server.recentRuns = [makeRun("run_1", "running")];
    await live();
    await expect.poll(() => store.activeRuns).toEqual({ conv_1: "run_1" });
    expect(server.count("/api/runs?limit=10")).toBe(1);
  });

  it("turns the badge on for an active run and off when it ends, and tells the listeners", async () => {
    const heard: string[][] = [];
    store.onRuns((runs) => heard.push(runs.map((r) => `${r.id}:${r.status}`)));
    await store.load();
    await live();
    await expect.poll(() => heard.length).toBe(1); // the check on open
    server.notice(makeRun("run_1", "queued"));
    await expect.poll(() => store.activeRuns).toEqual({ conv_1: "run_1" });
    server.notice(makeRun("run_1", "running"));
    server.notice(makeRun("run_1", "completed"));
    await expect.poll(() => store.activeRuns).toEqual({});
    expect(heard.slice(1)).toEqual([["run_1:queued"], ["run_1:running"], ["run_1:completed"]]);
    expect(server.count("/api/conversations")).toBe(1); // a known conversation: no reload
  });

  it("moves the conversation of a new run to the top", async () => {
    server.conversations = [conversation("conv_1"), conversation("conv_2")];
    await store.load();
    await live();
    server.notice(makeRun("run_2", "queued", "conv_2"));
    await expect.poll(() => store.sorted[0]?.id).toBe("conv_2");
  });

  it("loads the list when a run is in a conversation it does not know", async () => {
    await store.load();
    await live();
    server.conversations = [conversation("conv_new"), conversation("conv_1")];
    server.notice(makeRun("run_9", "queued", "conv_new"));
    await expect.poll(() => store.byId("conv_new")?.id).toBe("conv_new");
    expect(store.activeRuns).toEqual({ conv_new: "run_9" });
    server.notice(makeRun("run_9", "running", "conv_new"));
    await expect.poll(() => store.activeRuns).toEqual({ conv_new: "run_9" });
    expect(server.count("/api/conversations")).toBe(2); // the first load, then once for the new run
  });

  it("keeps a notice that came while a check was in flight over the check's older answer", async () => {
    let release: () => void = () => undefined;
    server.hold = new Promise((resolve) => (release = resolve));
    server.activeRuns = [makeRun("run_1", "running")];
    store.startWatching();
    await expect.poll(() => store.feedState).toBe("live");
    await expect.poll(() => server.count("/api/runs?active=true")).toBe(1);
    server.notice(makeRun("run_1", "completed")); // the check read the runs before this
    await new Promise((resolve) => setTimeout(resolve, 20));
    release();
    await expect.poll(() => store.reachable && server.count("/api/runs?limit=10")).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(store.activeRuns).toEqual({});
  });

  it("checks every few seconds only while the feed is not live", async () => {
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
    try {
      await live();
      vi.advanceTimersByTime(CHECK_INTERVAL_MS * 3);
      expect(server.count("/api/runs?active=true")).toBe(1);
      server.activityStatus = 503; // the feed cannot come back for now
      server.end();
      await expect.poll(() => store.feedState).toBe("reconnecting");
      vi.advanceTimersByTime(CHECK_INTERVAL_MS * 2);
      expect(server.count("/api/runs?active=true")).toBe(3);
    } finally {
      vi.useRealTimers();
    }
  });

  it("falls back to the check alone on a server without the feed (404)", async () => {
    server.activityStatus = 404;
    server.activeRuns = [makeRun("run_1", "running")];
    store.startWatching();
    await expect.poll(() => store.feedState).toBe("unavailable");
    await expect.poll(() => store.activeRuns).toEqual({ conv_1: "run_1" });
    expect(server.count("/api/activity")).toBe(1);
  });

  it("closes the feed when watching stops", async () => {
    await live();
    store.stopWatching();
    expect(store.feedState).toBe("off");
    expect(server.feedAborted).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(server.count("/api/activity")).toBe(1); // and it does not come back
  });
});
