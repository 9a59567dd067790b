"""nginx configurations for tests and benches: a private prefix, no system files, one body."""

_SKELETON = """\
worker_processes 1;
error_log {prefix}/logs/error.log {log_level};
pid {prefix}/logs/nginx.pid;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
{body}
}}
"""


def nginx_conf(prefix, body: str, *, log_level: str = "notice", connections: int = 1024) -> str:
    """A whole nginx.conf whose `http` block holds `body`."""
    return _SKELETON.format(prefix=prefix, body=body, log_level=log_level,
                            connections=connections)


def proxy_body(upstreams, port: int, extra: str = "") -> str:
    """Include the upstreams file and proxy 127.0.0.1:`port` to the `web` upstream."""
    return (f"    include {upstreams};\n"
            f"    server {{\n"
            f"        listen 127.0.0.1:{port};\n{extra}"
            f"        location / {{ proxy_pass http://web; }}\n"
            f"    }}")
