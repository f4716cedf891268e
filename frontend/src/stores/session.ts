// Who is using the UI: the probe of /api/auth/me, sign-in (password or first-run link), sign-out,
// and the CSRF token every state-changing request carries. A server without accounts answers the
// probe with the single local user and no token: that counts as signed in.

import { defineStore } from "pinia";
import { computed, ref } from "vue";
import { ApiError, configureHttp, http } from "../api/http";
import type { Me } from "../api/types";

export type SessionState = "unknown" | "anonymous" | "authenticated" | "unreachable";

interface LoginAnswer {
  user?: { id: string; name: string; is_admin?: boolean };
  csrf_token?: string;
}

export const useSessionStore = defineStore("session", () => {
  const state = ref<SessionState>("unknown");
  const me = ref<Me | null>(null);
  const csrfToken = ref<string | null>(null);
  const error = ref<string | null>(null);
  /** The server has accounts (it issued a CSRF token): sign-out and the login screen make sense. */
  const accounts = computed(() => csrfToken.value !== null);
  const sandboxWarning = computed(() => {
    if (!me.value) return null;
    if (me.value.sandbox_warning) return me.value.sandbox_warning;
    return me.value.sandbox === "none" ? "none" : null;
  });

  configureHttp({
    csrfToken: () => csrfToken.value,
    onUnauthorized: () => {
      if (state.value === "authenticated") {
        state.value = "anonymous";
        me.value = null;
        csrfToken.value = null;
      }
    },
    refreshCsrf: () => probe(),
  });

  async function probe(): Promise<void> {
    try {
      const answer = await http.get<Me>("/api/auth/me", { quiet401: true });
      me.value = answer;
      csrfToken.value = answer.csrf_token ?? null;
      state.value = "authenticated";
      error.value = null;
    } catch (exc) {
      if (exc instanceof ApiError && exc.status === 401) {
        state.value = "anonymous";
      } else {
        state.value = "unreachable";
        error.value = exc instanceof Error ? exc.message : String(exc);
      }
    }
  }

  async function login(body: { username: string; password: string } | { login_token: string }): Promise<void> {
    const answer = await http.post<LoginAnswer>("/api/auth/login", body, { quiet401: true });
    if (answer.csrf_token) csrfToken.value = answer.csrf_token;
    await probe();
  }

  /** Sign in with the token of a one-time login link (the first-run link); the error, if any. */
  async function loginWithLink(token: string): Promise<string | null> {
    try {
      await login({ login_token: token });
      return null;
    } catch (exc) {
      return exc instanceof Error ? exc.message : String(exc);
    }
  }

  async function logout(): Promise<void> {
    try {
      await http.post("/api/auth/logout");
    } finally {
      me.value = null;
      csrfToken.value = null;
      state.value = "anonymous";
    }
  }

  return { state, me, csrfToken, error, accounts, sandboxWarning, probe, login, loginWithLink, logout };
});
