// A small typed dictionary instead of a framework: two languages, keys checked at compile time.
import { computed, ref } from "vue";
import { en, type MessageKey } from "./en";
import { zh } from "./zh";

export type Locale = "en" | "zh-CN";
export const LOCALES: readonly { code: Locale; label: string }[] = [
  { code: "en", label: "English" },
  { code: "zh-CN", label: "简体中文" },
];

const DICTIONARIES: Record<Locale, Record<MessageKey, string>> = { en, "zh-CN": zh };
const STORAGE_KEY = "onward.locale";

function initialLocale(): Locale {
  try {
    const saved = localStorage.getItem(STORAGE_KEY);
    if (saved === "en" || saved === "zh-CN") return saved;
  } catch {
    // storage unavailable
  }
  const nav = typeof navigator !== "undefined" ? navigator.language : "en";
  return nav.toLowerCase().startsWith("zh") ? "zh-CN" : "en";
}

export const locale = ref<Locale>(initialLocale());

export function setLocale(next: Locale): void {
  locale.value = next;
  try {
    localStorage.setItem(STORAGE_KEY, next);
  } catch {
    // storage unavailable: the choice lasts for this page
  }
  document.documentElement.lang = next;
}

export function translate(loc: Locale, key: MessageKey, params?: Record<string, string | number>): string {
  const template = DICTIONARIES[loc][key] ?? en[key];
  if (!params) return template;
  return template.replace(/\{(\w+)\}/g, (whole, name: string) =>
    name in params ? String(params[name]) : whole,
  );
}

export function t(key: MessageKey, params?: Record<string, string | number>): string {
  return translate(locale.value, key, params);
}

export const isChinese = computed(() => locale.value === "zh-CN");

export type { MessageKey };
