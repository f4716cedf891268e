import { describe, expect, it } from "vitest";
import { en } from "../src/i18n/en";
import { translate } from "../src/i18n";
import { zh } from "../src/i18n/zh";

describe("dictionaries", () => {
  it("have the same keys and placeholders in every language", () => {
    expect(Object.keys(zh).sort()).toEqual(Object.keys(en).sort());
    for (const key of Object.keys(en) as (keyof typeof en)[]) {
      const names = (s: string) => (s.match(/\{\w+\}/g) ?? []).sort();
      expect(names(zh[key]), key).toEqual(names(en[key]));
      expect(zh[key].trim(), key).not.toBe("");
    }
  });

  it("fills placeholders", () => {
    expect(translate("en", "conn.retryIn", { seconds: 3 })).toBe("Reconnecting in 3 s");
    expect(translate("zh-CN", "conn.retryIn", { seconds: 3 })).toBe("3 秒后重新连接");
  });
});
