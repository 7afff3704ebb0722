"""The control API as an ASGI app (Starlette): routes, request limits, JSON errors.

Rules kept here:
- Every answer is JSON, errors included: ``{"error": "<what went wrong>", "code": "<slug>"}`` with a 4xx
  or 5xx status. Unknown paths are 404, wrong methods 405, malformed input 400.
- Request bodies are capped (``MAX_BODY`` bytes, 413) and must arrive within ``BODY_TIMEOUT_S`` (408);
  both answers close the connection. Slow or garbage clients at the HTTP layer are hypercorn's and h11's
  business (see ``server.py``); nothing a client sends can raise out of this app.
- The app holds no state of the appliance; it asks the ``ControlBackend`` (``backend.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from scion_appliance import __version__
from scion_appliance.control.backend import BadRequest, ControlBackend, ControlError
from scion_appliance.log import get_logger
from scion_appliance.scion.addr import IA, AddressError

MAX_BODY = 64 * 1024
MAX_HEAD = 16 * 1024  # h11 only limits heads that arrive in pieces; this limits them all
BODY_TIMEOUT_S = 5.0
MAX_ID_LEN = 256

log = get_logger("control")

Handler = Callable[[Request], Awaitable[Response]]


class PayloadTooLarge(ControlError):
    status = 413
    code = "payload_too_large"


class RequestTimeout(ControlError):
    status = 408
    code = "request_timeout"


def error(status: int, code: str, message: str, close: bool = False) -> JSONResponse:
    headers = {"Connection": "close"} if close else None
    return JSONResponse({"error": message, "code": code}, status_code=status, headers=headers)


def parse_dst(text: str | None, where: str = "query parameter dst") -> str:
    if not text:
        raise BadRequest(f"{where} is required: an ISD-AS like 1-ff00:0:110")
    try:
        return str(IA.parse(text))
    except AddressError as e:
        raise BadRequest(f"{where}: {e}") from None


async def read_body(request: Request, limit: int | None = None, timeout_s: float | None = None) -> bytes:
    limit = MAX_BODY if limit is None else limit
    timeout_s = BODY_TIMEOUT_S if timeout_s is None else timeout_s
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"request body did not arrive within {timeout_s:g} s") from None
    return b"".join(chunks)


async def read_json(request: Request) -> dict[str, Any]:
    body = await read_body(request)
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"request body is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise BadRequest("request body must be a JSON object")
    return doc


def text_field(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LEN:
        raise BadRequest(f"field {name!r} must be a non-empty string of at most {MAX_ID_LEN} characters")
    return value


def create_app(backend: ControlBackend) -> Starlette:
    """The ASGI app serving the control API for ``backend``."""
    started = time.monotonic()

    def guarded(fn: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            head = sum(len(k) + len(v) + 4 for k, v in request.scope["headers"])
            if head > MAX_HEAD:
                return error(431, "headers_too_large", f"request headers over {MAX_HEAD} bytes", close=True)
            try:
                return await fn(request)
            except ControlError as e:
                close = e.status in (408, 413)
                return error(e.status, e.code, str(e) or e.code.replace("_", " "), close=close)
            except Exception as e:
                log.exception("request.failed", method=request.method, path=request.url.path, error=repr(e))
                return error(500, "internal_error", f"the service failed to answer: {type(e).__name__}")

        return endpoint

    async def health(request: Request) -> Response:
        return JSONResponse(
            {"status": "ok", "version": __version__, "uptime_s": round(time.monotonic() - started, 3)}
        )

    async def status(request: Request) -> Response:
        return JSONResponse(backend.status())

    async def paths(request: Request) -> Response:
        return JSONResponse(backend.paths(parse_dst(request.query_params.get("dst"))))

    async def peers(request: Request) -> Response:
        return JSONResponse(backend.peers())

    async def rekey(request: Request) -> Response:
        name = request.path_params["name"]
        result = backend.rekey(name)
        return JSONResponse({"ok": True, "peer": name, **(result or {})}, status_code=202)

    async def pin(request: Request) -> Response:
        doc = await read_json(request)
        dst = parse_dst(doc.get("dst") if isinstance(doc.get("dst"), str) else None, "field 'dst'")
        path_id = text_field(doc, "path")
        result = backend.pin(dst, path_id)
        return JSONResponse({"ok": True, "dst": dst, "pinned": path_id, **(result or {})})

    async def unpin(request: Request) -> Response:
        doc = await read_json(request)
        dst = parse_dst(doc.get("dst") if isinstance(doc.get("dst"), str) else None, "field 'dst'")
        result = backend.unpin(dst)
        return JSONResponse({"ok": True, "dst": dst, "pinned": None, **(result or {})})

    async def lab_link(request: Request) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        if action not in ("cut", "restore"):
            return error(404, "not_found", f"no such action {action!r} for a lab link: use cut or restore")
        result = backend.lab_link(name, action)
        return JSONResponse({"ok": True, "link": name, "action": action, **(result or {})})

    async def send(request: Request) -> Response:
        dst = parse_dst(request.query_params.get("dst"))
        payload = await read_body(request)
        t0 = time.perf_counter()
        result = dict(await backend.send(dst, payload))
        result.setdefault("elapsed_s", time.perf_counter() - t0)
        result.setdefault("dst", dst)
        result.setdefault("bytes", len(payload))
        return JSONResponse(result)

    routes = [
        Route("/v1/health", guarded(health), methods=["GET"]),
        Route("/v1/status", guarded(status), methods=["GET"]),
        Route("/v1/paths", guarded(paths), methods=["GET"]),
        Route("/v1/peers", guarded(peers), methods=["GET"]),
        Route("/v1/peers/{name}/rekey", guarded(rekey), methods=["POST"]),
        Route("/v1/paths/pin", guarded(pin), methods=["POST"]),
        Route("/v1/paths/unpin", guarded(unpin), methods=["POST"]),
        Route("/v1/lab/links/{name}/{action}", guarded(lab_link), methods=["POST"]),
        Route("/v1/send", guarded(send), methods=["POST"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 404:
            return error(404, "not_found", f"no such endpoint {request.url.path}; see docs/control-api.md")
        if status == 405:
            return error(405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path}")
        detail = exc.detail if isinstance(exc, HTTPException) else "error"
        return error(status, "http_error", str(detail))

    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})
