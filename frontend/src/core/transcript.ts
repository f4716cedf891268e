// The one place that turns what the server says into what the chat shows.
//
// A transcript is a list of turns, one per run (the user's message and everything the agent did in
// reply). Finished runs are built from the conversation's stored messages; the active run is built
// from its event log, replayed from seq 0 and then followed live, through the same `applyEvent`
// whether an event is old or new. Each turn remembers the last seq it applied and drops anything at
// or below it, so a reconnect, a replay after a refresh or a second reader can never double a word.
//
// Functions here mutate the transcript they are given (Vue's reactive proxy or a plain object) and
// do nothing else: no I/O, no Vue, no DOM — so they are unit-tested directly.

import type { OpenAIToolCall, RunEvent, RunStatus, StoredMessage } from "../api/types";

export type ToolStatus = "writing" | "running" | "ok" | "error" | "cancelled" | "interrupted";

export interface OutputChunk {
  stream: string;
  text: string;
}

export interface AssistantPart {
  kind: "assistant";
  key: string; // the message id
  text: string;
  reasoning: string;
  /** The answer is still being written. */
  streaming: boolean;
  /** Reasoning is still being written (no answer text yet). */
  reasoningStreaming: boolean;
  /** Kept as it was when the run stopped. */
  partial: boolean;
}

export interface ToolPart {
  kind: "tool";
  key: string; // the tool call id
  name: string;
  arguments: string;
  status: ToolStatus;
  /** Live output as it streamed (only known to a reader of the event log). */
  output: OutputChunk[];
  /** What the model was given as the result (the stored tool message). */
  result: string | null;
}

export type Part = AssistantPart | ToolPart;

export type NoticeKind = "cancelled" | "failed" | "interrupted";

export interface Notice {
  kind: NoticeKind;
  text: string;
}

export interface Turn {
  key: string;
  runId: string | null;
  userText: string | null;
  parts: Part[];
  status: RunStatus | null;
  notice: Notice | null;
  /** The last event seq applied to this turn (0: none; stored turns are not event-driven). */
  lastSeq: number;
  /** Built from the run's event log (live or replayed) rather than from stored messages. */
  fromEvents: boolean;
}

export interface Transcript {
  turns: Turn[];
}

/** What a run list tells about a finished run, to show how it ended. */
export interface RunSummary {
  id: string;
  status: RunStatus;
  error: string | null;
}

export type ApplyResult = "applied" | "duplicate" | "gap";

export function emptyTranscript(): Transcript {
  return { turns: [] };
}

export function findTurn(transcript: Transcript, runId: string): Turn | undefined {
  return transcript.turns.find((t) => t.runId === runId);
}

function newTurn(key: string, runId: string | null, userText: string | null): Turn {
  return { key, runId, userText, parts: [], status: null, notice: null, lastSeq: 0, fromEvents: false };
}

function assistantPart(key: string): AssistantPart {
  return { kind: "assistant", key, text: "", reasoning: "", streaming: false, reasoningStreaming: false, partial: false };
}

function toolPart(key: string, name: string, args: string): ToolPart {
  return { kind: "tool", key, name, arguments: args, status: "writing", output: [], result: null };
}

function findPart<K extends Part["kind"]>(turn: Turn, kind: K, key: string): Extract<Part, { kind: K }> | undefined {
  return turn.parts.find((p) => p.kind === kind && p.key === key) as Extract<Part, { kind: K }> | undefined;
}

function ensureTool(turn: Turn, key: string, name: string, args: string): ToolPart {
  const existing = findPart(turn, "tool", key);
  if (existing) return existing;
  turn.parts.push(toolPart(key, name, args));
  return turn.parts[turn.parts.length - 1] as ToolPart;
}

function ensureAssistant(turn: Turn, key: string): AssistantPart {
  const existing = findPart(turn, "assistant", key);
  if (existing) return existing;
  turn.parts.push(assistantPart(key));
  return turn.parts[turn.parts.length - 1] as AssistantPart;
}

// ---------------------------------------------------------------------------------------------
// Stored messages

const CANCELLED_PREFIX = "Cancelled by the user";
const INTERRUPTED_PREFIX = "Interrupted:";
const NOT_COMPLETED_PREFIX = "Not completed:";

/**
 * The status of a stored tool result. The server's `meta.status` when it sends one; otherwise read
 * from the text the engine writes (exit lines of run_command, the sentences of an ended run).
 */
export function storedToolStatus(message: StoredMessage): ToolStatus {
  const given = message.meta?.status;
  if (given === "ok" || given === "error" || given === "cancelled" || given === "interrupted") return given;
  const content = message.content ?? "";
  if (content.startsWith(CANCELLED_PREFIX)) return "cancelled";
  if (content.startsWith(INTERRUPTED_PREFIX)) return "interrupted";
  if (content.startsWith(NOT_COMPLETED_PREFIX)) return "error";
  const tail = content.trimEnd().split("\n").pop() ?? "";
  if (/^\[exit code 0\]$/.test(tail)) return "ok";
  if (/^\[(exit code -?\d+|killed by [^\]]+|timed out[^\]]*)\]$/.test(tail)) return "error";
  if (/^(unknown tool |invalid arguments for |internal error in tool )/.test(content)) return "error";
  return "ok";
}

export function noticeFor(status: RunStatus | null, detail: string | null): Notice | null {
  if (status === "cancelled") return { kind: "cancelled", text: detail ?? "" };
  if (status === "failed") return { kind: "failed", text: detail ?? "" };
  if (status === "interrupted") return { kind: "interrupted", text: detail ?? "" };
  return null;
}

function addToolCalls(turn: Turn, calls: readonly OpenAIToolCall[] | undefined): void {
  for (const call of calls ?? []) {
    const part = ensureTool(turn, call.id, call.function.name, call.function.arguments);
    part.name = call.function.name;
    part.arguments = call.function.arguments;
  }
}

/**
 * Turns from stored messages. Messages of `skipRunId` (the active run) are left out except the
 * user's message, because that run is rendered from its events.
 */
export function fromStored(
  messages: readonly StoredMessage[],
  runs: ReadonlyMap<string, RunSummary>,
  skipRunId: string | null = null,
): Transcript {
  const transcript = emptyTranscript();
  let current: Turn | null = null;
  const turnFor = (message: StoredMessage): Turn => {
    const runId = message.run_id;
    if (current && (runId === null || current.runId === runId)) return current;
    const found = runId ? findTurn(transcript, runId) : undefined;
    if (found) return found;
    current = newTurn(runId ?? `msg:${message.id ?? transcript.turns.length}`, runId, null);
    transcript.turns.push(current);
    return current;
  };
  for (const message of messages) {
    if (message.role === "system") continue;
    if (message.role === "user") {
      current = newTurn(message.run_id ?? `msg:${message.id ?? transcript.turns.length}`, message.run_id, message.content ?? "");
      transcript.turns.push(current);
      continue;
    }
    if (skipRunId !== null && message.run_id === skipRunId) continue;
    const turn = turnFor(message);
    if (message.role === "assistant") {
      const part = ensureAssistant(turn, message.id ?? `a:${turn.parts.length}`);
      part.text = message.content ?? "";
      part.reasoning = message.reasoning ?? "";
      part.partial = message.meta?.partial === true;
      addToolCalls(turn, message.tool_calls);
    } else if (message.role === "tool" && message.tool_call_id) {
      const part = ensureTool(turn, message.tool_call_id, "", "");
      part.result = message.content ?? "";
      part.status = storedToolStatus(message);
    }
  }
  for (const turn of transcript.turns) {
    if (turn.runId === null || turn.runId === skipRunId) continue;
    const run = runs.get(turn.runId);
    if (!run) continue;
    turn.status = run.status;
    turn.notice = noticeFor(run.status, run.error);
    for (const part of turn.parts) {
      // a call without a result in a finished run: it ended with the run
      if (part.kind === "tool" && (part.status === "writing" || part.status === "running")) {
        part.status = run.status === "cancelled" ? "cancelled" : "interrupted";
      }
    }
  }
  return transcript;
}

// ---------------------------------------------------------------------------------------------
// Events

/** Make `runId` an event-driven turn (created at the end if the transcript has none for it). */
export function attachRun(transcript: Transcript, runId: string, userText: string | null, status: RunStatus | null): Turn {
  let turn = findTurn(transcript, runId);
  if (!turn) {
    transcript.turns.push(newTurn(runId, runId, userText));
    turn = transcript.turns[transcript.turns.length - 1] as Turn;
  }
  if (!turn.fromEvents) {
    turn.fromEvents = true;
    turn.parts = [];
    turn.notice = null;
    turn.lastSeq = 0;
  }
  if (turn.userText === null) turn.userText = userText;
  if (status && turn.lastSeq === 0) turn.status = status;
  return turn;
}

function str(data: Record<string, unknown>, key: string): string {
  const value = data[key];
  return typeof value === "string" ? value : "";
}

function finishStreaming(turn: Turn): void {
  for (const part of turn.parts) {
    if (part.kind === "assistant") {
      part.streaming = false;
      part.reasoningStreaming = false;
    }
  }
}

/**
 * Apply one event. Events at or below the turn's last seq are duplicates and change nothing; an
 * event past the next seq is a gap (the caller resumes from `lastSeq`) and changes nothing either.
 */
export function applyEvent(transcript: Transcript, event: RunEvent): ApplyResult {
  const turn = findTurn(transcript, event.run_id) ?? attachRun(transcript, event.run_id, null, null);
  if (!turn.fromEvents) attachRun(transcript, event.run_id, null, null);
  if (event.seq <= turn.lastSeq) return "duplicate";
  if (event.seq !== turn.lastSeq + 1) return "gap";
  turn.lastSeq = event.seq;
  const data = event.data ?? {};
  switch (event.type) {
    case "run.started":
      turn.status = "running";
      break;
    case "message.started": {
      const part = ensureAssistant(turn, str(data, "message_id"));
      part.streaming = true;
      break;
    }
    case "reasoning.delta": {
      const part = ensureAssistant(turn, str(data, "message_id"));
      part.reasoning += str(data, "text");
      part.reasoningStreaming = true;
      break;
    }
    case "message.delta": {
      const part = ensureAssistant(turn, str(data, "message_id"));
      part.text += str(data, "text");
      part.reasoningStreaming = false;
      break;
    }
    case "message.completed": {
      const part = ensureAssistant(turn, str(data, "message_id"));
      part.text = str(data, "content");
      const reasoning = data.reasoning;
      if (typeof reasoning === "string") part.reasoning = reasoning;
      part.streaming = false;
      part.reasoningStreaming = false;
      if (turn.status && ["cancelling", "cancelled", "failed", "interrupted"].includes(turn.status)) part.partial = true;
      addToolCalls(turn, Array.isArray(data.tool_calls) ? (data.tool_calls as OpenAIToolCall[]) : undefined);
      break;
    }
    case "tool.call.delta": {
      const part = ensureTool(turn, str(data, "call_id"), str(data, "name"), "");
      if (!part.name) part.name = str(data, "name");
      if (part.status === "writing") part.arguments += str(data, "arguments_delta");
      break;
    }
    case "tool.started": {
      const part = ensureTool(turn, str(data, "call_id"), str(data, "name"), str(data, "arguments"));
      part.name = str(data, "name") || part.name;
      part.arguments = str(data, "arguments");
      part.status = "running";
      break;
    }
    case "tool.output": {
      const part = ensureTool(turn, str(data, "call_id"), "", "");
      const stream = str(data, "stream");
      const last = part.output[part.output.length - 1];
      if (last && last.stream === stream) last.text += str(data, "text");
      else part.output.push({ stream, text: str(data, "text") });
      break;
    }
    case "tool.completed": {
      const part = ensureTool(turn, str(data, "call_id"), "", "");
      const status = str(data, "status");
      part.status = status === "ok" || status === "error" || status === "cancelled" || status === "interrupted" ? status : "error";
      part.result = str(data, "content");
      break;
    }
    case "run.completed":
      turn.status = "completed";
      finishStreaming(turn);
      break;
    case "run.cancelled":
      turn.status = "cancelled";
      turn.notice = noticeFor("cancelled", str(data, "reason") || null);
      finishStreaming(turn);
      break;
    case "run.failed":
      turn.status = "failed";
      turn.notice = noticeFor("failed", str(data, "error") || null);
      finishStreaming(turn);
      break;
    case "run.interrupted":
      turn.status = "interrupted";
      turn.notice = noticeFor("interrupted", str(data, "reason") || null);
      finishStreaming(turn);
      break;
    default:
      break; // unknown types are ignored, but their seq still counts
  }
  return "applied";
}

/** Apply a batch in order; stops at a gap and reports it. */
export function applyEvents(transcript: Transcript, events: readonly RunEvent[]): ApplyResult {
  for (const event of events) {
    if (applyEvent(transcript, event) === "gap") return "gap";
  }
  return "applied";
}

export function isActive(turn: Turn): boolean {
  return turn.status === "queued" || turn.status === "running" || turn.status === "cancelling";
}

/** Mark the turn as stopping at once (the terminal event settles it). */
export function markCancelling(transcript: Transcript, runId: string): void {
  const turn = findTurn(transcript, runId);
  if (turn && isActive(turn)) turn.status = "cancelling";
}

/** What the tool block shows as output: the live stream while it runs; the result once done,
 *  except for a call that was stopped, whose result is only a sentence: then both. */
export function visibleOutput(part: ToolPart): { live: string; result: string | null } {
  const live = part.output.map((c) => c.text).join("");
  if (part.status === "writing" || part.status === "running") return { live, result: null };
  if (part.status === "cancelled" || part.status === "interrupted") return { live, result: part.result };
  return { live: "", result: part.result ?? live };
}
