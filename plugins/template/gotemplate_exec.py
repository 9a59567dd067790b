"""The executor of the Go text/template engine: walks the parsed tree with data and functions.

Owns: Go's evaluation rules: dot and ``$``, variables and their scopes, field access on
records and maps, function calls with the piped value as the last argument, lazy ``and``/
``or``, ``if``/``with``/``range`` (lists, maps in key order, integers) with ``else``,
``break`` and ``continue``, and printing values as Go does. Errors name line and column.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from plugins.template import gotemplate_parse as ast
from plugins.template.gotemplate_funcs import go_str, truth
from plugins.template.gotemplate_lex import Source

_NONE = object()  # no piped value


class ExecError(Exception):
    """Rendering failed; ``str()`` is ``name:line:col: message``."""

    def __init__(self, message: str, name: str = "", line: int = 0, col: int = 0) -> None:
        self.message, self.name, self.line, self.col = message, name, line, col
        super().__init__(f"{name}:{line}:{col}: {message}")


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def execute(tree: list[ast.Node], source: Source, funcs: Mapping[str, Callable[..., Any]],
            data: Any = None) -> str:
    """Render ``tree``; ``data`` is the initial dot and ``$``. Raises `ExecError`."""
    state = _State(source, funcs, data)
    state.walk_list(data, tree)
    return "".join(state.out)


class _State:
    def __init__(self, source: Source, funcs: Mapping[str, Callable[..., Any]], data: Any) -> None:
        self.src = source
        self.funcs = funcs
        self.out: list[str] = []
        self.vars: list[list[Any]] = [["$", data]]

    def error(self, message: str, node: ast.Node) -> ExecError:
        line, col = self.src.where(node.pos)
        return ExecError(message, self.src.name, line, col)

    # --- variables -----------------------------------------------------------------------

    def lookup(self, name: str, node: ast.Node) -> Any:
        for entry in reversed(self.vars):
            if entry[0] == name:
                return entry[1]
        raise self.error(f'undefined variable "{name}"', node)

    def set_var(self, name: str, value: Any, assign: bool) -> None:
        if assign:
            for entry in reversed(self.vars):
                if entry[0] == name:
                    entry[1] = value
                    return
        self.vars.append([name, value])

    # --- statements ----------------------------------------------------------------------

    def walk_list(self, dot: Any, nodes: list[ast.Node]) -> None:
        for node in nodes:
            self.walk(dot, node)

    def walk(self, dot: Any, node: ast.Node) -> None:
        if isinstance(node, ast.Text):
            self.out.append(node.text)
        elif isinstance(node, ast.Action):
            value = self.pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.out.append(go_str(value, top=True))
        elif isinstance(node, ast.Control):
            mark = len(self.vars)
            try:
                if node.kind == "range":
                    self.range(dot, node)
                else:
                    value = self.pipeline(dot, node.pipe)
                    if truth(value):
                        self.walk_list(value if node.kind == "with" else dot, node.body)
                    elif node.else_body is not None:
                        self.walk_list(dot, node.else_body)
            finally:
                del self.vars[mark:]
        elif isinstance(node, ast.Break):
            raise _Break()
        elif isinstance(node, ast.Continue):
            raise _Continue()
        else:  # pragma: no cover - the parser makes no other statements
            raise self.error(f"unknown node {type(node).__name__}", node)

    def range(self, dot: Any, node: ast.Control) -> None:
        value = self.pipeline(dot, node.pipe, declare=False)
        items = self.range_items(value, node)
        decl = node.pipe.decl
        for key, item in items:
            mark = len(self.vars)
            if len(decl) == 1:
                self.set_var(decl[0], item, node.pipe.assign)
            elif len(decl) == 2:
                self.set_var(decl[0], key, node.pipe.assign)
                self.set_var(decl[1], item, node.pipe.assign)
            try:
                self.walk_list(item, node.body)
            except _Break:
                break
            except _Continue:
                pass
            finally:
                del self.vars[mark:]
        if not items and node.else_body is not None:
            self.walk_list(dot, node.else_body)

    def range_items(self, value: Any, node: ast.Node) -> list[tuple[Any, Any]]:
        if value is None:
            return []
        if isinstance(value, dict):
            return [(k, value[k]) for k in sorted(value, key=lambda k: (str(type(k)), k))]
        if isinstance(value, bool):
            raise self.error("range can't iterate over bool", node)
        if isinstance(value, int):
            return [(i, i) for i in range(value)]
        if isinstance(value, (str, bytes, float)) or dataclasses.is_dataclass(value):
            raise self.error(f"range can't iterate over {go_str(value)}", node)
        try:
            return list(enumerate(value))
        except TypeError:
            raise self.error(f"range can't iterate over {go_str(value)}", node) from None

    # --- expressions ---------------------------------------------------------------------

    def pipeline(self, dot: Any, pipe: ast.Pipe, declare: bool = True) -> Any:
        value: Any = _NONE
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, value)
        if declare:
            for name in pipe.decl:
                self.set_var(name, value, pipe.assign)
        return value

    def command(self, dot: Any, cmd: ast.Command, final: Any) -> Any:
        first, args = cmd.args[0], cmd.args[1:]
        if isinstance(first, ast.Ident):
            return self.call(dot, first, args, final)
        if isinstance(first, ast.Field):
            return self.fields(dot, dot, first.names, args, final, first)
        if isinstance(first, ast.Variable) and first.fields:
            base = self.lookup(first.name, first)
            return self.fields(dot, base, first.fields, args, final, first)
        if isinstance(first, ast.Chain):
            base = self.arg(dot, first.node)
            return self.fields(dot, base, first.fields, args, final, first)
        if args or final is not _NONE:
            raise self.error("can't give argument to non-function", first)
        if isinstance(first, ast.Nil):
            raise self.error("nil is not a command", first)
        return self.arg(dot, first)

    def arg(self, dot: Any, node: ast.Node) -> Any:
        if isinstance(node, ast.Dot):
            return dot
        if isinstance(node, ast.Nil):
            return None
        if isinstance(node, ast.Literal):
            return node.value
        if isinstance(node, ast.Field):
            return self.fields(dot, dot, node.names, [], _NONE, node)
        if isinstance(node, ast.Variable):
            value = self.lookup(node.name, node)
            return self.fields(dot, value, node.fields, [], _NONE, node) if node.fields else value
        if isinstance(node, ast.Ident):
            return self.call(dot, node, [], _NONE)
        if isinstance(node, ast.Pipe):
            return self.pipeline(dot, node)
        if isinstance(node, ast.Chain):
            return self.fields(dot, self.arg(dot, node.node), node.fields, [], _NONE, node)
        raise self.error(f"can't evaluate {type(node).__name__}", node)  # pragma: no cover

    def fields(self, dot: Any, receiver: Any, names: list[str], args: list[ast.Node],
               final: Any, node: ast.Node) -> Any:
        for i, name in enumerate(names):
            last = i == len(names) - 1
            receiver = self.field(dot, receiver, name, args if last else [],
                                  final if last else _NONE, node)
        return receiver

    def field(self, dot: Any, receiver: Any, name: str, args: list[ast.Node], final: Any,
              node: ast.Node) -> Any:
        has_args = bool(args) or final is not _NONE
        if receiver is None:
            raise self.error(f"nil pointer evaluating .{name}", node)
        if isinstance(receiver, dict):
            if has_args:
                raise self.error(f"{name} is not a method but has arguments", node)
            return receiver.get(name)
        # As in Go, only exported (capitalised) names are reachable: never Python internals.
        value = getattr(receiver, name, _NONE) if name[:1].isupper() else _NONE
        if value is _NONE:
            raise self.error(f"can't evaluate field {name} in type {_type_name(receiver)}", node)
        if callable(value):
            argv = [self.arg(dot, a) for a in args] + ([] if final is _NONE else [final])
            try:
                return value(*argv)
            except Exception as exc:  # noqa: BLE001 - reported with the position
                raise self.error(f"error calling {name}: {exc}", node) from None
        if has_args:
            raise self.error(f"{name} has arguments but cannot be invoked as function", node)
        return value

    def call(self, dot: Any, ident: ast.Ident, args: list[ast.Node], final: Any) -> Any:
        name = ident.name
        if name in ("and", "or"):
            return self.and_or(dot, name, args, final, ident)
        func = self.funcs.get(name)
        if func is None:
            raise self.error(f'function "{name}" not defined', ident)
        argv = [self.arg(dot, a) for a in args] + ([] if final is _NONE else [final])
        try:
            return func(*argv)
        except ExecError:
            raise
        except Exception as exc:  # noqa: BLE001 - a helper's failure, reported with position
            raise self.error(f"error calling {name}: {exc}", ident) from None

    def and_or(self, dot: Any, name: str, args: list[ast.Node], final: Any,
               ident: ast.Ident) -> Any:
        # Go evaluates and/or lazily: the first deciding argument is the result.
        thunks: list[Callable[[], Any]] = [lambda a=a: self.arg(dot, a) for a in args]
        if final is not _NONE:
            thunks.append(lambda: final)
        if not thunks:
            raise self.error(f"wrong number of args for {name}: want at least 1 got 0", ident)
        value = None
        for thunk in thunks:
            value = thunk()
            if truth(value) != (name == "and"):
                return value
        return value


def _type_name(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[]interface {}"
    return {str: "string", int: "int", float: "float64", bool: "bool"}.get(
        type(value), "*" + type(value).__name__)
