"""The user CLI, ``openpod``.

The CLI talks to the openpod REST API over HTTP only (see ``docs/api.md``): it never imports the
server's code, so it works the same against a local server or a remote cloud.
"""
