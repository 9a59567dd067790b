"""The template plugin: renders consul-template ``.ctmpl`` files (and Jinja2 templates) from
the catalog and KV store, writes them atomically and runs a command when they change.

Modules: `data` (the data functions and their sources), `gotemplate*` (a Go text/template
engine for the consul-template subset), `jinja` (sandboxed Jinja2), `render` (writing files,
commands, quiescence), `plugin` (the hooks, the agent-side service and the standalone runner
behind ``waypost template``).
"""
