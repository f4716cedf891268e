import { describe, expect, it } from "vitest";
import type { RunEvent, StoredMessage } from "../src/api/types";
import {
  applyEvent,
  applyEvents,
  attachRun,
  emptyTranscript,
  fromStored,
  markCancelling,
  storedToolStatus,
  visibleOutput,
  type AssistantPart,
  type RunSummary,
  type ToolPart,
  type Transcript,
} from "../src/core/transcript";
import { cancelledRunLog, completedRunLog, completedRunMessages, makeLog } from "./fixtures";

function live(runId: string, log: RunEvent[], userText = "say hi"): Transcript {
  const t = emptyTranscript();
  attachRun(t, runId, userText, "queued");
  for (const event of log) expect(applyEvent(t, event)).toBe("applied");
  return t;
}

/** What the reader sees, without the bookkeeping: the comparison for "rendered once". */
function visible(t: Transcript): unknown {
  return t.turns.map((turn) => ({
    user: turn.userText,
    status: turn.status,
    notice: turn.notice,
    parts: turn.parts.map((p) =>
      p.kind === "assistant"
        ? { kind: p.kind, key: p.key, text: p.text, reasoning: p.reasoning }
        : { kind: p.kind, key: p.key, name: p.name, arguments: p.arguments, status: p.status, result: visibleOutput(p).result },
    ),
  }));
}

const runs = (...list: RunSummary[]): Map<string, RunSummary> => new Map(list.map((r) => [r.id, r]));

describe("applyEvent", () => {
  it("builds a turn from a run's log", () => {
    const t = live("run_1", completedRunLog());
    expect(t.turns).toHaveLength(1);
    const turn = t.turns[0]!;
    expect(turn.status).toBe("completed");
    expect(turn.lastSeq).toBe(18);
    expect(turn.parts.map((p) => `${p.kind}:${p.key}`)).toEqual(["assistant:msg_a", "tool:call_1", "assistant:msg_b"]);
    const a = turn.parts[0] as AssistantPart;
    expect(a.text).toBe("I will run it.");
    expect(a.reasoning).toBe("Let me think.");
    expect(a.streaming).toBe(false);
    const tool = turn.parts[1] as ToolPart;
    expect(tool.status).toBe("ok");
    expect(tool.output).toEqual([{ stream: "stdout", text: "hi\n" }]);
    expect(tool.result).toBe("hi\n[exit code 0]");
  });

  it("shows a message while it streams, reasoning open until the answer starts", () => {
    const log = completedRunLog();
    const t = live("run_1", log.slice(0, 4));
    const a = t.turns[0]!.parts[0] as AssistantPart;
    expect(a).toMatchObject({ streaming: true, reasoningStreaming: true, reasoning: "Let me think.", text: "" });
    applyEvent(t, log[4]!);
    expect(a).toMatchObject({ streaming: true, reasoningStreaming: false, text: "I will " });
  });

  it("shows the tool call as it is written, then running, then its status", () => {
    const log = completedRunLog();
    const t = live("run_1", log.slice(0, 7));
    const tool = t.turns[0]!.parts[1] as ToolPart;
    expect(tool).toMatchObject({ status: "writing", name: "run_command", arguments: '{"command": ' });
    applyEvents(t, log.slice(7, 11));
    expect(tool.status).toBe("running");
    expect(visibleOutput(tool)).toEqual({ live: "h", result: null });
  });

  it("drops every event at or below the last applied seq", () => {
    const log = completedRunLog();
    const once = live("run_1", log);
    const t = live("run_1", log.slice(0, 10));
    // a reconnect that replays an overlap, and a second copy of everything
    expect(applyEvents(t, log.slice(5))).toBe("applied");
    for (const event of log) expect(applyEvent(t, event)).toBe("duplicate");
    expect(t).toEqual(once);
  });

  it("refuses a gap and changes nothing", () => {
    const log = completedRunLog();
    const t = live("run_1", log.slice(0, 5));
    const before = JSON.stringify(t);
    expect(applyEvent(t, log[7]!)).toBe("gap");
    expect(applyEvents(t, log.slice(6))).toBe("gap");
    expect(JSON.stringify(t)).toBe(before);
  });

  it("gives the same view whether events come one by one, in batches, or replayed", () => {
    const log = completedRunLog();
    const oneByOne = live("run_1", log);
    for (const size of [1, 2, 3, 7, 100]) {
      const t = emptyTranscript();
      attachRun(t, "run_1", "say hi", "queued");
      for (let i = 0; i < log.length; i += size) applyEvents(t, log.slice(i, i + size));
      expect(t).toEqual(oneByOne);
    }
  });

  it("ignores unknown event types but counts their seq", () => {
    const log = makeLog("run_x", [
      ["run.started", {}],
      ["something.new", { whatever: 1 }],
      ["run.completed", {}],
    ]);
    const t = live("run_x", log);
    expect(t.turns[0]!.lastSeq).toBe(3);
    expect(t.turns[0]!.status).toBe("completed");
  });

  it("stops: cancelled tool block keeps its output and says why; the run shows a notice", () => {
    const t = live("run_2", cancelledRunLog());
    const turn = t.turns[0]!;
    expect(turn.status).toBe("cancelled");
    expect(turn.notice).toEqual({ kind: "cancelled", text: "cancelled by user" });
    const tool = turn.parts.find((p) => p.kind === "tool") as ToolPart;
    expect(tool.status).toBe("cancelled");
    expect(visibleOutput(tool)).toEqual({
      live: "ready\n",
      result: "Cancelled by the user before it finished. Any output so far was discarded.",
    });
  });

  it("marks a run as stopping at once; the terminal event settles it", () => {
    const log = cancelledRunLog();
    const t = live("run_2", log.slice(0, 6));
    markCancelling(t, "run_2");
    expect(t.turns[0]!.status).toBe("cancelling");
    applyEvents(t, log.slice(6));
    expect(t.turns[0]!.status).toBe("cancelled");
  });

  it("keeps the text of a message cut short by Stop, marked partial", () => {
    const log = makeLog("run_p", [
      ["run.started", {}],
      ["message.started", { message_id: "m" }],
      ["message.delta", { message_id: "m", text: "partial ans" }],
    ]);
    const t = live("run_p", log);
    markCancelling(t, "run_p");
    applyEvents(t, [
      { seq: 4, run_id: "run_p", type: "message.completed", ts: 0, v: 1, data: { message_id: "m", content: "partial ans", reasoning: null } },
      { seq: 5, run_id: "run_p", type: "run.cancelled", ts: 0, v: 1, data: { reason: "cancelled by user" } },
    ]);
    const part = t.turns[0]!.parts[0] as AssistantPart;
    expect(part).toMatchObject({ text: "partial ans", partial: true, streaming: false });
  });

  it("shows why a run failed", () => {
    const t = live(
      "run_f",
      makeLog("run_f", [
        ["run.started", {}],
        ["run.failed", { error: "the LLM answered 500", code: "llm_error" }],
      ]),
    );
    expect(t.turns[0]!.notice).toEqual({ kind: "failed", text: "the LLM answered 500" });
  });
});

describe("fromStored", () => {
  it("renders a finished run from its messages exactly as its events render it", () => {
    const stored = fromStored(completedRunMessages(), runs({ id: "run_1", status: "completed", error: null }));
    expect(visible(stored)).toEqual(visible(live("run_1", completedRunLog())));
  });

  it("renders a cancelled run from its messages as its events render it", () => {
    const args = '{"command": "echo ready; sleep 60"}';
    const messages: StoredMessage[] = [
      { id: "u", run_id: "run_2", role: "user", content: "say hi" },
      { id: "msg_c", run_id: "run_2", role: "assistant", content: null, tool_calls: [{ id: "call_2", type: "function", function: { name: "run_command", arguments: args } }] },
      { id: "t", run_id: "run_2", role: "tool", tool_call_id: "call_2", content: "Cancelled by the user before it finished. Any output so far was discarded." },
    ];
    const stored = fromStored(messages, runs({ id: "run_2", status: "cancelled", error: "cancelled by user" }));
    expect(visible(stored)).toEqual(visible(live("run_2", cancelledRunLog())));
  });

  it("leaves out the active run's messages except the user's, so replayed events do not double them", () => {
    const messages = [...completedRunMessages("run_0", "first"), ...completedRunMessages("run_1", "second")];
    // while run_1 is active the server has already stored some of its messages
    const partial = messages.slice(0, 7);
    const t = fromStored(partial, runs({ id: "run_0", status: "completed", error: null }), "run_1");
    expect(t.turns.map((turn) => [turn.runId, turn.userText, turn.parts.length])).toEqual([
      ["run_0", "first", 3],
      ["run_1", "second", 0],
    ]);
    attachRun(t, "run_1", "second", "running");
    applyEvents(t, completedRunLog("run_1"));
    const everything = fromStored(
      messages,
      runs({ id: "run_0", status: "completed", error: null }, { id: "run_1", status: "completed", error: null }),
    );
    expect(visible(t)).toEqual(visible(everything));
  });

  it("groups by run even when a late event of a stopped run arrives after the next run began", () => {
    const t = emptyTranscript();
    attachRun(t, "run_a", "first", "running");
    applyEvents(t, cancelledRunLog("run_a").slice(0, 6));
    attachRun(t, "run_b", "second", "queued");
    applyEvents(t, cancelledRunLog("run_a").slice(6)); // stop-and-send: the old run ends afterwards
    expect(t.turns.map((turn) => [turn.runId, turn.status])).toEqual([
      ["run_a", "cancelled"],
      ["run_b", "queued"],
    ]);
  });

  it("skips system messages and copes with messages without a run", () => {
    const t = fromStored(
      [
        { id: "s", run_id: null, role: "system", content: "be nice" },
        { id: "u", run_id: null, role: "user", content: "hello" },
        { id: "a", run_id: null, role: "assistant", content: "hi" },
      ],
      new Map(),
    );
    expect(t.turns).toHaveLength(1);
    expect(t.turns[0]!.userText).toBe("hello");
    expect((t.turns[0]!.parts[0] as AssistantPart).text).toBe("hi");
  });

  it("marks a stored partial answer", () => {
    const t = fromStored(
      [
        { id: "u", run_id: "r", role: "user", content: "go" },
        { id: "a", run_id: "r", role: "assistant", content: "half", meta: { partial: true } },
      ],
      runs({ id: "r", status: "cancelled", error: null }),
    );
    expect((t.turns[0]!.parts[0] as AssistantPart).partial).toBe(true);
    expect(t.turns[0]!.notice?.kind).toBe("cancelled");
  });
});

describe("storedToolStatus", () => {
  const msg = (content: string, meta?: StoredMessage["meta"]): StoredMessage => ({
    id: "t", run_id: "r", role: "tool", content, tool_call_id: "c", ...(meta ? { meta } : {}),
  });
  it.each([
    ["hi\n[exit code 0]", "ok"],
    ["boom\n[exit code 2]", "error"],
    ["(no output)\n[killed by SIGKILL]", "error"],
    ["x\n[timed out after 5 s; the command and everything it started were killed]", "error"],
    ["Cancelled by the user before it finished. Any output so far was discarded.", "cancelled"],
    ["Interrupted: the run was stopped (shutdown) before this tool call finished.", "interrupted"],
    ["Not completed: the run failed (x) before this tool call finished.", "error"],
    ["unknown tool 'nope'; the available tools are: a, b", "error"],
    ["file contents", "ok"],
  ])("%j → %s", (content, status) => {
    expect(storedToolStatus(msg(content))).toBe(status);
  });
  it("prefers the server's meta.status", () => {
    expect(storedToolStatus(msg("file contents", { status: "error" }))).toBe("error");
  });
});
