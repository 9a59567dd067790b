"""The bundled nginx plugin: upstream blocks rendered from the catalog, checked and reloaded.

``plugin`` holds the hooks and the service, ``render`` the pure rendering, ``apply`` the file
and process work. See docs/nginx.md.
"""
