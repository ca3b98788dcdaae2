"""MkDocs hook: doctests in docstrings render as Python code.

The modules' docstrings hold doctests (pytest runs them) in their text, not
under a Google-style `Examples:` heading. Markdown would read their `>>>`
lines as nested quotes and an output such as `['a']` after a bracketed line
as a reference link; this fences each run of doctest lines as `pycon`.
"""

from markdown import Extension
from markdown.preprocessors import Preprocessor
from mkdocs.plugins import event_priority


class _DoctestFences(Preprocessor):
    def run(self, lines):
        out, fence, doctest = [], None, None
        for line in lines:
            text = line.lstrip()
            indent = line[:len(line) - len(text)]
            if doctest is not None and not text:
                out.append(doctest + "```")
                doctest = None
            elif fence is None and doctest is None:
                if text.startswith("```"):
                    fence = indent
                elif text.startswith(">>>"):
                    out.append(indent + "```pycon")
                    doctest = indent
            elif fence is not None and text.startswith("```"):
                fence = None
            out.append(line)
        if doctest is not None:
            out.append(doctest + "```")
        return out


class _DoctestExtension(Extension):
    def extendMarkdown(self, md):  # noqa: N802 (Markdown's API)
        # Before the fenced-code preprocessors (priority 25) read the fences.
        md.preprocessors.register(_DoctestFences(md), "doctest_fences", 29)


@event_priority(100)  # before mkdocstrings reads the extensions
def on_config(config):
    config.markdown_extensions.append(_DoctestExtension())
    return config
