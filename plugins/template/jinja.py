"""Jinja2 templates with the same data functions as the Go syntax, in Jinja's sandbox.

A template is chosen for Jinja by its extension (``.j2``, ``.jinja``) or ``syntax: "jinja"``.
The functions are globals (``{% for s in service("web") %}{{ s.Address }}{% endfor %}``).
The environment is Jinja's immutable sandbox: templates cannot reach Python internals
(``__class__``, ``__globals__`` ...) or change the data they are given. Undefined names are
errors rather than empty text, so a typo never renders a silently wrong file.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import FunctionLoader, StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment


class JinjaError(Exception):
    """A Jinja template failed to parse or render; ``str()`` is ``name:line: message``."""


class JinjaTemplate:
    """One parsed Jinja template; `render` may be called any number of times."""

    def __init__(self, text: str, name: str) -> None:
        self.name = name
        # keep_trailing_newline: the file ends exactly as the template does, as in Go.
        # The loader names the source after the template, so tracebacks carry its lines.
        loader = FunctionLoader(lambda _: (text, name, lambda: True))
        env = ImmutableSandboxedEnvironment(loader=loader,
                                            undefined=StrictUndefined, autoescape=False,
                                            keep_trailing_newline=True)
        try:
            self._template = env.get_template(name)
        except TemplateSyntaxError as exc:
            raise JinjaError(f"{name}:{exc.lineno}: {exc.message}") from None

    def render(self, funcs: Mapping[str, Callable[..., Any]]) -> str:
        """The output with ``funcs`` as globals; raises `JinjaError` naming the line."""
        try:
            return self._template.render(**funcs)
        except TemplateError as exc:
            raise JinjaError(f"{self.name}:{self._line()}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a helper's failure, reported with its line
            raise JinjaError(f"{self.name}:{self._line()}: {type(exc).__name__}: {exc}") from None

    def _line(self) -> int | str:
        # Jinja rewrites tracebacks so template frames carry the template's name and line.
        tb = sys.exc_info()[2]
        line: int | str = "?"
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == self.name:
                line = tb.tb_lineno
            tb = tb.tb_next
        return line
