// The conversation list (newest first), its live badges, rename and delete — and how runs started
// elsewhere (another browser or device, the CLI, the API) are noticed: the server pushes every change
// of the user's runs over the activity feed, and each (re)connect of the feed re-reads the state with
// one check, since what happened while it was down is not replayed. While the feed is not live (it
// reconnects, or an older server has none) the check runs every few seconds instead. Tabs of this
// browser are told at once over the tab channel.

import { defineStore } from "pinia";
import { computed, ref } from "vue";
import { ActivityStream } from "../api/activity";
import { ApiError, http, query } from "../api/http";
import type { StreamState } from "../api/sse";
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
  /** The activity feed's state; "unavailable" when the server refused it (the check is all there is). */
  const feedState = ref<StreamState | "unavailable" | "off">("off");
  const listeners = new Set<(runs: Run[]) => void>();
  const seenRuns = new Set<string>();
  /** Notices that came while a check was in flight (one list per check): its answer may predate them. */
  const noticesDuringCheck = new Set<Run[]>();

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

  function showStatus(run: Run): void {
    if (ACTIVE_STATUSES.has(run.status)) markActive(run.conversation_id, run.id);
    else markEnded(run.conversation_id, run.id);
  }

  /** One check: the active runs (badges) and the most recent runs (to notice new ones). */
  async function check(): Promise<void> {
    const notices: Run[] = [];
    noticesDuringCheck.add(notices);
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
      for (const run of notices) showStatus(run);
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
    } finally {
      noticesDuringCheck.delete(notices);
    }
  }

  /** One run changed (a notice of the activity feed). */
  function notice(run: Run): void {
    for (const notices of noticesDuringCheck) notices.push(run);
    showStatus(run);
    if (!seenRuns.has(run.id)) {
      // a new run moves its conversation to the top, or brings one created elsewhere
      seenRuns.add(run.id);
      touch(run.conversation_id);
      if (!byId(run.conversation_id)) void load().catch(() => undefined);
    }
    for (const listener of listeners) listener([run]);
  }

  let firstCheckDone = false;

  /** Runs that a check or a notice saw (the runs store looks for ones its transcript lacks). */
  function onRuns(listener: (runs: Run[]) => void): () => void {
    listeners.add(listener);
    return () => listeners.delete(listener);
  }

  let timer: ReturnType<typeof setInterval> | null = null;
  let feed: ActivityStream | null = null;
  let listening = false;

  function openFeed(): void {
    if (feed || feedState.value === "unavailable") return;
    const stream: ActivityStream = new ActivityStream({
      onOpen: () => {
        if (feed === stream) void check();
      },
      onRun: (run) => {
        if (feed === stream) notice(run);
      },
      onState: (state) => {
        if (feed === stream) feedState.value = state;
      },
      onUnavailable: () => {
        if (feed !== stream) return;
        feed = null;
        feedState.value = "unavailable";
        // an older server: the check is all there is; the session ended: its 401 signs out
        void check();
      },
    });
    feed = stream;
    stream.start();
  }

  function closeFeed(): void {
    feed?.close();
    feed = null;
    if (feedState.value !== "unavailable") feedState.value = "off";
  }

  function startWatching(): void {
    if (timer !== null) return;
    feedState.value = "off";
    if (document.visibilityState === "visible") openFeed();
    else void check();
    timer = setInterval(() => {
      if (document.visibilityState === "visible" && feedState.value !== "live") void check();
    }, CHECK_INTERVAL_MS);
    if (listening) return;
    listening = true;
    // a hidden tab lets its feed go (browsers allow few connections per server); the feed's open
    // catches up when the tab is back
    document.addEventListener("visibilitychange", () => {
      if (timer === null) return;
      if (document.visibilityState !== "visible") closeFeed();
      else if (feedState.value === "unavailable") void check();
      else openFeed();
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
    closeFeed();
  }

  return {
    items,
    sorted,
    loaded,
    activeRuns,
    recentRuns,
    reachable,
    feedState,
    load,
    byId,
    create,
    rename,
    remove,
    touch,
    markActive,
    markEnded,
    check,
    onRuns,
    startWatching,
    stopWatching,
  };
});
