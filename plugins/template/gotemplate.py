"""A Go text/template engine for the subset consul-template templates use.

Supported: text and actions with trim markers (``{{-``/``-}}``) and comments; pipelines
(``a | b``), parenthesised sub-pipelines, fields (``.A.B``, ``$x.A``, ``(f).A``), variables
(``$x := ...``, ``$x = ...``, ``$``), string/raw-string/number/char/bool/nil literals;
``if``/``else if``/``else``, ``range`` (``$v :=`` and ``$i, $v :=`` forms, ``else``,
``break``, ``continue``), ``with``/``else``; custom delimiters. Not supported, and reported
with line and column when parsing: ``define``, ``template``, ``block`` and any function not in
the table handed in. The lexer, parser and executor are `gotemplate_lex`,
`gotemplate_parse` and `gotemplate_exec`.

Example::

    t = GoTemplate('{{range service "web"}}{{.Address}}{{end}}', "web.ctmpl", functions=names)
    text = t.render(funcs)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from plugins.template.gotemplate_exec import ExecError, execute
from plugins.template.gotemplate_lex import Source, TemplateSyntaxError
from plugins.template.gotemplate_parse import parse

__all__ = ["ExecError", "GoTemplate", "TemplateSyntaxError"]


class GoTemplate:
    """One parsed template; `render` may be called any number of times."""

    def __init__(self, text: str, name: str, functions: Collection[str],
                 left_delimiter: str | None = None, right_delimiter: str | None = None) -> None:
        self.name = name
        self._source = Source(text, name)
        self._tree = parse(self._source, functions, left_delimiter or "{{",
                           right_delimiter or "}}")

    def render(self, funcs: Mapping[str, Callable[..., Any]], data: Any = None) -> str:
        """The output for these functions; raises `ExecError` naming line and column."""
        return execute(self._tree, self._source, funcs, data)
