"""The Toxiproxy 2.x HTTP API on aiohttp: same routes, field names, defaults, status codes and JSON error bodies.

Why mimic upstream down to its quirks (POST as PATCH, the toxic defaults, ``{"error", "status"}`` bodies, 204 on
delete/reset, 201 on proxy create but 200 on toxic create): every Toxiproxy client in the wild, toxiproxy-python
included, must drive this server unchanged. Deliberate deviations, each because upstream's answer is a crash or a
500 for what is really bad input: a listen port in use is 409 (upstream: 500), a malformed ``listen``/``upstream``,
negative or non-integer attributes, toxicity outside [0, 1] and duplicate names inside one ``/populate`` are 400.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from harness.faultproxy.errors import ApiError, bad_request, missing_field
from harness.faultproxy.metrics import Metrics
from harness.faultproxy.proxy import ProxyCollection, split_hostport
from harness.faultproxy.toxics import parse_new_toxic

log = logging.getLogger("faultproxy.api")

#: The Toxiproxy release whose API this server speaks.
TOXIPROXY_API_VERSION = "2.12.0"

COLLECTION: web.AppKey[ProxyCollection] = web.AppKey("collection", ProxyCollection)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


def decode_body(raw: bytes) -> Any:
    """Decode the first JSON value like Go's ``json.Decoder`` (trailing bytes ignored, NaN rejected)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(f"invalid UTF-8: {exc.reason}") from exc
    text = text.lstrip(" \t\r\n")
    if not text:
        raise bad_request("EOF")
    try:
        value, _ = json.JSONDecoder(parse_constant=_reject_constant).raw_decode(text)
    except json.JSONDecodeError as exc:
        raise bad_request(f"{exc.msg} at offset {exc.pos}") from exc
    except ValueError as exc:
        raise bad_request(str(exc)) from exc
    except RecursionError as exc:   # Go's decoder stops at depth 10000 with the same complaint
        raise bad_request("exceeded max depth") from exc
    return value


def _field(body: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise bad_request(f"json: cannot unmarshal {type(value).__name__} into Go struct field "
                          f"Proxy.{key} of type {'bool' if kind is bool else 'string'}")
    return value


def _proxy_input(body: Any, name: str, listen: str, upstream: str, enabled: bool) -> tuple[str, str, str, bool]:
    if not isinstance(body, dict):
        raise bad_request("json: cannot unmarshal into Go value of type toxiproxy.Proxy")
    return (_field(body, "name", str, name), _field(body, "listen", str, listen),
            _field(body, "upstream", str, upstream), _field(body, "enabled", bool, enabled))


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type="application/json")


def _error(exc: ApiError) -> web.Response:
    return _json(exc.to_json(), exc.status)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.headers.get("User-Agent", "").startswith("Mozilla/"):
        return web.Response(status=403, text="User agent not allowed\n")  # upstream's anti-CSRF guard
    try:
        return await handler(request)
    except ApiError as exc:
        log.info("%s %s -> %d %s", request.method, request.path, exc.status, exc.message)
        return _error(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(ApiError(exc.reason.lower(), exc.status))
    except Exception as exc:  # the server must keep serving other proxies whatever one request does
        log.exception("%s %s failed", request.method, request.path)
        return _error(ApiError(f"internal error: {exc}", 500))


async def _body(request: web.Request) -> Any:
    return decode_body(await request.read())


# -- proxies ------------------------------------------------------------------------------------------------
async def proxy_index(request: web.Request) -> web.Response:
    coll = request.app[COLLECTION]
    return _json({name: p.to_json() for name, p in coll.proxies.items()})


async def proxy_create(request: web.Request) -> web.Response:
    coll = request.app[COLLECTION]
    name, listen, upstream, enabled = _proxy_input(await _body(request), "", "", "", True)
    if not name:
        raise missing_field("name")
    if not upstream:
        raise missing_field("upstream")
    async with coll.lock:
        proxy = await coll.add(name, listen, upstream, enabled)
    return _json(proxy.to_json(), 201)


async def populate(request: web.Request) -> web.Response:
    coll = request.app[COLLECTION]
    body = await _body(request)
    if not isinstance(body, list):
        raise bad_request("json: cannot unmarshal object into Go value of type []struct")
    inputs: list[tuple[str, str, str, bool]] = []
    seen: set[str] = set()
    for i, item in enumerate(body, start=1):
        name, listen, upstream, enabled = _proxy_input(item, "", "", "", True)
        if not name:
            raise missing_field(f"name at proxy {i}")
        if not upstream:
            raise missing_field(f"upstream at proxy {i}")
        if name in seen:
            raise ApiError(f"duplicate proxy name {name!r}", 400)
        seen.add(name)
        split_hostport(upstream, "upstream")
        if enabled:
            split_hostport(listen, "listen")
        inputs.append((name, listen, upstream, enabled))
    done: list[dict[str, Any]] = []
    async with coll.lock:
        for name, listen, upstream, enabled in inputs:
            try:
                proxy = await coll.add_or_replace(name, listen, upstream, enabled)
            except ApiError as exc:
                return _json({**exc.to_json(), "proxies": done}, exc.status)
            done.append(proxy.to_json())
    return _json({"proxies": done}, 201)


async def proxy_show(request: web.Request) -> web.Response:
    return _json(request.app[COLLECTION].get(request.match_info["proxy"]).to_json())


async def proxy_update(request: web.Request) -> web.Response:
    coll = request.app[COLLECTION]
    proxy = coll.get(request.match_info["proxy"])
    _, listen, upstream, enabled = _proxy_input(await _body(request), proxy.name, proxy.listen,
                                                proxy.upstream, proxy.enabled)
    async with coll.lock:
        await proxy.update(listen, upstream, enabled)
    return _json(proxy.to_json())


async def proxy_delete(request: web.Request) -> web.Response:
    coll = request.app[COLLECTION]
    async with coll.lock:
        await coll.remove(request.match_info["proxy"])
    return web.Response(status=204)


async def reset(request: web.Request) -> web.Response:
    coll = request.app[COLLECTION]
    async with coll.lock:
        for proxy in list(coll.proxies.values()):
            await proxy.start()
            proxy.reset_toxics()
    return web.Response(status=204)


# -- toxics -------------------------------------------------------------------------------------------------
async def toxic_index(request: web.Request) -> web.Response:
    proxy = request.app[COLLECTION].get(request.match_info["proxy"])
    return _json([t.to_json() for t in proxy.toxic_list()])


async def toxic_create(request: web.Request) -> web.Response:
    coll = request.app[COLLECTION]
    proxy = coll.get(request.match_info["proxy"])
    spec = parse_new_toxic(await _body(request))
    async with coll.lock:
        proxy.add_toxic(spec)
    return _json(spec.to_json())


async def toxic_show(request: web.Request) -> web.Response:
    proxy = request.app[COLLECTION].get(request.match_info["proxy"])
    return _json(proxy.get_toxic(request.match_info["toxic"]).to_json())


async def toxic_update(request: web.Request) -> web.Response:
    coll = request.app[COLLECTION]
    proxy = coll.get(request.match_info["proxy"])
    proxy.get_toxic(request.match_info["toxic"])  # 404 before decoding, as upstream
    body = await _body(request)
    async with coll.lock:
        spec = proxy.update_toxic(request.match_info["toxic"], body)
    return _json(spec.to_json())


async def toxic_delete(request: web.Request) -> web.Response:
    coll = request.app[COLLECTION]
    proxy = coll.get(request.match_info["proxy"])
    async with coll.lock:
        proxy.remove_toxic(request.match_info["toxic"])
    return web.Response(status=204)


# -- misc ---------------------------------------------------------------------------------------------------
async def version(request: web.Request) -> web.Response:
    return web.Response(text=f'{{"version": "{TOXIPROXY_API_VERSION}"}}\n',
                        headers={"Content-Type": "application/json;charset=utf-8"})


async def metrics(request: web.Request) -> web.Response:
    text = request.app[METRICS].render(request.app[COLLECTION])
    return web.Response(text=text, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def build_app(collection: ProxyCollection, metrics_: Metrics) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=16 * 1024 * 1024)
    app[COLLECTION] = collection
    app[METRICS] = metrics_
    r = app.router
    r.add_post("/reset", reset)
    r.add_get("/proxies", proxy_index, allow_head=False)
    r.add_post("/proxies", proxy_create)
    r.add_post("/populate", populate)
    r.add_get("/proxies/{proxy}", proxy_show, allow_head=False)
    r.add_post("/proxies/{proxy}", proxy_update)
    r.add_patch("/proxies/{proxy}", proxy_update)
    r.add_delete("/proxies/{proxy}", proxy_delete)
    r.add_get("/proxies/{proxy}/toxics", toxic_index, allow_head=False)
    r.add_post("/proxies/{proxy}/toxics", toxic_create)
    r.add_get("/proxies/{proxy}/toxics/{toxic}", toxic_show, allow_head=False)
    r.add_post("/proxies/{proxy}/toxics/{toxic}", toxic_update)
    r.add_patch("/proxies/{proxy}/toxics/{toxic}", toxic_update)
    r.add_delete("/proxies/{proxy}/toxics/{toxic}", toxic_delete)
    r.add_get("/version", version, allow_head=False)
    r.add_get("/metrics", metrics, allow_head=False)
    return app
