"""What HAProxy reads at start: haproxy.cfg and the error pages it serves from state_dir."""

from __future__ import annotations

from openpod.adapters.edge.files import EdgePaths
from openpod.adapters.edge.model import EdgeSettings

TOKEN_COOKIE = "openpod_token"  # noqa: S105 - the cookie's name, not a secret

# --- pages ---------------------------------------------------------------------------------

_PAGES = {
    401: (
        "This pod is private",
        f"Open it with its access token: an <code>Authorization: Bearer</code> header or "
        f"the <code>{TOKEN_COOKIE}</code> cookie.",
    ),
    404: ("No such pod", "No pod answers at this address: it does not exist or is not running."),
    502: ("Pod is starting", "The pod is not answering on this port yet. Try again shortly."),
    503: ("Pod is starting", "The pod is not answering on this port yet. Try again shortly."),
    504: ("Pod is not answering", "The pod took too long to answer. Try again shortly."),
}


def page_html(status: int) -> str:
    title, message = _PAGES[status]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{status} {title}</title></head>\n"
        f"<body><h1>{title}</h1><p>{message}</p><p><small>openpod edge · {status}</small></p>"
        "</body></html>\n"
    )


def page_statuses() -> list[int]:
    return sorted(_PAGES)


def refused_response() -> str:
    """What HAProxy sends when a pod's port refuses the connection: its own status for that
    is 503, but for users the pod is there and not answering yet, so it is a 502 (a raw
    `errorfile` may carry another status than the one it replaces)."""
    body = page_html(503).encode()
    head = (
        "HTTP/1.1 502 Bad Gateway\r\n"
        "content-type: text/html; charset=utf-8\r\n"
        "cache-control: no-store\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head + body.decode()


# --- haproxy.cfg ---------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def render_config(settings: EdgeSettings, paths: EdgePaths) -> str:
    """haproxy.cfg for one edge. Requests are routed by a map lookup, never by a per-pod
    section, so adding the ten-thousandth pod costs what adding the first did."""
    s, html = settings, 'content-type "text/html; charset=utf-8"'
    header_timeout = min(s.header_timeout, s.client_timeout)
    lines = [
        "# written by openpod at every start; edit EdgeSettings, not this file",
        "global",
        f"    stats socket {paths.admin_socket} mode 600 level admin",
        "    stats timeout 30s",
        "    ssl-default-bind-options ssl-min-ver TLSv1.2",
        "    tune.ssl.default-dh-param 2048",
        "",
        "defaults",
        "    mode http",
        f"    timeout connect {_ms(s.connect_timeout)}",
        f"    timeout client {_ms(s.client_timeout)}",
        f"    timeout server {_ms(s.server_timeout)}",
        f"    timeout tunnel {_ms(max(s.client_timeout, s.server_timeout))}",
        f"    timeout http-request {_ms(header_timeout)}",
        f"    timeout http-keep-alive {_ms(header_timeout)}",
        f"    timeout client-fin {_ms(min(30.0, s.client_timeout))}",
        f"    timeout server-fin {_ms(min(30.0, s.server_timeout))}",
        f"    retries {s.connect_retries}",
    ]
    if s.splice_responses:
        lines.append("    option splice-response")
    lines += [
        f"    http-error status {code} {html} file {paths.page(code)} hdr Cache-Control no-store"
        for code in (502, 504)
    ]
    lines.append(f"    errorfile 503 {paths.refused_response}")
    lines += ["", "frontend edge", f"    bind {s.bind_host}:{s.http_port}"]
    if s.https_port is not None:
        lines.append(
            f"    bind {s.bind_host}:{s.https_port} ssl crt {s.certificate} alpn h2,http/1.1"
        )
    # Without a TLS listener every request arrived over plain HTTP: a constant is cheaper.
    proto = "http" if s.https_port is None else "%[ssl_fc,iif(https,http)]"
    acl_cookie = f"    acl has_cookie req.cook_cnt({TOKEN_COOKIE}) gt 0"
    strip_cookie = [
        f"    http-request replace-header Cookie ^\\s*{TOKEN_COOKIE}=[^;]*(;\\s*)?(.*)$ \\2 "
        "if has_cookie",
        f"    http-request replace-header Cookie ^(.*?);\\s*{TOKEN_COOKIE}=[^;]*(.*)$ \\1\\2 "
        "if has_cookie",
        f"    http-request replace-header Cookie ^(.*?);\\s*{TOKEN_COOKIE}=[^;]*(.*)$ \\1\\2 "
        "if has_cookie",
        f'    http-request return status 400 content-type text/plain string "too many '
        f'{TOKEN_COOKIE} cookies" if has_cookie',
        "    http-request del-header Cookie if { req.fhdr(cookie) -m len 0 }",
    ]
    lines += [
        # Which pod: the Host (or :authority) without its port, lower-cased, exactly matched.
        "    http-request set-var(txn.pod) req.hdr(host),field(1,:),lower,"
        f"map_str({paths.routes_map})",
        f"    http-request return status 404 {html} file {paths.page(404)} "
        "hdr Cache-Control no-store unless { var(txn.pod) -m found }",
        # This edge is the first hop: what the client claims about forwarding is replaced
        # (`option forwardfor` appends, so the client's own X-Forwarded-For goes first).
        "    http-request del-header X-Forwarded-For",
        "    option forwardfor",
        f"    http-request set-header X-Forwarded-Proto {proto}",
        "    http-request set-header X-Forwarded-Host %[req.hdr(host)]",
        "    http-request set-dst var(txn.pod),field(1,:)",
        "    http-request set-dst-port var(txn.pod),field(2,:)",
        # A private pod's route carries sha256(its token) as a third field. Its checks live in
        # their own backend so that a public pod's request never evaluates them.
        "    use_backend private_pods if { var(txn.pod),field(3,:) -m len 1: }",
        # A public pod never sees the edge's cookie either (it may be another pod's token).
        acl_cookie,
        "    use_backend public_pods_cookie if has_cookie",
        "    default_backend pods",
        "",
        "backend pods",
        # Connections are keyed by destination, so reuse never crosses pods.
        "    http-reuse always",
        "    server pod 0.0.0.0:0",
        "",
        "backend public_pods_cookie",
        "    http-reuse always",
        acl_cookie,
        *strip_cookie,
        "    server pod 0.0.0.0:0",
        "",
        "backend private_pods",
        "    http-reuse always",
        acl_cookie,
        # The request proves it knows the token: by a Bearer header or the edge's cookie.
        "    http-request set-var(txn.need) var(txn.pod),field(3,:)",
        "    acl has_bearer req.fhdr(authorization) -m beg -i bearer\\ ",
        "    http-request set-var(txn.tok_h) req.fhdr(authorization),bytes(7),sha2(256),hex,lower "
        "if has_bearer",
        f"    http-request set-var(txn.tok_c) req.cook({TOKEN_COOKIE}),sha2(256),hex,lower "
        "if has_cookie",
        "    acl bearer_ok var(txn.tok_h),secure_memcmp(txn.need)",
        "    acl cookie_ok var(txn.tok_c),secure_memcmp(txn.need)",
        f"    http-request return status 401 {html} file {paths.page(401)} "
        "hdr WWW-Authenticate Bearer hdr Cache-Control no-store if !bearer_ok !cookie_ok",
        # The edge's credentials stop here: the pod never sees the token it was opened with.
        "    http-request del-header Authorization if bearer_ok",
        *strip_cookie,
        "    server pod 0.0.0.0:0",
        "",
    ]
    return "\n".join(lines)
