// The server's JSON shapes (docs/api.md, docs/events.md), as the UI reads them.

export type RunStatus =
  | "queued"
  | "running"
  | "cancelling"
  | "completed"
  | "cancelled"
  | "failed"
  | "interrupted";

export const ACTIVE_STATUSES: ReadonlySet<RunStatus> = new Set(["queued", "running", "cancelling"]);
export const TERMINAL_EVENTS: ReadonlySet<string> = new Set([
  "run.completed",
  "run.cancelled",
  "run.failed",
  "run.interrupted",
]);

export interface Run {
  id: string;
  conversation_id: string;
  status: RunStatus;
  input: string;
  model: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  last_seq: number;
  error: string | null;
  usage: Record<string, unknown> | null;
}

export interface Conversation {
  id: string;
  title: string;
  created_at: string;
  updated_at: string;
}

export interface OpenAIToolCall {
  id: string;
  type?: string;
  function: { name: string; arguments: string };
}

export interface StoredMessage {
  id: string | null;
  run_id: string | null;
  role: "system" | "user" | "assistant" | "tool";
  content: string | null;
  tool_calls?: OpenAIToolCall[];
  tool_call_id?: string;
  reasoning?: string;
  meta?: { partial?: boolean; status?: string; [key: string]: unknown };
}

export interface ConversationDetail extends Conversation {
  messages: StoredMessage[];
  active_run: Run | null;
}

/** One entry of a run's log: `{seq, run_id, type, ts, data, v}`. */
export interface RunEvent {
  seq: number;
  run_id: string;
  type: string;
  ts: number;
  data: Record<string, unknown>;
  v: number;
}

export interface Me {
  id: string;
  name: string;
  is_admin?: boolean;
  csrf_token?: string;
  sandbox?: string;
  sandbox_warning?: string | null;
}

export interface ModelList {
  models: { name: string }[];
  default: string | null;
}

export interface ApiToken {
  id: string;
  name?: string;
  created_at?: string;
  last_used_at?: string | null;
  token?: string; // only in the answer to POST, once
}

export interface FileEntry {
  name: string;
  path: string;
  type: "file" | "dir";
  size: number | null;
  modified: string | null;
}
