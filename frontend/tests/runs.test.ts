import { createPinia, setActivePinia } from "pinia";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { Conversation, ConversationDetail, Run, StoredMessage } from "../src/api/types";
import { findTurn } from "../src/core/transcript";
import { useConversationsStore } from "../src/stores/conversations";
import { useRunsStore } from "../src/stores/runs";
import { completedRunMessages, makeLog, makeRun } from "./fixtures";

function conversation(id: string): Conversation {
  return { id, title: id, created_at: "2026-01-01T00:00:00Z", updated_at: "2026-01-01T00:00:00Z" };
}

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

function sse(controller: ReadableStreamDefaultController<Uint8Array>, text: string): void {
  controller.enqueue(new TextEncoder().encode(text));
}

/** The endpoints the two stores read: the list, one conversation, run lists, run streams, the activity feed. */
class FakeServer {
  requests: string[] = [];
  conversations: Conversation[] = [conversation("conv_1")];
  /** What GET /api/conversations/conv_1 answers: read when the request comes, sent after `hold`. */
  detail: ConversationDetail = { ...conversation("conv_1"), messages: [], active_run: null };
  /** Every run of conv_1 (the run lists and the run summaries). */
  runs: Run[] = [];
  /** While set, answers to GET /api/conversations/conv_1 wait for it. */
  hold: Promise<void> | null = null;
  private feed: ReadableStreamDefaultController<Uint8Array> | null = null;

  readonly fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const url = String(input);
    this.requests.push(url);
    if (url === "/api/activity") {
      return this.stream(init, (controller) => {
        this.feed = controller;
        sse(controller, ": connected\n\n");
      });
    }
    const streamed = /^\/api\/runs\/([^/]+)\/stream\?after=0$/.exec(url);
    if (streamed) {
      // the run's first event, then the stream stays open (the run goes on)
      const runId = decodeURIComponent(streamed[1] ?? "");
      return this.stream(init, (controller) => {
        for (const event of makeLog(runId, [["run.started", {}]])) sse(controller, `data: ${JSON.stringify(event)}\n\n`);
      });
    }
    if (url.startsWith("/api/runs?")) {
      const active = url.includes("active=true");
      return json({ runs: this.runs.filter((r) => !active || r.status === "queued" || r.status === "running") });
    }
    if (url === "/api/conversations") return json({ conversations: this.conversations });
    if (url === "/api/conversations/conv_1") {
      const detail = this.detail; // the snapshot is taken now, the answer may come later
      if (this.hold) await this.hold;
      return json(detail);
    }
    return json({ error: { code: "not_found", message: url } }, 404);
  };

  private stream(init: RequestInit | undefined, start: (c: ReadableStreamDefaultController<Uint8Array>) => void): Response {
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        start(controller);
        init?.signal?.addEventListener("abort", () => controller.error(new DOMException("aborted", "AbortError")));
      },
    });
    return new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
  }

  notice(run: Run): void {
    this.feed?.enqueue(new TextEncoder().encode(`event: run\ndata: ${JSON.stringify(run)}\n\n`));
  }

  count(url: string): number {
    return this.requests.filter((r) => r === url).length;
  }
}

describe("runs store: runs started elsewhere", () => {
  let server: FakeServer;
  let conversations: ReturnType<typeof useConversationsStore>;
  let runs: ReturnType<typeof useRunsStore>;

  beforeEach(async () => {
    server = new FakeServer();
    vi.stubGlobal("fetch", server.fetch);
    setActivePinia(createPinia());
    conversations = useConversationsStore();
    runs = useRunsStore();
    server.runs = [makeRun("run_1", "completed")];
    server.detail = { ...conversation("conv_1"), messages: completedRunMessages("run_1"), active_run: null };
    await conversations.load();
    runs.startWatching();
    conversations.startWatching();
    await expect.poll(() => conversations.feedState).toBe("live");
    await expect.poll(() => server.count("/api/runs?limit=10")).toBe(1); // caught up on open
  });

  afterEach(() => {
    runs.close();
    conversations.stopWatching();
    vi.unstubAllGlobals();
  });

  /** Open conv_1 with its GET held; returns the release. */
  async function openHeld(): Promise<() => void> {
    let release: () => void = () => undefined;
    server.hold = new Promise((resolve) => (release = resolve));
    void runs.open("conv_1");
    expect(runs.loadState).toBe("loading");
    await expect.poll(() => server.count("/api/conversations/conv_1")).toBe(1);
    return release;
  }

  /** Another device starts run_2 in conv_1: stored and announced on the activity feed. */
  async function startedElsewhere(): Promise<void> {
    const run = makeRun("run_2", "running");
    const user: StoredMessage = { id: "msg_u_run_2", run_id: "run_2", role: "user", content: "say hi" };
    server.runs = [run, ...server.runs];
    server.detail = { ...server.detail, messages: [...server.detail.messages, user], active_run: run };
    server.notice(makeRun("run_2", "queued"));
    server.notice(run);
    await expect.poll(() => conversations.activeRuns).toEqual({ conv_1: "run_2" }); // the listeners were told
  }

  it("keeps a notice that came while the conversation loaded and loads again when the answer lacks the run", async () => {
    const release = await openHeld(); // the snapshot predates run_2
    await startedElsewhere();
    release();
    await expect.poll(() => server.count("/api/conversations/conv_1")).toBe(2);
    await expect.poll(() => findTurn(runs.transcript, "run_2")?.status).toBe("running");
    expect(runs.loadState).toBe("ready");
    expect(runs.transcript.turns.map((t) => t.runId)).toEqual(["run_1", "run_2"]);
    expect(runs.activeTurn?.runId).toBe("run_2");
    await expect.poll(() => server.count("/api/runs/run_2/stream?after=0")).toBeGreaterThan(0); // followed live
  });

  it("does not load again when the answer already has the noticed run", async () => {
    let release: () => void = () => undefined;
    server.hold = new Promise((resolve) => (release = resolve));
    await startedElsewhere(); // before the GET: its snapshot has run_2
    void runs.open("conv_1");
    await expect.poll(() => server.count("/api/conversations/conv_1")).toBe(1);
    server.notice(makeRun("run_2", "running")); // a late notice while loading
    await new Promise((resolve) => setTimeout(resolve, 20));
    release();
    await expect.poll(() => runs.activeTurn?.runId).toBe("run_2");
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(server.count("/api/conversations/conv_1")).toBe(1);
  });
});
