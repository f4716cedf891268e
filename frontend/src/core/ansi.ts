// Terminal output to styled text segments. The result is data (text + colour), rendered by Vue as
// text nodes, so output can never become markup. SGR colours (16, 256, truecolor), bold, dim,
// italic, underline and inverse are kept; every other escape sequence is dropped; a carriage return
// rewinds the current line the way a terminal shows progress bars.

export interface AnsiStyle {
  fg: string | null;
  bg: string | null;
  bold: boolean;
  dim: boolean;
  italic: boolean;
  underline: boolean;
  inverse: boolean;
}

export interface AnsiSegment {
  text: string;
  /** CSS class names for the 16 named colours and the attributes. */
  classes: string[];
  /** Inline colours for 256-colour and truecolor codes. */
  style: Record<string, string>;
}

const NAMES = ["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"] as const;

function plain(): AnsiStyle {
  return { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false };
}

function cube(n: number): string {
  if (n < 16) return n < 8 ? `c:${NAMES[n]}` : `c:bright-${NAMES[n - 8]}`;
  if (n >= 232) {
    const v = 8 + (n - 232) * 10;
    return `rgb(${v}, ${v}, ${v})`;
  }
  const i = n - 16;
  const level = (x: number): number => (x === 0 ? 0 : 55 + x * 40);
  return `rgb(${level(Math.floor(i / 36))}, ${level(Math.floor(i / 6) % 6)}, ${level(i % 6)})`;
}

function applySgr(style: AnsiStyle, params: number[]): void {
  if (params.length === 0) params = [0];
  for (let i = 0; i < params.length; i++) {
    const p = params[i] ?? 0;
    if (p === 0) Object.assign(style, plain());
    else if (p === 1) style.bold = true;
    else if (p === 2) style.dim = true;
    else if (p === 3) style.italic = true;
    else if (p === 4) style.underline = true;
    else if (p === 7) style.inverse = true;
    else if (p === 22) style.bold = style.dim = false;
    else if (p === 23) style.italic = false;
    else if (p === 24) style.underline = false;
    else if (p === 27) style.inverse = false;
    else if (p >= 30 && p <= 37) style.fg = `c:${NAMES[p - 30]}`;
    else if (p >= 90 && p <= 97) style.fg = `c:bright-${NAMES[p - 90]}`;
    else if (p === 39) style.fg = null;
    else if (p >= 40 && p <= 47) style.bg = `c:${NAMES[p - 40]}`;
    else if (p >= 100 && p <= 107) style.bg = `c:bright-${NAMES[p - 100]}`;
    else if (p === 49) style.bg = null;
    else if (p === 38 || p === 48) {
      let colour: string | null = null;
      if (params[i + 1] === 5 && params[i + 2] !== undefined) {
        colour = cube(Math.max(0, Math.min(255, params[i + 2] ?? 0)));
        i += 2;
      } else if (params[i + 1] === 2 && params[i + 4] !== undefined) {
        const [r, g, b] = [params[i + 2], params[i + 3], params[i + 4]].map((v) => Math.max(0, Math.min(255, v ?? 0)));
        colour = `rgb(${r}, ${g}, ${b})`;
        i += 4;
      }
      if (p === 38) style.fg = colour;
      else style.bg = colour;
    }
  }
}

function segment(text: string, style: AnsiStyle): AnsiSegment {
  const classes: string[] = [];
  const css: Record<string, string> = {};
  let fg = style.fg;
  let bg = style.bg;
  if (style.inverse) [fg, bg] = [bg ?? "c:inverse-fg", fg ?? "c:inverse-bg"];
  if (fg?.startsWith("c:")) classes.push(`ansi-fg-${fg.slice(2)}`);
  else if (fg) css.color = fg;
  if (bg?.startsWith("c:")) classes.push(`ansi-bg-${bg.slice(2)}`);
  else if (bg) css["background-color"] = bg;
  if (style.bold) classes.push("ansi-bold");
  if (style.dim) classes.push("ansi-dim");
  if (style.italic) classes.push("ansi-italic");
  if (style.underline) classes.push("ansi-underline");
  return { text, classes, style: css };
}

// CSI (ESC [ … final), OSC (ESC ] … BEL or ESC \), other two-character escapes.
// eslint-disable-next-line no-control-regex
const ESCAPE = /\x1b\[([0-9;?]*)([ -/]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|\x1b$/g;

/** Apply carriage returns: text after a lone \r overwrites its line from the start. */
export function applyCarriageReturns(text: string): string {
  if (!text.includes("\r")) return text;
  return text
    .replace(/\r\n/g, "\n")
    .split("\n")
    .map((line) => {
      if (!line.includes("\r")) return line;
      let shown = "";
      for (const piece of line.split("\r")) shown = piece + shown.slice(piece.length);
      return shown;
    })
    .join("\n");
}

export function ansiToSegments(input: string): AnsiSegment[] {
  const text = applyCarriageReturns(input);
  const out: AnsiSegment[] = [];
  const style = plain();
  let last = 0;
  const push = (piece: string): void => {
    if (!piece) return;
    const seg = segment(piece, style);
    const prev = out[out.length - 1];
    if (prev && prev.classes.join() === seg.classes.join() && JSON.stringify(prev.style) === JSON.stringify(seg.style)) {
      prev.text += piece;
    } else out.push(seg);
  };
  ESCAPE.lastIndex = 0;
  for (let m = ESCAPE.exec(text); m !== null; m = ESCAPE.exec(text)) {
    push(text.slice(last, m.index));
    last = m.index + m[0].length;
    if (m[3] === "m" && !m[2] && m[1] !== undefined && !m[1].includes("?")) {
      applySgr(
        style,
        m[1] === "" ? [] : m[1].split(";").map((v) => (v === "" ? 0 : Number.parseInt(v, 10))),
      );
    }
  }
  push(text.slice(last));
  return out;
}

/** The text without any escape sequence (what a screen reader or a copy should get). */
export function stripAnsi(input: string): string {
  return ansiToSegments(input)
    .map((s) => s.text)
    .join("");
}
