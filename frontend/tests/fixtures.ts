// A run's log and its stored messages, shaped exactly as the server writes them (engine/loop.py,
// engine/finish.py), for the reducer tests.
import type { Run, RunEvent, RunStatus, StoredMessage } from "../src/api/types";

export function makeLog(runId: string, items: [string, Record<string, unknown>][]): RunEvent[] {
  return items.map(([type, data], i) => ({ seq: i + 1, run_id: runId, type, ts: 1_790_000_000 + i, data, v: 1 }));
}

const ARGS = '{"command": "echo hi; sleep 1"}';

/** message with a tool call → command output → second message → completed. */
export function completedRunLog(runId = "run_1"): RunEvent[] {
  return makeLog(runId, [
    ["run.started", {}],
    ["message.started", { message_id: "msg_a" }],
    ["reasoning.delta", { message_id: "msg_a", text: "Let me " }],
    ["reasoning.delta", { message_id: "msg_a", text: "think." }],
    ["message.delta", { message_id: "msg_a", text: "I will " }],
    ["message.delta", { message_id: "msg_a", text: "run it." }],
    ["tool.call.delta", { call_id: "call_1", name: "run_command", arguments_delta: '{"command": ' }],
    ["tool.call.delta", { call_id: "call_1", name: "run_command", arguments_delta: '"echo hi; sleep 1"}' }],
    [
      "message.completed",
      {
        message_id: "msg_a",
        content: "I will run it.",
        reasoning: "Let me think.",
        tool_calls: [{ id: "call_1", type: "function", function: { name: "run_command", arguments: ARGS } }],
      },
    ],
    ["tool.started", { call_id: "call_1", name: "run_command", arguments: ARGS }],
    ["tool.output", { call_id: "call_1", stream: "stdout", text: "h" }],
    ["tool.output", { call_id: "call_1", stream: "stdout", text: "i\n" }],
    ["tool.completed", { call_id: "call_1", status: "ok", content: "hi\n[exit code 0]" }],
    ["message.started", { message_id: "msg_b" }],
    ["message.delta", { message_id: "msg_b", text: "It printed " }],
    ["message.delta", { message_id: "msg_b", text: "hi." }],
    ["message.completed", { message_id: "msg_b", content: "It printed hi.", tool_calls: null, reasoning: null }],
    ["run.completed", { usage: null }],
  ]);
}

export function completedRunMessages(runId = "run_1", userText = "say hi"): StoredMessage[] {
  return [
    { id: `msg_u_${runId}`, run_id: runId, role: "user", content: userText },
    {
      id: "msg_a",
      run_id: runId,
      role: "assistant",
      content: "I will run it.",
      reasoning: "Let me think.",
      tool_calls: [{ id: "call_1", type: "function", function: { name: "run_command", arguments: ARGS } }],
    },
    { id: "msg_t1", run_id: runId, role: "tool", content: "hi\n[exit code 0]", tool_call_id: "call_1" },
    { id: "msg_b", run_id: runId, role: "assistant", content: "It printed hi." },
  ];
}

/** Stopped inside a command: the tool call answered "cancelled", then run.cancelled. */
export function cancelledRunLog(runId = "run_2"): RunEvent[] {
  const args = '{"command": "echo ready; sleep 60"}';
  return makeLog(runId, [
    ["run.started", {}],
    ["message.started", { message_id: "msg_c" }],
    ["tool.call.delta", { call_id: "call_2", name: "run_command", arguments_delta: args }],
    [
      "message.completed",
      { message_id: "msg_c", content: "", tool_calls: [{ id: "call_2", type: "function", function: { name: "run_command", arguments: args } }] },
    ],
    ["tool.started", { call_id: "call_2", name: "run_command", arguments: args }],
    ["tool.output", { call_id: "call_2", stream: "stdout", text: "ready\n" }],
    [
      "tool.completed",
      { call_id: "call_2", status: "cancelled", content: "Cancelled by the user before it finished. Any output so far was discarded." },
    ],
    ["run.cancelled", { reason: "cancelled by user" }],
  ]);
}

/** A run as GET /api/runs/{id} answers (and the activity feed sends it). */
export function makeRun(id: string, status: RunStatus, conversationId = "conv_1"): Run {
  return {
    id,
    conversation_id: conversationId,
    status,
    input: "say hi",
    model: null,
    created_at: "2026-01-01T00:00:00Z",
    started_at: null,
    finished_at: null,
    last_seq: 0,
    error: null,
    usage: null,
  };
}
