"""The template engines, pure: Go text/template constructs, consul-template's functions and
data semantics, the reference demo.ctmpl, errors with line and column, Jinja's sandbox and
dependency tracking. No reactor, no files."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.hookspecs import CatalogView, KVItem, NodeInfo, ServiceInstance
from plugins.template.data import (
    FUNCTION_NAMES,
    MISSING,
    DataError,
    DataFunctions,
    Dep,
    FeedSource,
    MissingData,
    service_dep,
)
from plugins.template.gotemplate import ExecError, GoTemplate, TemplateSyntaxError
from plugins.template.gotemplate_funcs import go_float, go_sprintf
from plugins.template.gotemplate_helpers import go_time_format
from plugins.template.jinja import JinjaError, JinjaTemplate
from plugins.template.plugin import shape

REFERENCE = Path("/work/shared/reference/consul-1.8.7/consul-template")

# consul-template 0.20.1's demo template and its output against a real Consul 1.8.7
# (reference/consul-1.8.7/consul-template), kept here so the suite runs without that folder.
DEMO = '''db={{ key "app/config/db" }}
port={{ key "app/config/port" }}
missing={{ keyOrDefault "app/nope" "dflt" }}
{{ range ls "app/config" }}ls {{ .Key }}={{ .Value }}
{{ end }}{{ range tree "app" }}tree {{ .Key }}={{ .Value }}
{{ end }}{{ range service "web" }}svc {{ .ID }} {{ .Name }} {{ .Address }}:{{ .Port }} tags={{ .Tags }} status={{ .Status }}
{{ end }}{{ range service "web|any" }}svcany {{ .ID }} {{ .Address }}:{{ .Port }} status={{ .Status }}
{{ end }}{{ range services }}services {{ .Name }} {{ .Tags }}
{{ end }}{{ range nodes }}node {{ .Node }} {{ .Address }}
{{ end }}
'''
DEMO_OUT = '''db=changed-while-blocking
port=8080
missing=dflt
ls db=changed-while-blocking
ls port=8080
tree config/db=changed-while-blocking
tree config/port=8080
tree new/key=nv
svc web1 web 127.0.0.1:8080 tags=[primary v1] status=passing
svcany web1 127.0.0.1:8080 status=passing
svcany web2 127.0.0.1:8081 status=critical
services consul []
services web [primary secondary v1]
node oracle 127.0.0.1

'''


def instance(sid, name, port, tags=(), status="passing", node="oracle", address="127.0.0.1",
             meta=None):
    return ServiceInstance(node=node, node_address="127.0.0.1", service_id=sid, name=name,
                           address=address, port=port, tags=tuple(tags), meta=meta or {},
                           status=status, datacenter="dc1")


class FakeFeed:
    """A CatalogFeed over a fixed view and KV dict, as the recorded agent held them."""

    def __init__(self, services=None, kv=None):
        self.services = services if services is not None else {
            "consul": (instance("consul", "consul", 8300),),
            "web": (instance("web1", "web", 8080, ("primary", "v1"), meta={"version": "1.0"}),
                    instance("web2", "web", 8081, ("secondary",), "critical"))}
        # The KV store when the demo was recorded: app/other was deleted, app/emptyfolder/
        # is a folder entry, app/new/key came in during a blocking query.
        self.kv = kv if kv is not None else {
            "app/config/db": b"changed-while-blocking", "app/config/port": b"8080",
            "app/emptyfolder/": None, "app/new/key": b"nv", "bin/blob": b"\x01\x02hello",
            "locks/leader": b"me", "txn/a": b"a", "spam_ips": b"10.1.1.1 10.1.1.2"}

    def view(self):
        return CatalogView(index=7, datacenter="dc1", nodes={"oracle": "127.0.0.1"},
                           services=self.services,
                           node_info={"oracle": NodeInfo("oracle", "127.0.0.1", {"rack": "r1"},
                                                         "dc1")})

    def kv_get(self, key):
        return KVItem(key, self.kv[key], 0, 1) if key in self.kv else None

    def kv_list(self, prefix):
        return [KVItem(k, v, 0, 1) for k, v in sorted(self.kv.items()) if k.startswith(prefix)]


def render(text, feed=None, env=None, now=None, **delims):
    data = DataFunctions(FeedSource(feed or FakeFeed(), "oracle"), env, now)
    return GoTemplate(text, "t.ctmpl", FUNCTION_NAMES, **delims).render(data.functions())


# --- the brief's examples and the reference -------------------------------------------

def test_the_three_examples():
    assert render('upstream web { {{range service "web"}}server {{.Address}}:{{.Port}};{{end}} }') \
        == "upstream web { server 127.0.0.1:8080; }"
    assert render("{{range services}}{{.Name}}{{range .Tags}} {{.}}{{end}}{{end}}") \
        == "consulweb primary secondary v1"
    assert render('{{key "spam_ips"}}') == "10.1.1.1 10.1.1.2"


def test_demo_ctmpl_renders_as_consul_template_did():
    assert render(DEMO) == DEMO_OUT


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="reference recordings not available")
def test_embedded_demo_is_the_reference():
    assert (REFERENCE / "demo.ctmpl").read_text() == DEMO
    assert (REFERENCE / "demo.out.once").read_text() == DEMO_OUT


def test_demo_records_the_dependencies_consul_template_watched():
    data = DataFunctions(FeedSource(FakeFeed(), "oracle"))
    GoTemplate(DEMO, "demo.ctmpl", FUNCTION_NAMES).render(data.functions())
    # consul-template's log: "watching 9 dependencies" (kv.block x2, kv.get, kv.list x2,
    # health.service x2, catalog.services, catalog.nodes).
    assert sorted(str(d) for d in data.used) == sorted([
        "kv.get(app/config/db)", "kv.get(app/config/port)", "kv.get(app/nope)",
        "kv.list(app/config)", "kv.list(app)", "health.service(web|passing)",
        "health.service(web|any)", "catalog.services()", "catalog.nodes()"])
    assert data.missing == []


# --- Go text/template constructs --------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("plain text", "plain text"),
    ("a {{- 1 -}} b", "a1b"),
    ("a {{- 1 }} b", "a1 b"),
    ("a\n\n  {{- /* gone */ -}}\n  b", "ab"),
    ("{{/* a\nmulti-line comment */}}x", "x"),
    ("{{-3}}", "-3"),
    ('{{ "quote\\"d\\n" }}|{{ `raw\\n` }}|{{ \'a\' }}|{{ 0x1f }}|{{ 1.5 }}|{{ true }}',
     'quote"d\n|raw\\n|97|31|1.5|true'),
    ("{{ 1000000.0 }} {{ 0.00001 }} {{ 123456.0 }}", "1e+06 1e-05 123456"),
    ("{{ $x := 1 }}{{ $x }}{{ $x = 2 }}{{ $x }}", "12"),
    ("{{ $ }}", "map[a:1 empty:[] list:[x y] m:map[k:v]]"),
    ("{{ .m.k }} {{ .nope }} {{ $.a }}", "v <no value> 1"),
    ("{{ with .m }}{{ .k }}{{ end }}{{ with .nope }}x{{ else }}none{{ end }}", "vnone"),
    ("{{ with $v := .a }}{{ $v }}{{ . }}{{ end }}", "11"),
    ("{{ if .nope }}a{{ else if eq .a 1 }}b{{ else }}c{{ end }}", "b"),
    ("{{ if and .a (not .nope) }}yes{{ end }}", "yes"),
    ("{{ or 0 \"\" \"z\" }} {{ and 1 0 }} {{ and 1 2 }}", "z 0 2"),
    ("{{ range .list }}[{{ . }}]{{ end }}", "[x][y]"),
    ("{{ range $i, $v := .list }}{{ $i }}={{ $v }} {{ end }}", "0=x 1=y "),
    ("{{ range $v := .list }}{{ $v }}{{ end }}", "xy"),
    ("{{ range $k, $v := .m }}{{ $k }}:{{ $v }}{{ end }}", "k:v"),
    ("{{ range .empty }}x{{ else }}empty{{ end }}", "empty"),
    ("{{ range 3 }}{{ . }}{{ end }}", "012"),
    ("{{ range .list }}{{ if eq . \"y\" }}{{ break }}{{ end }}{{ . }}{{ end }}", "x"),
    ("{{ range .list }}{{ if eq . \"x\" }}{{ continue }}{{ end }}{{ . }}{{ end }}", "y"),
    ("{{ $n := 0 }}{{ range .list }}{{ $n = add 1 $n }}{{ end }}{{ $n }}", "2"),
    ("{{ range .list }}{{ $.a }}{{ end }}", "11"),
    ('{{ "a,b" | split "," | join ";" }}', "a;b"),
    ('{{ (index .list 1) | toUpper }}', "Y"),
    ('{{ (index .list 1 | printf "%s!") }}', "y!"),
    ("{{ len .list }} {{ len \"héllo\" }} {{ index .m \"k\" }}", "2 6 v"),
    ("{{ eq 1 2 1 }} {{ ne 1 2 }} {{ lt 1 2 }} {{ le 2 2 }} {{ gt \"b\" \"a\" }} {{ ge 1 2 }}",
     "true true true true true false"),
    ('{{ printf "%5d|%-4s|%q|%v|%.2f|%x|%t" 42 "ab" "q" .list 3.14159 255 true }}',
     '   42|ab  |"q"|[x y]|3.14|ff|true'),
    ('{{ print "a" 1 2 "b" }}', "a1 2b"),
    ("<% .a %>{{ .a }}", "1{{ .a }}"),
])
def test_go_constructs(text, expected):
    data = {"a": 1, "list": ["x", "y"], "m": {"k": "v"}, "empty": []}
    funcs = DataFunctions(FeedSource(FakeFeed())).functions()
    delims = {"left_delimiter": "<%", "right_delimiter": "%>"} if "<%" in text else {}
    assert GoTemplate(text, "t.ctmpl", FUNCTION_NAMES, **delims).render(funcs, data) == expected


@pytest.mark.parametrize("text, message", [
    ('a\nb\n0123456789012345{{ plugin "x" }}', 't.ctmpl:3:20: function "plugin" not supported'),
    ('{{ define "x" }}{{ end }}', 't.ctmpl:1:4: "define" is not supported'),
    ('{{ template "x" }}', 't.ctmpl:1:4: "template" is not supported'),
    ('{{ block "x" . }}{{ end }}', 't.ctmpl:1:4: "block" is not supported'),
    ("x\n  {{ .a ", "t.ctmpl:2:3: unclosed action"),
    ("{{ if .a }}x", "t.ctmpl:1:4: unexpected EOF: {{if}} has no {{end}}"),
    ("{{ end }}", "t.ctmpl:1:4: unexpected {{end}}"),
    ("{{ $y }}", 't.ctmpl:1:4: undefined variable "$y"'),
    ("{{ range $i, $v := .l }}{{ end }}{{ $v }}", 't.ctmpl:1:37: undefined variable "$v"'),
    ('{{ "open }}', "t.ctmpl:1:4: unterminated quoted string"),
    ("{{ break }}", "t.ctmpl:1:4: {{break}} outside {{range}}"),
    ("{{ }}", "t.ctmpl:1:4: missing value for command"),
    ("{{ /* x */ }}", "t.ctmpl:1:4: unexpected '/' in action"),
    ("{{ if }}{{ end }}", "t.ctmpl:1:7: missing value for if"),
])
def test_unsupported_or_broken_templates_fail_with_line_and_column(text, message):
    with pytest.raises(TemplateSyntaxError) as caught:
        GoTemplate(text, "t.ctmpl", FUNCTION_NAMES)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("text, message", [
    ("{{ .a.b }}", "t.ctmpl:1:4: can't evaluate field b in type int"),
    ("{{ .x.y }}", "t.ctmpl:1:4: nil pointer evaluating .y"),
    ("{{ index .l 5 }}", "t.ctmpl:1:4: error calling index: index out of range: 5"),
    ('\n{{ eq 1 "a" }}', "t.ctmpl:2:4: error calling eq: incompatible types for comparison"),
    ("{{ range .a.__class__ }}{{ end }}", "t.ctmpl:1:10: can't evaluate field __class__"),
    ('{{ service "bad name!" }}', "t.ctmpl:1:4: error calling service: health.service: invalid"),
])
def test_runtime_errors_name_line_and_column(text, message):
    template = GoTemplate(text, "t.ctmpl", FUNCTION_NAMES)
    funcs = DataFunctions(FeedSource(FakeFeed())).functions()
    with pytest.raises(ExecError) as caught:
        template.render(funcs, {"a": 1, "l": [1]})
    assert str(caught.value).startswith(message)


def test_printing_follows_go():
    assert [go_float(x) for x in (3.0, 0.5, 1e21, 123456789.0, -0.0001)] == \
        ["3", "0.5", "1e+21", "1.23456789e+08", "-0.0001"]
    assert go_sprintf("%d %s", 1) == "1 %!s(MISSING)"
    assert go_sprintf("%d", 1, 2) == "1%!(EXTRA int=2)"


# --- consul-template's data functions ---------------------------------------------------

def test_service_queries_filters_and_fields():
    assert render('{{ range service "web|passing,critical" }}{{ .ID }} {{ end }}') == "web1 web2 "
    assert render('{{ range service "web" "any" }}{{ .ID }}:{{ .Status }} {{ end }}') \
        == "web1:passing web2:critical "
    assert render('{{ range service "primary.web" }}{{ .ID }}{{ end }}') == "web1"
    assert render('{{ range service "web@dc1" }}{{ .Meta.version }} {{ .NodeAddress }} '
                  '{{ .Node }}{{ end }}') == "1.0 127.0.0.1 oracle"
    assert render('{{ range service "nope" }}x{{ else }}none{{ end }}') == "none"
    with pytest.raises(ExecError, match="only the agent's own datacenter"):
        render('{{ service "web@dc9" }}')
    with pytest.raises(ExecError, match='invalid filter'):
        render('{{ service "web|sick" }}')


def test_warning_is_not_healthy_by_default_as_in_consul_template():
    feed = FakeFeed(services={"web": (instance("w1", "web", 1, status="warning"),
                                      instance("w2", "web", 2, status="maintenance"))})
    assert render('{{ range service "web" }}{{ .ID }}{{ end }}', feed) == ""
    assert render('{{ range service "web|passing,warning" }}{{ .ID }}{{ end }}', feed) == "w1"
    assert render('{{ range service "web|any" }}{{ .Status }} {{ end }}', feed) \
        == "warning maintenance "


def test_node_nodes_and_by_tag():
    assert render("{{ with node }}{{ .Node.Node }}: {{ range .Services }}{{ .Service }}:"
                  "{{ .Port }} {{ end }}{{ end }}") \
        == "oracle: consul:8300 web:8080 web:8081 "
    assert render('{{ with node "ghost" }}x{{ else }}no node{{ end }}') == "no node"
    assert render("{{ range nodes }}{{ .Node }} {{ .Meta.rack }}{{ end }}") == "oracle r1"
    assert render('{{ range $tag, $s := service "web|any" | byTag }}{{ $tag }}='
                  '{{ range $s }}{{ .ID }}{{ end }} {{ end }}') \
        == "primary=web1 secondary=web2 v1=web1 "


def test_kv_functions():
    assert render('{{ keyOrDefault "app/config/port" "x" }} {{ keyExists "app/nope" }} '
                  '{{ keyExists "app/new/key" }}') == "8080 false true"
    assert render('{{ range ls "app" }}{{ .Key }}{{ end }}') == ""  # only folders below
    assert render('{{ range tree "app/" }}{{ .Key }},{{ end }}') \
        == "config/db,config/port,new/key,"
    assert render('{{ range ls "/app/config/" }}{{ .Path }}={{ .Value }},{{ end }}') \
        == "app/config/db=changed-while-blocking,app/config/port=8080,"
    assert render('{{ (tree "app" | explode).config.port }}') == "8080"
    assert render('{{ range $top, $pairs := tree "app" | byKey }}{{ $top }}:'
                  '{{ range $k, $p := $pairs }}{{ $k }}={{ $p.Value }} {{ end }}{{ end }}') \
        == "config:db=changed-while-blocking port=8080 new:key=nv "


def test_a_missing_key_holds_the_render_back():
    data = DataFunctions(FeedSource(FakeFeed(), "oracle"))
    GoTemplate('{{ key "absent" }}', "t", FUNCTION_NAMES).render(data.functions())
    assert [str(d) for d in data.missing] == ["kv.get(absent)"]
    assert data.used == {Dep("kv.get", "absent"): None}


def test_helpers():
    env = {"HOME_DIR": "/home/x"}
    assert render('{{ env "HOME_DIR" }}|{{ env "UNSET" }}', env=env) == "/home/x|"
    assert render('{{ "Web Server" | toLower }} {{ "a" | toUpper }} {{ "  x " | trimSpace }}'
                  '{{ "a.b.c" | replaceAll "." "_" }}') == "web server A xa_b_c"
    assert render('{{ if service "web" | len | eq 1 }}one{{ end }}') == "one"
    assert render('{{ with index (service "web") 0 }}{{ if .Tags | contains "v1" }}'
                  'v1{{ end }}{{ end }}') == "v1"
    assert render("{{ (parseJSON `{\"a\": [1, 2], \"b\": {\"c\": \"d\"}}`).b.c }}") == "d"
    assert render("{{ parseJSON `{\"b\":1,\"a\":[true,null]}` | toJSON }}") \
        == '{"a":[true,null],"b":1}'
    assert render('{{ (index (service "web") 0).Tags | toJSON }}') == '["primary","v1"]'
    assert render('{{ sprintf "%s-%d" "a" 1 }} {{ printf "%03d" 7 }}') == "a-1 007"
    assert render('{{ "a" | regexReplaceAll "(a)" "<$1>" }} {{ "web-1" | regexMatch "^web" }}') \
        == "<a> true"
    assert render('{{ 10 | subtract 3 }} {{ 7 | divide 2 }} {{ loop 3 }}') == "7 3 [0 1 2]"


def test_timestamp_uses_the_clock_it_is_given():
    assert render("{{ timestamp }}", now=lambda: 1700000000.25) == "2023-11-14T22:13:20Z"
    assert render('{{ timestamp "unix" }}', now=lambda: 1700000000.25) == "1700000000"
    assert go_time_format("Mon Jan _2 15:04:05.000 2006 MST", 1700000000.25) \
        == "Tue Nov 14 22:13:20.250 2023 UTC"
    assert go_time_format("02/01/06 3:04PM", 1700000000) == "14/11/23 10:13PM"


def test_service_query_syntax():
    assert service_dep(("v1.2.web@dc2", "passing,warning")) == \
        Dep("health.service", "web", "dc2", "v1.2", ("passing", "warning"))
    with pytest.raises(DataError, match="cannot specify extra keys"):
        service_dep(("web", "any,passing"))


def test_http_answers_shape_into_the_same_values_as_the_feed():
    entries = b'''[{"Node": {"ID": "n1", "Node": "oracle", "Address": "127.0.0.1",
                    "Datacenter": "dc1", "Meta": {"rack": "r1"}},
                   "Service": {"ID": "web2", "Service": "web", "Tags": ["secondary"],
                               "Address": "", "Port": 8081, "Meta": null},
                   "Checks": [{"CheckID": "serfHealth", "Status": "passing"},
                              {"CheckID": "web2-ttl", "Status": "critical"}]}]'''
    any_dep = Dep("health.service", "web", filter=("any",))
    (svc,) = shape(any_dep, 200, entries)
    assert (svc.Address, svc.Port, svc.Status, svc.Tags, svc.NodeID) == \
        ("127.0.0.1", 8081, "critical", ("secondary",), "n1")
    assert shape(Dep("health.service", "web"), 200, entries) == ()
    assert shape(Dep("kv.get", "x"), 404, b"") is None
    assert shape(Dep("kv.get", "x"), 200, b'[{"Key": "x", "Value": null}]') == b""
    pairs = shape(Dep("kv.list", "app"), 200,
                  b'[{"Key": "app/a", "Value": "MQ==", "Flags": 3, "ModifyIndex": 9}]')
    assert (pairs[0].Key, pairs[0].Value, pairs[0].Flags) == ("a", "1", 3)
    assert [s.Tags for s in shape(Dep("catalog.services"), 200,
                                  b'{"web": ["v1", "a", "v1"], "consul": []}')] == [(), ("a", "v1")]


# --- dependency tracking ----------------------------------------------------------------

class CountingSource:
    def __init__(self, values):
        self.values = values
        self.fetches = []

    def fetch(self, dep):
        self.fetches.append(dep)
        if dep not in self.values:
            raise MissingData(str(dep))
        return self.values[dep]


def test_dependencies_are_read_once_per_render_and_missing_ones_recorded():
    dep = Dep("kv.get", "a")
    source = CountingSource({dep: b"1"})
    data = DataFunctions(source)
    text = GoTemplate('{{ key "a" }}{{ key "a" }}{{ keyOrDefault "b" "d" }}', "t",
                      FUNCTION_NAMES).render(data.functions())
    assert text == "11d"
    assert source.fetches == [dep, Dep("kv.get", "b")]
    assert data.used == {dep: b"1", Dep("kv.get", "b"): MISSING}
    assert data.missing == [Dep("kv.get", "b")]


def test_a_render_with_missing_data_still_discovers_every_dependency():
    data = DataFunctions(CountingSource({}))
    GoTemplate('{{ range service "web" }}{{ end }}{{ key "k" }}{{ range ls "p" }}{{ end }}',
               "t", FUNCTION_NAMES).render(data.functions())
    assert [str(d) for d in data.missing] == ["health.service(web|passing)", "kv.get(k)",
                                              "kv.list(p)"]


# --- Jinja ------------------------------------------------------------------------------

def jinja(text, feed=None):
    data = DataFunctions(FeedSource(feed or FakeFeed(), "oracle"))
    return JinjaTemplate(text, "t.j2").render(data.functions())


def test_jinja_has_the_same_functions():
    assert jinja('upstream web { {% for s in service("web") %}server {{ s.Address }}:'
                 '{{ s.Port }};{% endfor %} }\n') == "upstream web { server 127.0.0.1:8080; }\n"
    assert jinja('{{ key("spam_ips") }} {{ keyOrDefault("nope", "d") }} '
                 '{% for p in ls("app/config") %}{{ p.Key }}{% endfor %} '
                 '{{ services()[1].Tags }} {{ join(",", split(" ", "a b")) }}') \
        == "10.1.1.1 10.1.1.2 d dbport [primary secondary v1] a,b"


@pytest.mark.parametrize("text", [
    "{{ ''.__class__.__mro__ }}",
    "{{ service('web')[0].__class__ }}",
    "{{ key.__globals__ }}",
    "{% set x = services() %}{{ x.__len__() }}",
    "{{ cycler.__init__.__globals__ }}",
])
def test_jinja_sandbox_blocks_python_internals(text):
    with pytest.raises(JinjaError, match="unsafe|undefined"):
        jinja(text)


def test_jinja_errors_name_the_line():
    with pytest.raises(JinjaError, match=r"^t.j2:2: "):
        JinjaTemplate("ok\n{% for %}\n", "t.j2")
    with pytest.raises(JinjaError, match=r"^t.j2:3: 'nope' is undefined"):
        jinja("a\nb\n{{ nope }}")
