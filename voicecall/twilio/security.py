"""Twilio request signatures, and the rule that an unsigned server stays on loopback.

What Twilio signs (its X-Twilio-Signature request validation): a webhook POST is signed over the exact URL it requested
(our *public* URL, not the local one behind a proxy) plus the form fields; the Media Streams
WebSocket upgrade is signed over the `wss://` URL from the TwiML with no parameters (a GET has
no body, and the stream URL carries no query string). `RequestValidator` does the HMAC.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from aiohttp import web
from twilio.request_validator import RequestValidator

from voicecall.config import ServerConfig

log = logging.getLogger("voicecall.telephony")

SIGNATURE_HEADER = "X-Twilio-Signature"  # aiohttp headers are case-insensitive (WS sends it lowercase)


class UnsafeBindError(RuntimeError):
    """Refusing to serve unsigned traffic on a non-loopback address (not recoverable: fix config)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(cfg: ServerConfig, environ: Mapping[str, str] = os.environ) -> None:
    """Called before binding: without a Twilio token anyone could drive calls, so loopback only."""
    if environ.get(cfg.auth_token_env) or cfg.allow_unsigned or is_loopback(cfg.host):
        return
    raise UnsafeBindError(
        f"server.host = {cfg.host!r} is not loopback and ${cfg.auth_token_env} is not set: "
        "anyone could place calls without Twilio's signature. Set the token (server.auth_token_env), "
        "bind 127.0.0.1 behind a tunnel, or set server.allow_unsigned = true if you trust the network."
    )


class Signatures:
    """Checks `X-Twilio-Signature` when a token is configured; allows everything otherwise."""

    def __init__(self, cfg: ServerConfig, environ: Mapping[str, str] = os.environ) -> None:
        token = environ.get(cfg.auth_token_env, "")
        self._validator = RequestValidator(token) if token else None
        self._public = urlsplit(cfg.public_url.rstrip("/")) if cfg.public_url else None

    @property
    def enabled(self) -> bool:
        return self._validator is not None

    def public_host(self, request: web.Request) -> str:
        """Host name Twilio reaches us at, without a port (the stream URL uses wss's 443)."""
        if self._public is not None and self._public.hostname:
            return self._public.hostname
        host = request.url.host or "localhost"
        return f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets

    def public_http_url(self, request: web.Request) -> str:
        """The URL Twilio requested for this webhook, as it signed it."""
        if self._public is not None:
            return f"{self._public.scheme}://{self._public.netloc}{self._public.path}{request.path_qs}"
        scheme = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
        return f"{scheme}://{request.host}{request.path_qs}"

    def stream_url(self, request: web.Request, path: str) -> str:
        """The `wss://` URL we put in TwiML; Twilio signs the upgrade over exactly this."""
        prefix = self._public.path if self._public is not None else ""
        return f"wss://{self.public_host(request)}{prefix}{path}"

    async def check_webhook(self, request: web.Request) -> dict[str, str]:
        """Form fields of a signed POST; raises 403 if the signature does not match."""
        form = await request.post()
        params = {k: v for k, v in form.items() if isinstance(v, str)}
        if self._validator is not None:
            url = self.public_http_url(request)
            if not self._validator.validate(url, params, request.headers.get(SIGNATURE_HEADER, "")):
                self._reject(request, url)
        return params

    def check_upgrade(self, request: web.Request, path: str) -> None:
        """Before answering 101: the upgrade must carry Twilio's signature of the stream URL."""
        if self._validator is None:
            return
        url = self.stream_url(request, path)
        if not self._validator.validate(url, {}, request.headers.get(SIGNATURE_HEADER, "")):
            self._reject(request, url)

    @staticmethod
    def _reject(request: web.Request, url: str) -> None:
        present = "a wrong" if SIGNATURE_HEADER in request.headers else "no"
        log.warning("403 %s %s from %s: %s X-Twilio-Signature for %s (check server.public_url)",
                    request.method, request.path, request.remote, present, url)
        raise web.HTTPForbidden(text="invalid Twilio signature\n")
