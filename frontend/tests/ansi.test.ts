import { describe, expect, it } from "vitest";
import { ansiToSegments, applyCarriageReturns, stripAnsi } from "../src/core/ansi";

describe("ansiToSegments", () => {
  it("turns SGR colours into classes and drops the escapes", () => {
    const segs = ansiToSegments("\x1b[32mgreen\x1b[0m plain \x1b[1;31mbold red\x1b[0m");
    expect(segs).toEqual([
      { text: "green", classes: ["ansi-fg-green"], style: {} },
      { text: " plain ", classes: [], style: {} },
      { text: "bold red", classes: ["ansi-fg-red", "ansi-bold"], style: {} },
    ]);
  });

  it("supports 256-colour and truecolor", () => {
    const [a, b] = ansiToSegments("\x1b[38;5;196ma\x1b[48;2;1;2;3mb");
    expect(a!.style).toEqual({ color: "rgb(255, 0, 0)" });
    expect(b!.style).toEqual({ color: "rgb(255, 0, 0)", "background-color": "rgb(1, 2, 3)" });
  });

  it("keeps markup as text: segments are data, never HTML", () => {
    const text = '<img src=x onerror="alert(1)"><script>alert(2)</script>';
    expect(stripAnsi(`\x1b[31m${text}\x1b[0m`)).toBe(text);
  });

  it("drops cursor movement, OSC titles and stray escapes", () => {
    expect(stripAnsi("a\x1b[2Kb\x1b]0;title\x07c\x1b[?25ld\x1b")).toBe("abcd");
  });

  it("applies carriage returns like a terminal", () => {
    expect(applyCarriageReturns("10%\r50%\r100%\ndone\r\n")).toBe("100%\ndone\n");
    expect(applyCarriageReturns("abcdef\rXY")).toBe("XYcdef");
  });
});
