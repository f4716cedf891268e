// The open conversation's transcript and the live runs in it: loading (stored messages, then the
// active run's events after them), following runs over SSE, sending, stopping, and noticing runs
// that another tab or device started (the tab channel, the activity feed and its check). Every
// event goes through the transcript reducer.

import { defineStore } from "pinia";
import { computed, reactive, ref } from "vue";
import { ApiError, http, query } from "../api/http";
import { RunStream, type StreamInfo, type StreamState } from "../api/sse";
import type { ConversationDetail, Run, RunEvent, RunStatus } from "../api/types";
import { TERMINAL_EVENTS } from "../api/types";
import { onTabMessage, postToTabs } from "../core/tabs";
import {
  applyEvents,
  attachRun,
  emptyTranscript,
  findTurn,
  fromStored,
  isActive,
  markCancelling,
  type RunSummary,
  type Transcript,
} from "../core/transcript";
import { useConversationsStore } from "./conversations";
import { usePreferencesStore } from "./preferences";

export type LoadState = "idle" | "loading" | "ready" | "missing" | "error";

export interface Connection {
  state: StreamState | "idle";
  attempt: number;
  retryInMs: number | null;
}

export const useRunsStore = defineStore("runs", () => {
  const conversations = useConversationsStore();
  const preferences = usePreferencesStore();

  const conversationId = ref<string | null>(null);
  const loadState = ref<LoadState>("idle");
  const loadError = ref<string | null>(null);
  const transcript = reactive<Transcript>(emptyTranscript());
  const streamStates = ref<Record<string, Connection>>({});
  /** A short sentence for screen readers when a run ends (aria-live). */
  const announcement = ref("");
  const streams = new Map<string, RunStream>();
  let generation = 0;
  /** Runs being started by send() (POST in flight), and the unknown runs noticed meanwhile. */
  let starting = 0;
  const deferred: Run[] = [];
  /** Runs of the conversation noticed while it loads: the answer may predate them (see open()). */
  const noticedWhileLoading: Run[] = [];

  const activeTurn = computed(() => [...transcript.turns].reverse().find((t) => isActive(t)) ?? null);
  const busy = computed(() => activeTurn.value !== null);
  const stopping = computed(() => activeTurn.value?.status === "cancelling");
  const connection = computed<Connection>(() => {
    const turn = activeTurn.value;
    const state = turn?.runId ? streamStates.value[turn.runId] : undefined;
    return state ?? { state: "idle", attempt: 0, retryInMs: null };
  });

  function closeStreams(): void {
    for (const stream of streams.values()) stream.close();
    streams.clear();
    streamStates.value = {};
  }

  async function runSummaries(cid: string): Promise<Map<string, RunSummary>> {
    // `conversation_id` narrows the list on servers that support it; the filter below makes it exact.
    const map = new Map<string, RunSummary>();
    try {
      const answer = await http.get<{ runs: Run[] }>(`/api/runs${query({ conversation_id: cid, limit: 1000 })}`);
      for (const run of answer.runs) {
        if (run.conversation_id === cid) map.set(run.id, { id: run.id, status: run.status, error: run.error });
      }
    } catch {
      // without statuses finished runs simply show no "stopped"/"failed" line
    }
    return map;
  }

  /** Load a conversation: stored messages for finished runs, the active run from its events. */
  async function open(cid: string): Promise<void> {
    const gen = ++generation;
    const switching = conversationId.value !== cid;
    conversationId.value = cid;
    if (switching) {
      closeStreams();
      transcript.turns = [];
      noticedWhileLoading.length = 0;
      loadState.value = "loading";
    }
    let detail: ConversationDetail;
    let runs: Map<string, RunSummary>;
    try {
      [detail, runs] = await Promise.all([
        http.get<ConversationDetail>(`/api/conversations/${encodeURIComponent(cid)}`),
        runSummaries(cid),
      ]);
    } catch (exc) {
      if (gen !== generation) return;
      if (exc instanceof ApiError && exc.status === 404) loadState.value = "missing";
      else {
        loadState.value = "error";
        loadError.value = exc instanceof Error ? exc.message : String(exc);
      }
      return;
    }
    if (gen !== generation) return;
    closeStreams();
    const active = detail.active_run;
    transcript.turns = fromStored(detail.messages, runs, active?.id ?? null).turns;
    loadState.value = "ready";
    if (active) {
      conversations.markActive(cid, active.id);
      follow(active.id, active.input, active.status);
    }
    // the answer may have been read before the runs noticed meanwhile: look for them now
    noticeRuns(noticedWhileLoading.splice(0));
  }

  function close(): void {
    generation++;
    closeStreams();
    conversationId.value = null;
    transcript.turns = [];
    noticedWhileLoading.length = 0;
    loadState.value = "idle";
  }

  function setStreamState(runId: string, state: StreamState, info: StreamInfo): void {
    streamStates.value = {
      ...streamStates.value,
      [runId]: { state, attempt: info.attempt, retryInMs: info.retryInMs },
    };
  }

  function follow(runId: string, userText: string | null, status: RunStatus | null): void {
    if (streams.has(runId)) return;
    const cid = conversationId.value;
    attachRun(transcript, runId, userText, status);
    const stream = new RunStream({
      runId,
      lastApplied: () => findTurn(transcript, runId)?.lastSeq ?? 0,
      onEvents: (events: RunEvent[]) => {
        if (streams.get(runId) !== stream) return;
        if (applyEvents(transcript, events) === "gap") {
          stream.reconnect();
          return;
        }
        if (events.some((e) => TERMINAL_EVENTS.has(e.type))) ended(cid, runId);
      },
      onState: (state, info) => {
        if (streams.get(runId) !== stream) return;
        setStreamState(runId, state, info);
        const turn = findTurn(transcript, runId);
        // the stream ended but the view did not see the end (it refused a gap): load it again
        if (state === "ended" && turn && isActive(turn) && cid) void open(cid);
      },
      onFatal: () => {
        if (streams.get(runId) === stream && cid) void open(cid);
      },
    });
    streams.set(runId, stream);
    stream.start();
  }

  function ended(cid: string | null, runId: string): void {
    streams.get(runId)?.close();
    streams.delete(runId);
    const turn = findTurn(transcript, runId);
    const said = turn?.status === "completed" ? "chat.answerDone" : "chat.runStopped";
    announcement.value = ""; // a live region repeats a sentence only if it changes
    setTimeout(() => {
      announcement.value = said;
    }, 50);
    if (cid) {
      conversations.markEnded(cid, runId);
      postToTabs({ kind: "run-ended", conversationId: cid, runId });
      void conversations.load().catch(() => undefined);
    }
  }

  async function send(text: string, options: { interrupt?: boolean } = {}): Promise<void> {
    const cid = conversationId.value;
    if (!cid) return;
    const body = {
      input: text,
      model: preferences.modelForRun(),
      if_busy: options.interrupt ? "interrupt" : "reject",
    };
    const running = activeTurn.value?.runId;
    if (options.interrupt && running) markCancelling(transcript, running);
    starting += 1;
    try {
      let run: Run;
      try {
        run = await http.post<Run>(`/api/conversations/${encodeURIComponent(cid)}/runs`, body);
      } catch (exc) {
        if (exc instanceof ApiError && exc.code === "conversation_busy") void open(cid);
        throw exc;
      }
      if (conversationId.value !== cid) return;
      follow(run.id, text, run.status);
      conversations.markActive(cid, run.id);
      conversations.touch(cid);
      postToTabs({ kind: "run-started", conversationId: cid, runId: run.id });
    } finally {
      starting -= 1;
      if (starting === 0) noticeRuns(deferred.splice(0));
    }
  }

  async function stop(): Promise<void> {
    const runId = activeTurn.value?.runId;
    if (!runId) return;
    markCancelling(transcript, runId); // the button reacts now; run.cancelled settles it
    try {
      await http.post<Run>(`/api/runs/${encodeURIComponent(runId)}/cancel`);
    } catch (exc) {
      // the run ended on its own in the meantime, or the network is down: the stream will tell
      if (!(exc instanceof ApiError)) throw exc;
    }
  }

  /**
   * A run in this conversation that the transcript does not know: load the conversation again.
   * While the conversation loads, its runs are kept for open() to pass here once it is ready.
   */
  function noticeRuns(runs: readonly Run[]): void {
    const cid = conversationId.value;
    if (!cid) return;
    if (loadState.value === "loading") noticedWhileLoading.push(...runs.filter((r) => r.conversation_id === cid));
    if (loadState.value !== "ready") return;
    const unknown = runs.filter((r) => r.conversation_id === cid && !findTurn(transcript, r.id));
    if (unknown.length === 0) return;
    // the server tells of a run this tab is starting before the POST answers: wait for the answer
    if (starting > 0) deferred.push(...unknown);
    else void open(cid);
  }

  let watching = false;
  function startWatching(): void {
    if (watching) return;
    watching = true;
    conversations.onRuns(noticeRuns);
    onTabMessage((message) => {
      const cid = conversationId.value;
      if (message.kind === "run-started" && message.conversationId === cid && !findTurn(transcript, message.runId)) {
        void open(cid);
      }
    });
  }

  return {
    conversationId,
    loadState,
    loadError,
    transcript,
    activeTurn,
    busy,
    stopping,
    connection,
    announcement,
    open,
    close,
    send,
    stop,
    startWatching,
  };
});
