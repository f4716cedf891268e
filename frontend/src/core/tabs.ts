// Tabs of one browser tell each other what happened at once (BroadcastChannel); the activity feed
// in the conversations store (and its fallback check) covers other browsers and devices.

export type TabMessage =
  | { kind: "run-started"; conversationId: string; runId: string }
  | { kind: "run-ended"; conversationId: string; runId: string }
  | { kind: "conversations-changed" };

type Handler = (message: TabMessage) => void;

const handlers = new Set<Handler>();
let channel: BroadcastChannel | null = null;

function open(): BroadcastChannel | null {
  if (channel || typeof BroadcastChannel === "undefined") return channel;
  channel = new BroadcastChannel("onward");
  channel.onmessage = (event: MessageEvent<TabMessage>) => {
    for (const handler of handlers) handler(event.data);
  };
  return channel;
}

export function postToTabs(message: TabMessage): void {
  open()?.postMessage(message);
}

export function onTabMessage(handler: Handler): () => void {
  open();
  handlers.add(handler);
  return () => handlers.delete(handler);
}
