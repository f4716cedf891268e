// What this browser remembers about how the user likes the UI: theme, language, model for new runs.

import { defineStore } from "pinia";
import { ref, watch } from "vue";
import { http } from "../api/http";
import type { ModelList } from "../api/types";
import { locale, setLocale, type Locale } from "../i18n";

export type ThemeChoice = "system" | "light" | "dark";

function read(key: string): string | null {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

function write(key: string, value: string | null): void {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, value);
  } catch {
    // storage unavailable
  }
}

function systemDark(): boolean {
  return typeof window.matchMedia === "function" && window.matchMedia("(prefers-color-scheme: dark)").matches;
}

export const usePreferencesStore = defineStore("preferences", () => {
  const saved = read("onward.theme");
  const theme = ref<ThemeChoice>(saved === "light" || saved === "dark" ? saved : "system");
  const model = ref<string | null>(read("onward.model"));
  const models = ref<ModelList>({ models: [], default: null });

  function applyTheme(): void {
    const dark = theme.value === "dark" || (theme.value === "system" && systemDark());
    document.documentElement.dataset.theme = dark ? "dark" : "light";
  }

  watch(theme, (value) => {
    write("onward.theme", value === "system" ? null : value);
    applyTheme();
  });
  watch(model, (value) => write("onward.model", value));
  if (typeof window.matchMedia === "function") {
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", applyTheme);
  }
  applyTheme();
  document.documentElement.lang = locale.value;

  function toggleTheme(): void {
    theme.value = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  }

  async function loadModels(): Promise<void> {
    models.value = await http.get<ModelList>("/api/models");
    const names = models.value.models.map((m) => m.name);
    if (model.value !== null && !names.includes(model.value)) model.value = null;
  }

  /** The model to ask for, or undefined for the server's default. */
  function modelForRun(): string | undefined {
    return model.value ?? undefined;
  }

  return {
    theme,
    model,
    models,
    locale,
    setLocale: (next: Locale) => setLocale(next),
    toggleTheme,
    loadModels,
    modelForRun,
  };
});
