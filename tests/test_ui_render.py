"""The web UI's content renderer (gateway/http/ui/render.js) on its own, and its safety rules.

The renderer runs in Chromium on a page Playwright serves from the files themselves: no
gateway, no network. The source checks need no browser at all.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, Route

from gateway.http.ui_routes import UI_DIR
from tests.test_ui import launch_chromium, needs_chromium

ORIGIN = "http://render.test"
HARNESS = (
    "<!doctype html><meta charset=utf-8><body><script type=module>"
    "import * as render from '/render.js'; window.render = render;</script>"
)
# The elements and attributes the renderer may produce, whatever the content.
ALLOWED_TAGS = {
    "div", "p", "br", "pre", "code", "strong", "em", "del", "a", "ul", "ol", "li",
    "blockquote", "hr", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"class", "href", "rel", "target", "start", "data-lang"}


@pytest.fixture(scope="module")
async def page() -> AsyncIterator[Page]:
    async with launch_chromium() as browser:
        tab = await browser.new_page()

        async def serve(route: Route) -> None:
            name = route.request.url.removeprefix(ORIGIN + "/")
            if name == "":
                await route.fulfill(body=HARNESS, content_type="text/html")
            else:
                await route.fulfill(path=UI_DIR / name)

        await tab.route(f"{ORIGIN}/**", serve)
        await tab.goto(ORIGIN + "/")
        await tab.wait_for_function("() => window.render !== undefined")
        yield tab
        await tab.close()


async def render(page: Page, content: str, content_type: str = "markdown") -> str:
    """The rendered content's HTML (serialized by the browser, for comparison only)."""
    html: str = await page.evaluate(
        "([content, type]) => window.render.renderContent(content, type).innerHTML",
        [content, content_type],
    )
    return html


P = pytest.param
LINK = '<a href="{0}" rel="noopener noreferrer" target="_blank">{1}</a>'
WIKI = "https://en.wikipedia.org/wiki/Foo_(bar)"


@needs_chromium
@pytest.mark.parametrize(
    ("source", "html"),
    [
        P("**bold**, *it*, _it_, ~~no~~ and `x < y`",
          "<p><strong>bold</strong>, <em>it</em>, <em>it</em>, <del>no</del> and"
          " <code>x &lt; y</code></p>", id="inline"),
        P("snake_case_name, 2*3*4 and a ** b", "<p>snake_case_name, 2*3*4 and a ** b</p>",
          id="not-emphasis"),
        P("line one\nline two", "<p>line one<br>line two</p>", id="line-break"),
        P("# Title ##\n### Small", "<h3>Title</h3><h5>Small</h5>", id="headings"),
        P("- a\n- b\n  - c\n\n1. one\n2. two",
          "<ul><li>a</li><li>b<ul><li>c</li></ul></li></ul><ol><li>one</li><li>two</li></ol>",
          id="lists"),
        P("3. three\n4. four", '<ol start="3"><li>three</li><li>four</li></ol>', id="ol-start"),
        P("* a\n\n* b", "<ul><li><p>a</p></li><li><p>b</p></li></ul>", id="loose-list"),
        P("> quoted\n> **more**",
          "<blockquote><p>quoted<br><strong>more</strong></p></blockquote>", id="quote"),
        P("a\n\n---\n\nb", "<p>a</p><hr><p>b</p>", id="rule"),
        P("```js\nlet a = '<b>';\n\n  b = 1;\n```",
          '<pre class="code-block" data-lang="js"><code class="language-js">'
          "let a = '&lt;b&gt;';\n\n  b = 1;</code></pre>", id="fence"),
        P("text\n```\nstill streaming",
          '<p>text</p><pre class="code-block"><code>still streaming</code></pre>',
          id="unclosed-fence"),
        P("- item\n\n  ```\n  code\n  ```",
          '<ul><li><p>item</p><pre class="code-block"><code>code</code></pre></li></ul>',
          id="fence-in-item"),
        P("**`code` in bold**", "<p><strong><code>code</code> in bold</strong></p>",
          id="nested-spans"),
        P("``a ` b``", "<p><code>a ` b</code></p>", id="double-backticks"),
        P("[docs](https://example.com/x?a=1&b=2)",
          "<p>" + LINK.format("https://example.com/x?a=1&amp;b=2", "docs") + "</p>", id="link"),
        P(f"see {WIKI}. (or https://example.com/a)",
          f"<p>see {LINK.format(WIKI, WIKI)}. (or "
          + LINK.format("https://example.com/a", "https://example.com/a") + ")</p>",
          id="bare-urls"),
        P("[x](javascript:alert(1)) and [y](data:text/html,hi)",
          "<p>[x](javascript:alert(1)) and [y](data:text/html,hi)</p>", id="unsafe-links"),

        P("| Name | Size |\n|:--|--:|\n| `a.py` | 10 |\n| b \\| c | **20** |",
          '<div class="table-scroll"><table><thead><tr><th class="align-left">Name</th>'
          '<th class="align-right">Size</th></tr></thead><tbody><tr>'
          '<td class="align-left"><code>a.py</code></td><td class="align-right">10</td></tr>'
          '<tr><td class="align-left">b | c</td><td class="align-right"><strong>20</strong></td>'
          "</tr></tbody></table></div>", id="table"),
        P("a | b\n--- | ---\n1 | 2\n\nafter",
          '<div class="table-scroll"><table><thead><tr><th>a</th><th>b</th></tr></thead>'
          "<tbody><tr><td>1</td><td>2</td></tr></tbody></table></div><p>after</p>",
          id="table-no-outer-pipes"),
        P("a | b\n--- | --- | ---", "<p>a | b<br>--- | --- | ---</p>", id="table-mismatch"),
    ],
)  # fmt: skip
async def test_markdown_subset(page: Page, source: str, html: str) -> None:
    """Each construct of the subset renders to the expected elements."""
    assert await render(page, source) == html


JSON_HTML = '<pre><code class="language-json">{\n  "a": [\n    1\n  ]\n}</code></pre>'


@needs_chromium
@pytest.mark.parametrize(
    ("content_type", "source", "html"),
    [
        P("text", "a *b*\n<i>c</i>", "a *b*\n&lt;i&gt;c&lt;/i&gt;", id="text"),
        P("code", "if a < b:\n    pass", "<pre><code>if a &lt; b:\n    pass</code></pre>",
          id="code"),
        P("json", '{"a":[1]}', JSON_HTML, id="json"),
        P("json", "{not json", '<pre><code class="language-json">{not json</code></pre>',
          id="not-json"),
    ],
)  # fmt: skip
async def test_other_content_types(
    page: Page, content_type: str, source: str, html: str
) -> None:
    """text keeps its characters and line breaks; code and json are preformatted."""
    assert await render(page, source, content_type) == html


XSS_VECTORS = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=1">',
    "<svg onload=window.__xss=1>",
    '<a href="javascript:window.__xss=1">x</a>',
    "[a](javascript:window.__xss=1)",
    '[a](https://x.org/" onclick="window.__xss=1)',
    'https://x.org/"><img src=x onerror=window.__xss=1>',
    "```\n</code></pre><img src=x onerror=window.__xss=1>\n```",
    "`<img src=x onerror=window.__xss=1>`",
    "**<iframe src=javascript:window.__xss=1>**",
    "# <img src=x onerror=window.__xss=1>",
    "- <img src=x onerror=window.__xss=1>\n> <style>*{}</style>",
    "&lt;img src=x onerror=window.__xss=1&gt;",
]


@needs_chromium
@pytest.mark.parametrize("content_type", ["markdown", "text", "code", "json"])
async def test_no_content_becomes_markup(page: Page, content_type: str) -> None:
    """Whatever the content, only the renderer's own elements appear and no script runs."""
    found: list[dict[str, Any]] = await page.evaluate(
        """([vectors, type]) => vectors.map((source) => {
            const el = window.render.renderContent(source, type);
            document.body.append(el);  // attached, so anything loadable would load
            const nodes = [...el.querySelectorAll('*')];
            return {
                tags: nodes.map((n) => n.localName),
                attributes: nodes.flatMap((n) => n.getAttributeNames()),
                hrefs: nodes.filter((n) => n.hasAttribute('href')).map((n) => n.href),
                text: el.textContent,
            };
        })""",
        [XSS_VECTORS, content_type],
    )
    for source, result in zip(XSS_VECTORS, found, strict=True):
        assert set(result["tags"]) <= ALLOWED_TAGS, source
        assert set(result["attributes"]) <= ALLOWED_ATTRIBUTES, source
        assert all(re.match(r"https?://", href) for href in result["hrefs"]), source
        if content_type != "markdown":
            assert result["text"] == source, source
    assert await page.evaluate("() => window.__xss") is None


@needs_chromium
@pytest.mark.parametrize(
    "source",
    [
        "*a " * 80_000,
        "**a " * 60_000,
        "`a``" * 60_000,
        "[" * 200_000,
        "_a " * 80_000,
        "http://" + "." * 200_000 + "a",
        "# " + " " * 200_000 + "x",
        "```" + "a" * 200_000 + "`",
        "> " * 50_000 + "deep",
        "\n".join("  " * i + "- level" for i in range(2_000)),
        "- a" + "\n" * 200_000 + "  b",
        ("x " * 3_000 + "\n\n") * 40,
        # Paragraphs just under the inline limit, each full of openers that never close.
        ("**a " * 1_200 + "\n\n") * 50,
        ("~~a " * 1_200 + "\n\n") * 50,
        ("__a " * 1_200 + "\n\n") * 50,
        ("` ``" * 1_200 + "\n\n") * 50,
    ],
    ids=lambda s: repr(s[:12]),
)
async def test_hostile_markdown_renders_quickly(page: Page, source: str) -> None:
    """Content built to make regexes backtrack or the renderer recurse renders in < 1 s."""
    elapsed_ms: float = await page.evaluate(
        """(source) => {
            const started = performance.now();
            window.render.renderContent(source, 'markdown');
            return performance.now() - started;
        }""",
        source,
    )
    assert elapsed_ms < 1000, f"{elapsed_ms:.0f} ms"


def test_ui_code_never_parses_html() -> None:
    """No UI script uses an HTML-parsing sink; the page has no inline script or style."""
    sinks = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|createContextualFragment"
        r"|DOMParser|\beval\(|new Function|setTimeout\(\s*['\"`]|srcdoc"
    )
    scripts = sorted(UI_DIR.glob("*.js"))
    assert scripts
    for script in scripts:
        for number, line in enumerate(script.read_text().splitlines(), 1):
            code = line.split("//", 1)[0]
            assert not sinks.search(code), f"{script.name}:{number}: {line.strip()}"
    page_html = (UI_DIR / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page_html)
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", page_html)


async def test_page_and_assets_are_served(http: httpx.AsyncClient) -> None:
    """`/` is the page with a strict CSP; its assets are served under /ui/ with usable types."""
    page = await http.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'data-testid="composer"' in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "ws://127.0.0.1:" in policy
    assert page.headers["referrer-policy"] == "no-referrer"
    for path, kind in [
        ("/ui/app.js", "javascript"),
        ("/ui/render.js", "javascript"),
        ("/ui/live.js", "javascript"),
        ("/ui/style.css", "text/css"),
    ]:
        asset = await http.get(path)
        assert asset.status_code == 200 and kind in asset.headers["content-type"], path
    assert (await http.get("/ui/missing.js")).status_code == 404
