// The conversation list (newest first), its live badges, rename and delete — and the cheap periodic
// check that notices runs started elsewhere (another browser or device). Tabs of this browser are
// told at once over the tab channel; the check is the fallback.

import { defineStore } from "pinia";
import { computed, ref } from "vue";
import { ApiError, http, query } from "../api/http";
import type { Conversation, Run } from "../api/types";
import { ACTIVE_STATUSES } from "../api/types";
import { onTabMessage, postToTabs } from "../core/tabs";

export const CHECK_INTERVAL_MS = 4000;

export const useConversationsStore = defineStore("conversations", () => {
  const items = ref<Conversation[]>([]);
  const loaded = ref(false);
  /** conversation id → id of its active run */
  const activeRuns = ref<Record<string, string>>({});
  const reachable = ref(true);
  /** Runs seen by the last check, newest first (the runs store compares them with its transcript). */
  const recentRuns = ref<Run[]>([]);
  const listeners = new Set<(runs: Run[]) => void>();
  const seenRuns = new Set<string>();

  const sorted = computed(() =>
    [...items.value].sort((a, b) => (a.updated_at < b.updated_at ? 1 : a.updated_at > b.updated_at ? -1 : 0)),
  );

  async function load(): Promise<void> {
    const answer = await http.get<{ conversations: Conversation[] }>("/api/conversations");
    items.value = answer.conversations;
    loaded.value = true;
  }

  function byId(id: string): Conversation | undefined {
    return items.value.find((c) => c.id === id);
  }

  async function create(title?: string): Promise<Conversation> {
    const conv = await http.post<Conversation>("/api/conversations", title ? { title } : {});
    items.value = [conv, ...items.value.filter((c) => c.id !== conv.id)];
    postToTabs({ kind: "conversations-changed" });
    return conv;
  }

  async function rename(id: string, title: string): Promise<void> {
    const conv = await http.patch<Conversation>(`/api/conversations/${encodeURIComponent(id)}`, { title });
    items.value = items.value.map((c) => (c.id === id ? { ...c, ...conv } : c));
    postToTabs({ kind: "conversations-changed" });
  }

  async function remove(id: string): Promise<void> {
    await http.delete(`/api/conversations/${encodeURIComponent(id)}`);
    items.value = items.value.filter((c) => c.id !== id);
    postToTabs({ kind: "conversations-changed" });
  }

  function touch(id: string): void {
    const now = new Date().toISOString();
    items.value = items.value.map((c) => (c.id === id ? { ...c, updated_at: now } : c));
  }

  function markActive(conversationId: string, runId: string): void {
    activeRuns.value = { ...activeRuns.value, [conversationId]: runId };
  }

  function markEnded(conversationId: string, runId: string): void {
    if (activeRuns.value[conversationId] !== runId) return;
    const next = { ...activeRuns.value };
    delete next[conversationId];
    activeRuns.value = next;
  }

  /** One check: the active runs (badges) and the most recent runs (to notice new ones). */
  async function check(): Promise<void> {
    try {
      const [active, recent] = await Promise.all([
        http.get<{ runs: Run[] }>(`/api/runs${query({ active: true, limit: 200 })}`),
        http.get<{ runs: Run[] }>(`/api/runs${query({ limit: 10 })}`),
      ]);
      const next: Record<string, string> = {};
      for (const run of active.runs) {
        if (ACTIVE_STATUSES.has(run.status) && !(run.conversation_id in next)) next[run.conversation_id] = run.id;
      }
      activeRuns.value = next;
      recentRuns.value = recent.runs;
      reachable.value = true;
      // a run we have not seen yet moved its conversation to the top (or created it elsewhere)
      const fresh = [...active.runs, ...recent.runs].filter((r) => !seenRuns.has(r.id));
      for (const run of fresh) seenRuns.add(run.id);
      if (fresh.length > 0 && firstCheckDone) await load();
      firstCheckDone = true;
      for (const listener of listeners) listener(recent.runs);
    } catch (exc) {
      if (exc instanceof ApiError && exc.status !== 0) return;
      reachable.value = false;
    }
  }

  let firstCheckDone = false;

  function onCheck(listener: (runs: Run[]) => void): () => void {
    listeners.add(listener);
    return () => listeners.delete(listener);
  }

  let timer: ReturnType<typeof setInterval> | null = null;
  let listening = false;
  function startWatching(): void {
    if (timer !== null) return;
    void check();
    timer = setInterval(() => {
      if (document.visibilityState === "visible") void check();
    }, CHECK_INTERVAL_MS);
    if (listening) return;
    listening = true;
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && timer !== null) void check();
    });
    onTabMessage((message) => {
      if (message.kind === "conversations-changed") void load();
      else if (message.kind === "run-started") {
        markActive(message.conversationId, message.runId);
        touch(message.conversationId);
        if (!byId(message.conversationId)) void load();
      } else if (message.kind === "run-ended") {
        markEnded(message.conversationId, message.runId);
      }
    });
  }

  function stopWatching(): void {
    if (timer !== null) clearInterval(timer);
    timer = null;
  }

  return {
    items,
    sorted,
    loaded,
    activeRuns,
    recentRuns,
    reachable,
    load,
    byId,
    create,
    rename,
    remove,
    touch,
    markActive,
    markEnded,
    check,
    onCheck,
    startWatching,
    stopWatching,
  };
});
