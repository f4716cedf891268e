import { describe, expect, it } from "vitest";
import { renderMarkdown, sanitize } from "../src/core/markdown";

function dom(html: string): HTMLElement {
  const div = document.createElement("div");
  div.innerHTML = html;
  return div;
}

describe("renderMarkdown", () => {
  it("renders Markdown with highlighted code", () => {
    const html = renderMarkdown("# Title\n\nSome **bold**.\n\n```python\ndef f():\n    return 1\n```\n");
    const root = dom(html);
    expect(root.querySelector("h1")?.textContent).toBe("Title");
    expect(root.querySelector("strong")?.textContent).toBe("bold");
    const code = root.querySelector("pre.code-block code.hljs");
    expect(code?.className).toContain("language-python");
    expect(code?.querySelector(".hljs-keyword")?.textContent).toBe("def");
  });

  it("keeps raw HTML as text", () => {
    const payload = '<script>window.__x=1</script><img src=x onerror="window.__x=2"> and <b>bold</b>';
    const root = dom(renderMarkdown(payload));
    expect(root.querySelector("script, img, b")).toBeNull();
    expect(root.textContent).toContain("<script>window.__x=1</script>");
    expect(root.textContent).toContain('<img src=x onerror="window.__x=2">');
  });

  it("drops dangerous links and images, and opens safe links in a new tab", () => {
    const root = dom(renderMarkdown("[a](javascript:alert(1)) [b](https://example.com) ![i](https://example.com/x.png) [c](data:text/html,hi)"));
    const links = [...root.querySelectorAll("a")];
    expect(links.map((a) => a.getAttribute("href"))).toEqual(["https://example.com"]);
    expect(links[0]!.getAttribute("rel")).toContain("noopener");
    expect(links[0]!.getAttribute("target")).toBe("_blank");
    expect(root.innerHTML).not.toMatch(/href="(javascript|data):/i);
    expect(root.querySelector("img")).toBeNull();
  });

  it("escapes code in unknown languages", () => {
    const root = dom(renderMarkdown("```nope\n<b>x</b>\n```"));
    expect(root.querySelector("b")).toBeNull();
    expect(root.querySelector("code")?.textContent).toBe("<b>x</b>\n");
  });
});

describe("sanitize", () => {
  it("holds on its own against markup that markdown-it would never emit", () => {
    const root = dom(
      sanitize(
        '<a href="javascript:alert(1)" onclick="x()">a</a><span onmouseover="y()">s</span>' +
          '<img src=x onerror="z()"><iframe src="https://e.com"></iframe><svg><script>1</script></svg>' +
          '<a href="https://ok.example">ok</a>',
      ),
    );
    expect(root.innerHTML).not.toMatch(/onclick|onmouseover|onerror|javascript:|<img|<iframe|<svg|<script/);
    expect([...root.querySelectorAll("a")].map((a) => a.getAttribute("href"))).toEqual([null, "https://ok.example"]);
  });
});
