"""The parser of the Go text/template engine: tokens to a tree of nodes.

Owns: the node types, the grammar of actions (pipelines, commands, operands, control
structures), variable scoping (an undefined variable is a parse error, as in Go) and the
parse-time check that every function exists. What the engine does not support (``define``,
``template``, ``block``, unknown functions) fails here with the line and column, so a template
never renders half-understood.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from plugins.template import gotemplate_lex as lx
from plugins.template.gotemplate_lex import Source, Token


@dataclass
class Node:
    pos: int


@dataclass
class Text(Node):
    text: str


@dataclass
class Dot(Node):
    pass


@dataclass
class Nil(Node):
    pass


@dataclass
class Literal(Node):
    value: object  # str, int, float or bool


@dataclass
class Field(Node):
    names: list[str]  # .A.B on dot


@dataclass
class Variable(Node):
    name: str
    fields: list[str] = field(default_factory=list)  # $x.A.B


@dataclass
class Ident(Node):
    name: str  # a function


@dataclass
class Chain(Node):
    node: Node  # (pipeline).A.B
    fields: list[str]


@dataclass
class Command(Node):
    args: list[Node]


@dataclass
class Pipe(Node):
    decl: list[str]
    assign: bool  # "=" rather than ":="
    cmds: list[Command]


@dataclass
class Action(Node):
    pipe: Pipe


@dataclass
class Control(Node):
    kind: str  # if | range | with
    pipe: Pipe
    body: list[Node]
    else_body: list[Node] | None


@dataclass
class Break(Node):
    pass


@dataclass
class Continue(Node):
    pass


UNSUPPORTED = {"define", "template", "block"}


def parse(source: Source, functions: Collection[str], left: str = "{{",
          right: str = "}}") -> list[Node]:
    """Parse the whole template; raises `TemplateSyntaxError`."""
    return _Parser(source, lx.lex(source, left, right), functions).run()


class _Parser:
    def __init__(self, source: Source, tokens: list[Token], functions: Collection[str]) -> None:
        self.src = source
        self.tokens = tokens
        self.i = 0
        self.functions = functions
        self.scopes: list[set[str]] = [{"$"}]
        self.range_depth = 0

    # --- helpers -------------------------------------------------------------------------

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def next(self) -> Token:
        token = self.peek()
        self.i += 1
        return token

    def error(self, message: str, token: Token) -> lx.TemplateSyntaxError:
        return self.src.error(message, token.pos)

    def expect(self, kind: str, context: str) -> Token:
        token = self.next()
        if token.kind != kind:
            raise self.error(f"unexpected {_describe(token)} in {context}", token)
        return token

    def defined(self, name: str) -> bool:
        return any(name in scope for scope in self.scopes)

    # --- lists and actions ---------------------------------------------------------------

    def run(self) -> list[Node]:
        nodes, end = self.parse_list()
        if end is not None:
            raise self.error(f"unexpected {{{{{end.value}}}}}", end)
        return nodes

    def parse_list(self) -> tuple[list[Node], Token | None]:
        """Nodes up to EOF, or up to an ``end``/``else`` keyword (returned, not consumed
        beyond the keyword itself)."""
        nodes: list[Node] = []
        while True:
            token = self.next()
            if token.kind == lx.EOF:
                self.i -= 1
                return nodes, None
            if token.kind == lx.TEXT:
                nodes.append(Text(token.pos, str(token.value)))
                continue
            head = self.peek()
            if head.kind == lx.KEYWORD and head.value in ("end", "else"):
                self.next()
                return nodes, head
            nodes.append(self.parse_action(token))

    def parse_action(self, left: Token) -> Node:
        head = self.peek()
        if head.kind == lx.RIGHT:
            raise self.error("missing value for command", head)
        if head.kind == lx.KEYWORD:
            self.next()
            word = str(head.value)
            if word in UNSUPPORTED:
                raise self.error(f'"{word}" is not supported (one template per file)', head)
            if word in ("break", "continue"):
                if not self.range_depth:
                    raise self.error(f"{{{{{word}}}}} outside {{{{range}}}}", head)
                self.expect(lx.RIGHT, word)
                return Break(head.pos) if word == "break" else Continue(head.pos)
            return self.parse_control(word, head)
        pipe = self.parse_pipeline("command", left)
        self.expect(lx.RIGHT, "command")
        return Action(left.pos, pipe)

    def parse_control(self, kind: str, head: Token) -> Control:
        self.scopes.append(set())
        try:
            pipe = self.parse_pipeline(kind, head, allow_two=kind == "range")
            self.expect(lx.RIGHT, kind)
            if kind == "range":
                self.range_depth += 1
            try:
                body, end = self.parse_list()
            finally:
                if kind == "range":
                    self.range_depth -= 1
            else_body = None
            if end is None:
                raise self.error(f"unexpected EOF: {{{{{kind}}}}} has no {{{{end}}}}", head)
            if end.value == "else":
                else_body = self.parse_else(kind, end)
            else:
                self.expect(lx.RIGHT, "end")
            return Control(head.pos, kind, pipe, body, else_body)
        finally:
            self.scopes.pop()

    def parse_else(self, kind: str, else_token: Token) -> list[Node]:
        nxt = self.peek()
        # {{else if x}} / {{else with x}} chain into one more control that shares the {{end}}.
        if nxt.kind == lx.KEYWORD and nxt.value in ("if", "with") and nxt.value == kind:
            self.next()
            return [self.parse_control(kind, nxt)]
        self.expect(lx.RIGHT, "else")
        body, end = self.parse_list()
        if end is None:
            raise self.error(f"unexpected EOF: {{{{{kind}}}}} has no {{{{end}}}}", else_token)
        if end.value != "end":
            raise self.error("expected {{end}}; found {{else}}", end)
        self.expect(lx.RIGHT, "end")
        return body

    # --- pipelines -----------------------------------------------------------------------

    def parse_pipeline(self, context: str, start: Token, allow_two: bool = False) -> Pipe:
        decl, assign = self.parse_declarations(allow_two)
        cmds: list[Command] = []
        while True:
            cmds.append(self.parse_command(context))
            if self.peek().kind != lx.PIPE:
                break
            self.next()
        for name in decl:
            if assign:
                if not self.defined(name):
                    raise self.error(f'undefined variable "{name}"', start)
            else:
                self.scopes[-1].add(name)
        return Pipe(start.pos, decl, assign, cmds)

    def parse_declarations(self, allow_two: bool) -> tuple[list[str], bool]:
        first, second = self.peek(), self.peek(1)
        if first.kind != lx.VARIABLE:
            return [], False
        if second.kind in (lx.DECLARE, lx.ASSIGN):
            self.i += 2
            return [str(first.value)], second.kind == lx.ASSIGN
        if second.kind == lx.COMMA:
            third, fourth = self.peek(2), self.peek(3)
            if third.kind == lx.VARIABLE and fourth.kind in (lx.DECLARE, lx.ASSIGN):
                if not allow_two:
                    raise self.error("too many declarations", second)
                self.i += 4
                return [str(first.value), str(third.value)], fourth.kind == lx.ASSIGN
        return [], False

    def parse_command(self, context: str) -> Command:
        args: list[Node] = []
        start = self.peek()
        while self.peek().kind not in (lx.PIPE, lx.RIGHT, lx.RPAREN, lx.EOF):
            args.append(self.parse_operand())
        if not args:
            raise self.error(f"missing value for {context}", self.peek())
        return Command(start.pos, args)

    def parse_operand(self) -> Node:
        node = self.parse_term()
        fields: list[str] = []
        while self.peek().kind == lx.FIELD and not self.peek().space_before:
            fields.append(str(self.next().value))
        if not fields:
            return node
        if isinstance(node, Field):
            return Field(node.pos, node.names + fields)
        if isinstance(node, Variable):
            return Variable(node.pos, node.name, node.fields + fields)
        if isinstance(node, (Literal, Nil, Dot)):
            raise self.error(f"unexpected .{fields[0]} after term", self.peek(-1))
        return Chain(node.pos, node, fields)

    def parse_term(self) -> Node:
        token = self.next()
        kind = token.kind
        if kind == lx.DOT:
            return Dot(token.pos)
        if kind == lx.FIELD:
            return Field(token.pos, [str(token.value)])
        if kind == lx.VARIABLE:
            if not self.defined(str(token.value)):
                raise self.error(f'undefined variable "{token.value}"', token)
            return Variable(token.pos, str(token.value))
        if kind in (lx.STRING, lx.NUMBER, lx.BOOL):
            return Literal(token.pos, token.value)
        if kind == lx.NIL:
            return Nil(token.pos)
        if kind == lx.IDENT:
            if token.value not in self.functions:
                raise self.error(f'function "{token.value}" not supported', token)
            return Ident(token.pos, str(token.value))
        if kind == lx.LPAREN:
            pipe = self.parse_pipeline("parenthesized pipeline", token)
            self.expect(lx.RPAREN, "parenthesized pipeline")
            return pipe
        if kind == lx.KEYWORD:
            raise self.error(f'unexpected keyword "{token.value}" in operand', token)
        raise self.error(f"unexpected {_describe(token)} in operand", token)


def _describe(token: Token) -> str:
    names = {lx.RIGHT: "right delimiter", lx.EOF: "end of template", lx.LEFT: "left delimiter"}
    if token.kind in names:
        return names[token.kind]
    if token.value is None:
        return f'"{token.kind}"'
    return f"{token.kind} {token.value!r}"
