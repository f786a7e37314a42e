"""Syntax highlighting of code blocks in the web UI, in real Chromium (issue 16, point 6):
coloured token spans built as DOM nodes from Prism's tokenizer, lazily, never as markup."""

from __future__ import annotations

import contextlib
import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, expect

from gateway.http.ui_routes import UI_DIR
from tests.conftest import RunningGateway, request, searchable
from tests.test_ui import (  # noqa: F401 - fixtures
    WAIT_MS,
    Tabs,
    browser,
    message,
    needs_chromium,
    profile_fixture,
)
from tests.test_ui_a11y import AXE

PORT, OTHER_PORT = 9266, 9267
PRISM = UI_DIR / "vendor" / "prism-1.30.0.min.js"
PRISM_SHA256 = "79ff7665b65d9c58c870918ab3832c7b76a7a71be26b48ed1368914ec2758d92"
PYTHON = 'def greet(name):\n    # say hello\n    return "hello, " + name\n'

# One short sample a language, together holding most token kinds the stylesheet colours.
SAMPLES = {
    "python": '@cache\nclass A(Base):\n    def f(self, x=1.5):  # c\n        return f"{x}" or None',
    "javascript": "const re = /a+b/g; // c\nfunction f(a) { return `t${a}` + 0x1f; }",
    "typescript": "interface P { name: string }\nlet n: number = 2 as const;",
    "json": '{"key": [1, true, null, "s"]}',
    "bash": '#!/bin/sh\nexport A="$HOME" && grep -v x | wc -l  # c',
    "sql": "SELECT count(*) FROM t WHERE name = 'x' AND n > 2; -- c",
    "go": 'package main\nfunc main() { fmt.Println("hi", 3, true) }',
    "rust": "#[derive(Debug)]\nfn f<'a>(x: &'a str) -> Option<u8> { Some(1) }",
    "java": '@Override\npublic static void main(String[] args) { System.out.println("x"); }',
    "c": '#include <stdio.h>\nint main(void) { printf("%d\\n", 1); /* c */ }',
    "cpp": "template <typename T> class V : public std::vector<T> { bool b = false; };",
    "yaml": "key: value\nlist:\n  - 1\n  - 'two'  # c\nok: true",
    "html": '<!DOCTYPE html>\n<a href="/x" class=y>&amp; text</a><!-- c -->',
    "css": "@media (max-width: 9px) { .a > #b:hover { color: #fff !important; } }",
    "diff": "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-old\n+new\n unchanged",
}

pytestmark = needs_chromium


def block(page: Page, seq: int, index: int = 0) -> Locator:
    """The `code` element of the message's `index`th code block."""
    return message(page, seq).locator("pre code").nth(index)


async def send(
    gateway: RunningGateway, port: int, *contents: str, content_type: str = "markdown"
) -> None:
    """Send assistant messages to `port` in one extracted batch, in order."""
    batch = [
        {
            "content": content,
            "content_type": content_type,
            "role": "assistant",
            "id": str(uuid.uuid4()),
        }
        for content in contents
    ]
    async with gateway.connect() as ide:
        ack = await request(ide, {"type": "extracted", "port": port, "messages": batch})
    assert ack["type"] == "ack", ack


@contextlib.asynccontextmanager
async def shown(
    chromium: Browser,
    gateway: RunningGateway,
    *,
    height: int = 720,
    scheme: Literal["light", "dark"] = "light",
    bypass_csp: bool = False,
) -> AsyncIterator[Page]:
    """A page of a fresh profile showing PORT's conversation; it may end with no JS error."""
    context = await chromium.new_context(
        viewport={"width": 1100, "height": height}, color_scheme=scheme, bypass_csp=bypass_csp
    )
    errors: list[str] = []
    try:
        page = await context.new_page()
        page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
        await page.goto(gateway.http_url + "/")
        await page.locator(f'[data-testid="port-item"][data-port="{PORT}"]').click(timeout=WAIT_MS)
        yield page
    finally:
        await context.close()
    assert errors == []


async def color(locator: Locator) -> str:
    """The element's computed text colour."""
    value: str = await locator.evaluate("(el) => getComputedStyle(el).color")
    return value


async def test_python_fence_gets_coloured_tokens_and_copy_gives_the_source(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """A ```python block gets keyword, string and comment spans coloured apart from plain
    text, a json message is highlighted as JSON, and Copy still gives exactly the source."""
    await send(gateway, PORT, f"Here:\n\n```python\n{PYTHON}```")
    await send(gateway, PORT, '{"ok": true, "n": 2}', content_type="json")
    await profile.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = await profile.open(PORT)
    code = block(page, 1)
    await expect(code.locator(".hl-keyword")).to_have_text(["def", "return"], timeout=WAIT_MS)
    await expect(code.locator(".hl-string")).to_have_text(['"hello, "'])
    await expect(code.locator(".hl-comment")).to_have_text(["# say hello"])
    await expect(code.locator(".hl-function")).to_have_text(["greet"])
    await expect(code).to_have_text(PYTHON.rstrip("\n"))
    plain = await color(code)
    colours = {await color(code.locator(f".hl-{kind}")) for kind in ("string", "comment")}
    colours.add(await color(code.locator(".hl-keyword").first))
    assert len(colours) == 3 and plain not in colours, (plain, colours)
    json_code = block(page, 2)
    await expect(json_code.locator(".hl-property")).to_have_text(['"ok"', '"n"'], timeout=WAIT_MS)
    await expect(json_code.locator(".hl-boolean")).to_have_text(["true"])
    await message(page, 1).get_by_role("button", name="Copy").click()
    await expect(message(page, 1).get_by_role("button", name="Copied")).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == PYTHON.rstrip("\n")


async def test_unknown_missing_and_oversized_languages_stay_plain(
    browser: Browser,  # noqa: F811 - the fixture imported above
    gateway: RunningGateway,
) -> None:
    """A fence with an unknown language, one with none, a "code" message and a block over
    20,000 characters stay plain text, while a later known block is highlighted."""
    big = "x = 1\n" * 3400  # 20,400 characters
    await send(
        gateway,
        PORT,
        "```brainfuck\n+[>+<-]. # not a comment\n```",
        "```\ndef plain(): return 'x'\n```",
        f"```python\n{big}```",
        "```py\nimport os\n```",
    )
    await send(gateway, PORT, "def code(): return 'x'", content_type="code")
    await send(gateway, PORT, "```py\nimport sys\n```")
    # Tall enough for every block to be in view from the start.
    async with shown(browser, gateway, height=1600) as page:
        # Blocks are highlighted in the order they came into view: once the last one is,
        # any block before it that was going to be highlighted would have been.
        last = block(page, 6).locator(".hl-keyword")
        await expect(last).to_have_text(["import"], timeout=WAIT_MS)
        await expect(block(page, 4).locator(".hl-keyword")).to_have_text(["import"])
        for seq in (1, 2, 3, 5):
            await expect(block(page, seq)).to_be_in_viewport()
            assert await block(page, seq).evaluate("(el) => el.children.length") == 0, seq
        await expect(block(page, 1)).to_have_text("+[>+<-]. # not a comment")
        assert await block(page, 3).evaluate("(el) => el.textContent") == big.rstrip("\n")


async def test_markup_in_a_code_block_stays_text(profile: Tabs, gateway: RunningGateway) -> None:
    """Tags in an html or python block show as the characters they are: the block holds only
    token spans and text, no image or script is made, and no handler runs."""
    hostile = (
        '<img src=x onerror="window.__xss=1">\n'
        "</span><script>window.__xss=2</script>\n"
        '<span class="hl-keyword" onclick="window.__xss=3">x</span>'
    )
    await send(gateway, PORT, f"```html\n{hostile}\n```", f"```python\nx = '{hostile}'\n```")
    page = await profile.open(PORT)
    for seq in (1, 2):
        code = block(page, seq)
        await expect(code).to_have_class(re.compile(r"\bhighlighted\b"), timeout=WAIT_MS)
        found = await code.evaluate(
            """(el) => ({
                text: el.textContent,
                tags: [...el.querySelectorAll('*')].map((e) => e.tagName),
                attributes: [...el.querySelectorAll('*')].flatMap((e) => e.getAttributeNames()),
            })"""
        )
        assert found["text"] == (hostile if seq == 1 else f"x = '{hostile}'")
        assert set(found["tags"]) == {"SPAN"}
        assert set(found["attributes"]) == {"class"}
    assert await page.locator("main img, main script").count() == 0
    assert await page.evaluate("window.__xss") is None


async def test_blocks_are_highlighted_only_near_the_viewport(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """Of a long conversation only the blocks near the viewport are highlighted; one far
    above is highlighted once it is scrolled to."""
    await send(gateway, PORT, *(f"Step {i}:\n\n```python\n{PYTHON}```" for i in range(1, 41)))
    page = await profile.open(PORT)
    await expect(block(page, 40).locator(".hl-keyword").first).to_be_visible(timeout=WAIT_MS)
    first = block(page, 1)
    await expect(first).not_to_be_in_viewport()
    assert await first.evaluate("(el) => el.children.length") == 0
    await first.scroll_into_view_if_needed()
    await expect(first.locator(".hl-keyword")).to_have_text(["def", "return"], timeout=WAIT_MS)


async def test_a_block_that_tokenizes_for_seconds_neither_stalls_the_page_nor_the_rest(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """A block that makes its grammar backtrack for seconds stays plain without a long task on
    the page, and the blocks after it are still highlighted."""
    # About 10 s of Prism's bash grammar (20,000 characters); other grammars take milliseconds.
    stall = ("'\"`/*<!--${#\\\n" * 1500)[:20_000]
    await send(gateway, PORT, f"```bash\n{stall}\n```", f"```python\n{PYTHON}```")
    page = await profile.open(PORT)
    await page.evaluate(
        """() => {
            window.longestTask = 0;
            new PerformanceObserver((list) => {
                for (const task of list.getEntries()) {
                    window.longestTask = Math.max(window.longestTask, task.duration);
                }
            }).observe({type: 'longtask', buffered: true});
        }"""
    )
    await expect(block(page, 2).locator(".hl-keyword")).to_have_text(
        ["def", "return"], timeout=WAIT_MS
    )
    assert await block(page, 1).evaluate("(el) => el.children.length") == 0
    # Generous for a loaded machine; tokenizing on the page would be one task of seconds.
    assert await page.evaluate("window.longestTask") < 1000


async def test_a_search_hit_in_a_block_stays_marked_after_highlighting(
    profile: Tabs, gateway: RunningGateway
) -> None:
    """A search match in a code block of another session stays marked on its word when the
    block is highlighted under the mark."""
    await send(gateway, OTHER_PORT, "```python\ndef quokka(zoo):\n    return len(zoo)\n```")
    await send(gateway, PORT, "elsewhere")
    await searchable(gateway)
    page = await profile.open(PORT)
    search = page.get_by_test_id("search-input")
    await search.fill("quokka")
    await search.press("Enter")
    await page.get_by_test_id("search-result").click(timeout=WAIT_MS)
    code = block(page, 1)
    await expect(code.locator(".hl-function")).to_have_text(["quokka"], timeout=WAIT_MS)
    await expect(message(page, 1)).to_have_class(re.compile(r"\bfound\b"))
    marked = await page.evaluate(
        "() => [...(CSS.highlights.get('search-hit') ?? [])].map((range) => range.toString())"
    )
    assert marked == ["quokka"]


@pytest.fixture
async def samples(gateway: RunningGateway) -> AsyncIterator[RunningGateway]:
    """A gateway with one message a language, each a fenced sample of it."""
    await send(gateway, PORT, *(f"```{lang}\n{code}\n```" for lang, code in SAMPLES.items()))
    yield gateway


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_token_colours_pass_axe_contrast_in_light_and_dark(
    browser: Browser,  # noqa: F811 - the fixture imported above
    samples: RunningGateway,
    scheme: Literal["light", "dark"],
) -> None:
    """Highlighted samples of every language, in light and in dark, have no colour-contrast
    (or other serious or critical) violation according to axe-core."""
    # bypass_csp: the page's CSP (script-src 'self') rightly refuses the injected axe-core.
    async with shown(browser, samples, scheme=scheme, bypass_csp=True) as page:
        for seq in range(1, len(SAMPLES) + 1):
            code = block(page, seq)
            await code.scroll_into_view_if_needed(timeout=WAIT_MS)
            await expect(code).to_have_class(re.compile(r"\bhighlighted\b"), timeout=WAIT_MS)
        kinds = await page.locator("pre code span").evaluate_all(
            "(spans) => [...new Set(spans.flatMap((s) => [...s.classList]))]"
        )
        assert {"hl-keyword", "hl-string", "hl-comment", "hl-number", "hl-tag"} <= set(kinds)
        await page.add_script_tag(path=str(AXE))
        result: dict[str, Any] = await page.evaluate(
            """async () => await axe.run(document.querySelector('[data-testid="messages"]'),
                                         {resultTypes: ['violations']})"""
        )
    blocking = [
        f"{v['id']} at {node['target']}: {node.get('failureSummary', '')}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
        for node in v["nodes"][:5]
    ]
    assert blocking == []


def test_the_vendored_prism_is_the_recorded_file() -> None:
    """The vendored Prism is byte for byte the file recorded in its README."""
    assert hashlib.sha256(PRISM.read_bytes()).hexdigest() == PRISM_SHA256
    assert PRISM_SHA256 in (PRISM.parent / "README.md").read_text()


def test_highlighting_uses_prisms_tokenizer_only() -> None:
    """The highlighter calls none of Prism's functions that produce HTML, only its tokenizer,
    and only in its worker."""
    code = {}
    for name in ("highlight.js", "highlight_worker.js"):
        lines = (UI_DIR / name).read_text().splitlines()
        code[name] = "\n".join(line.split("//", 1)[0] for line in lines)
        assert not re.search(r"\.(highlight|highlightElement|highlightAll\w*)\(", code[name])
    assert ".tokenize(" in code["highlight_worker.js"]
    assert not re.search(r"\bPrism\.", code["highlight.js"])


async def test_the_highlighter_and_prism_are_served_as_javascript(http: httpx.AsyncClient) -> None:
    """The gateway serves the highlighter, its worker and the vendored Prism as JavaScript."""
    for path in ("highlight.js", "highlight_worker.js", "vendor/prism-1.30.0.min.js"):
        response = await http.get(f"/ui/{path}")
        assert response.status_code == 200, path
        assert "javascript" in response.headers["content-type"], path
        assert response.content == (UI_DIR / path).read_bytes(), path
