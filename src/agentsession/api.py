"""sessions_router(): the HTTP API a chat UI needs, as one router.

Conversations (pinned or not), their chat history, search over both, feedback and the
caller's web session, in camelCase JSON, for the user ``identity`` resolves. Every
route is a plain Starlette endpoint, so the router works under ``Mount`` in any
Starlette app; where FastAPI is installed it is an ``APIRouter`` whose routes appear
in the app's OpenAPI document. Errors are
``{"error": {"code", "message", "field"?}}``; bad input never reaches the store.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route, Router

from agentsession.common import API_DEFAULT_PAGE_SIZE, API_MAX_PAGE_SIZE
from agentsession.cookie.middleware import get_middleware
from agentsession.cookie.session import (
    Session,
    get_client_id,
    get_session_id,
    get_user_id,
    set_session_id,
    set_user_id,
)
from agentsession.http_errors import ApiError, error_response, install_error_handlers
from agentsession.identity import UserResolver, resolve_user
from agentsession.openapi import OPERATIONS, response_models
from agentsession.revocation import logout, logout_everywhere, revocations_of
from agentsession.service import SearchResult, SessionService
from agentsession.stores.base import FeedbackRecord, Page, SessionRecord, TaskRecord

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "ApiError",
    "install_error_handlers",
    "read_json_body",
    "sessions_router",
    "task_json",
]

#: Largest request body the routes read (1 MiB); larger ones get 413 unread.
DEFAULT_MAX_BODY_SIZE: Final = 1024 * 1024
#: Seconds ``GET /health`` waits for the store before it answers 503.
HEALTH_TIMEOUT: Final = 1.0
_JSON_TYPES: Final = ("application/json",)

Endpoint = Callable[[Request], Awaitable[Response]]


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid_input", f"{field}: {message}", field)


def sessions_router(
    *,
    user_resolver: UserResolver | None = None,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
) -> APIRouter:
    """The routes of the README's HTTP API, to ``include_router`` (FastAPI) or ``Mount``.

    ``user_resolver(request)`` returns the caller's user id (or None: 401); the default
    is ``identity.current_user``. ``max_body_size`` bounds every request body in bytes.
    The app needs ``SessionMiddleware``, whose service stores the data.
    """
    if type(max_body_size) is not int or max_body_size < 1:
        raise ValueError(f"max_body_size must be a positive int, not {max_body_size!r}")
    handlers = _Handlers(user_resolver, max_body_size)
    routes = [
        (path, method, name, status, operation, _guard(getattr(handlers, name)))
        for (path, method), (name, status, operation) in OPERATIONS.items()
    ]
    try:
        from fastapi import APIRouter
    except ImportError:
        plain: list[BaseRoute] = [
            Route(path, endpoint, methods=[method], name=name)
            for path, method, name, _, _, endpoint in routes
        ]
        return Router(routes=plain)  # type: ignore[return-value]  # no FastAPI: Mount it
    router = APIRouter(tags=["agentsession"], route_class=_plain_route_class())
    models = response_models()
    for path, method, name, status, operation, endpoint in routes:
        responses = {
            int(code): _fastapi_response(response, models)
            for code, response in operation["responses"].items()
        }
        success = responses.pop(status)
        router.add_api_route(
            path,
            endpoint,
            methods=[method],
            name=name,
            operation_id=name,
            status_code=status,
            summary=operation["summary"],
            response_model=success.get("model"),
            response_description=success["description"],
            responses=responses,  # type: ignore[arg-type]
            openapi_extra={k: v for k, v in operation.items() if k not in ("summary", "responses")},
        )
    return router


def _fastapi_response(response: dict[str, Any], models: dict[str, type[Any]]) -> dict[str, Any]:
    """A written response for FastAPI: its schema ``$ref`` given as the named model."""
    out = {k: v for k, v in response.items() if k != "content"}
    ref = response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
    if ref is not None:
        out["model"] = models[ref.rsplit("/", 1)[1]]
    return out


def _plain_route_class() -> type[Any]:
    """A FastAPI ``APIRoute`` that also runs where FastAPI's machinery is absent.

    Inside a FastAPI app the route runs through FastAPI's own handler, so dependencies
    given to ``include_router`` (an auth check, say) guard it like any other route.
    Under a plain Starlette ``Mount`` that handler cannot run (it needs FastAPI's
    middleware), and there are no such dependencies: the endpoint is called directly.
    """
    from fastapi import FastAPI
    from fastapi.routing import APIRoute

    class PlainRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            fastapi_handler = super().get_route_handler()
            plain: Endpoint = self.endpoint

            async def handler(request: Request) -> Response:
                if isinstance(request.scope.get("app"), FastAPI):
                    return await fastapi_handler(request)
                return await plain(request)

            return handler

    return PlainRoute


def _guard(endpoint: Endpoint) -> Endpoint:
    """Turn the package's exceptions into JSON error responses; nothing escapes as a 500."""

    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception as error:
            response = error_response(error)
            if response is None:
                raise
            return response

    guarded.__name__ = endpoint.__name__
    guarded.__doc__ = endpoint.__doc__
    return guarded


class _Handlers:
    """The endpoints; each is ``async (request) -> Response``."""

    def __init__(self, user_resolver: UserResolver | None, max_body_size: int) -> None:
        self.user_resolver = user_resolver
        self.max_body_size = max_body_size

    # Conversations

    async def list_sessions(self, request: Request) -> Response:
        service, user = await self._context(request)
        limit, cursor = _paging(request)
        pinned = _flag(request.query_params.get("pinned"), "pinned")
        page = await service.list_sessions(user, limit=limit, cursor=cursor, pinned=pinned)
        return _page(page, _session)

    async def create_session(self, request: Request) -> Response:
        service, user = await self._context(request)
        body = await self._body(request, ("name", "agentId"), empty_ok=True)
        record = await service.create_session(
            user,
            name=_optional_str(body, "name"),
            agent_id=_optional_str(body, "agentId"),
            client_id=get_client_id(request),
        )
        set_session_id(request, record.id)
        return JSONResponse(_session(record), status_code=201)

    async def get_session(self, request: Request) -> Response:
        service, user = await self._context(request)
        record = await service.get_session(user, _session_id(request))
        return JSONResponse(_session(record))

    async def rename_session(self, request: Request) -> Response:
        """Rename, pin or unpin: ``name`` and ``pinned``, either or both, in one write."""
        service, user = await self._context(request)
        body = await self._body(request, ("name", "pinned"))
        if not body:
            raise _invalid("name", "is required unless pinned is given")
        pinned = body.get("pinned")
        if "pinned" in body and not isinstance(pinned, bool):
            raise _invalid("pinned", f"must be true or false, not {_kind(pinned)}")
        session_id = _session_id(request)
        if "name" in body:
            name = _optional_str(body, "name")
            record = await service.rename_session(user, session_id, name, pinned=pinned)
        else:
            assert isinstance(pinned, bool)  # the body has a name, or pinned, or both
            record = await service.pin_session(user, session_id, pinned)
        return JSONResponse(_session(record))

    async def delete_session(self, request: Request) -> Response:
        service, user = await self._context(request)
        session_id = _session_id(request)
        await service.delete_session(user, session_id)
        if get_session_id(request) == session_id:
            set_session_id(request, None)
        return Response(status_code=204)

    # Chat tasks

    async def list_chat_tasks(self, request: Request) -> Response:
        service, user = await self._context(request)
        limit, cursor = _paging(request)
        order = request.query_params.get("order", "oldest")
        if order not in ("oldest", "newest"):
            raise _invalid("order", f"must be oldest or newest, not {_printable(order)!r}")
        page = await service.list_tasks(
            user,
            _session_id(request),
            limit=limit,
            cursor=cursor,
            newest_first=order == "newest",
        )
        return _page(page, task_json)

    async def save_chat_task(self, request: Request) -> Response:
        service, user = await self._context(request)
        session_id = _session_id(request)
        fields = ("taskId", "userMessage", "messageBubbles", "taskMetadata")
        body = await self._body(request, fields, required=("taskId", "messageBubbles"))
        bubbles = body["messageBubbles"]
        if not isinstance(bubbles, list):
            raise _invalid("messageBubbles", f"must be an array, not {_kind(bubbles)}")
        metadata = body.get("taskMetadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise _invalid("taskMetadata", f"must be an object or null, not {_kind(metadata)}")
        record = await service.save_task(
            user,
            session_id,
            _str(body, "taskId"),
            user_message=_optional_str(body, "userMessage"),
            message_bubbles=bubbles,
            task_metadata=metadata,
            # The user's own activity: it also marks the conversation read.
            viewed=True,
        )
        return JSONResponse(task_json(record))

    # Search

    async def search(self, request: Request) -> Response:
        service, user = await self._context(request)
        limit, cursor = _paging(request)
        query = request.query_params.get("q")
        if query is None:
            raise _invalid("q", "is required: the words to search for")
        page = await service.search(user, query, limit=limit, cursor=cursor)
        return _page(page, _search_result)

    # Feedback

    async def add_feedback(self, request: Request) -> Response:
        service, user = await self._context(request)
        fields = ("taskId", "sessionId", "feedbackType", "feedbackText")
        body = await self._body(request, fields, required=("taskId", "sessionId", "feedbackType"))
        record = await service.add_feedback(
            user,
            _str(body, "sessionId"),
            _str(body, "taskId"),
            _str(body, "feedbackType"),
            _optional_str(body, "feedbackText"),
        )
        return JSONResponse(_feedback(record), status_code=201)

    async def list_feedback(self, request: Request) -> Response:
        service, user = await self._context(request)
        limit, cursor = _paging(request)
        query = request.query_params
        page = await service.list_feedback(
            user,
            session_id=query.get("sessionId"),
            task_id=query.get("taskId"),
            rating=query.get("feedbackType"),
            since=_instant(query.get("since"), "since"),
            until=_instant(query.get("until"), "until"),
            limit=limit,
            cursor=cursor,
        )
        return _page(page, _feedback)

    # The caller's web session

    # Health

    async def health(self, request: Request) -> Response:
        """200 when the store answers within a second; the guard makes a failure a 503."""
        await get_middleware(request).service.ping(within=HEALTH_TIMEOUT)
        return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})

    async def get_current_session(self, request: Request) -> Response:
        return _current(request)

    async def set_current_session(self, request: Request) -> Response:
        service, user = await self._context(request)
        body = await self._body(request, ("sessionId",), required=("sessionId",))
        session_id = _optional_str(body, "sessionId")
        if session_id is not None:
            await service.get_session(user, session_id)  # yours and live, or 404
        set_session_id(request, session_id)
        return _current(request)

    async def extend_session(self, request: Request) -> Response:
        get_middleware(request).renew(_session_of(request))
        return _current(request)

    # Logging out, and the caller's data (agentsession.revocation, agentsession.export)

    async def logout(self, request: Request) -> Response:
        body = await self._body(request, ("everywhere",), empty_ok=True)
        everywhere = body.get("everywhere", False)
        if not isinstance(everywhere, bool):
            raise _invalid("everywhere", f"must be true or false, not {_kind(everywhere)}")
        if everywhere:
            _, user = await self._context(request)
            await logout_everywhere(request, user)
        else:
            await logout(request)
        return Response(status_code=204)

    async def export_me(self, request: Request) -> Response:
        service, user = await self._context(request)
        chunks = service.export_user(user)
        first = await anext(chunks)  # a store outage is a 503 here, not a broken download
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        headers = {
            "Content-Disposition": f'attachment; filename="agentsession-export-{stamp}.json"',
            "Cache-Control": "no-store",
        }

        async def body() -> AsyncIterator[bytes]:
            yield first
            async for chunk in chunks:
                yield chunk

        return StreamingResponse(body(), media_type="application/json", headers=headers)

    async def erase_me(self, request: Request) -> Response:
        service, user = await self._context(request)
        cache = revocations_of(request)
        await service.erase_user(user, keep_for=cache.max_age)
        await logout_everywhere(request, user)
        return Response(status_code=204)

    # Request parts

    async def _context(self, request: Request) -> tuple[SessionService, str]:
        """The app's service and the caller's user id (401 when there is none)."""
        service = get_middleware(request).service
        user = await resolve_user(request, self.user_resolver)
        if user is None:
            raise ApiError(401, "unauthorized", "no user could be resolved for this request")
        _bind(request, user)
        return service, user

    async def _body(
        self,
        request: Request,
        fields: tuple[str, ...],
        *,
        required: tuple[str, ...] = (),
        empty_ok: bool = False,
    ) -> dict[str, Any]:
        """The JSON object body, read at most ``max_body_size`` bytes; only ``fields`` allowed."""
        raw = await _read_body(request, self.max_body_size)
        if empty_ok and not raw.strip():
            return {}
        body = _parse_body(request, raw)
        if not isinstance(body, dict):
            raise ApiError(
                400, "invalid_json", f"the body must be a JSON object, not {_kind(body)}", "body"
            )
        for key in body:
            if key not in fields:
                name = _printable(key)
                raise _invalid(name, f"is not a known field; expected {', '.join(fields)}")
        for key in required:
            if key not in body:
                raise _invalid(key, "is required")
        return body


async def read_json_body(request: Request, *, max_body_size: int = DEFAULT_MAX_BODY_SIZE) -> Any:
    """The request's JSON body, read and checked as ``sessions_router()`` reads its own.

    For a route of your own (an agent's chat endpoint) that should answer bad bodies as
    the API does: over ``max_body_size`` bytes is 413 ``body_too_large`` before it is
    read (from ``Content-Length``, or as soon as a streamed body grows past it); not sent
    as JSON is 415; empty, not JSON (NaN included) or nested too deep to parse is 400
    ``invalid_json``. Each is raised as an ``ApiError``; ``error.response()`` answers it.
    """
    return _parse_body(request, await _read_body(request, max_body_size))


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body; 413 from the Content-Length header, or as soon as it grows too big."""
    too_large = ApiError(413, "body_too_large", f"the body is over the {limit}-byte limit", "body")
    declared = request.headers.get("content-length")
    announced = None if declared is None else _bounded(declared, limit)
    if announced is not None and announced > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_body(request: Request, raw: bytes) -> Any:
    """``raw`` as JSON, if it was sent as JSON; else the API's 400 or 415."""
    if not raw.strip():
        raise ApiError(400, "invalid_json", "the request needs a JSON object body", "body")
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in _JSON_TYPES and not media.endswith("+json"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the body as application/json, not {media or 'no content type'}",
            "body",
        )
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as error:  # RecursionError: ~1000 levels deep
        raise ApiError(
            400, "invalid_json", f"the body is not valid JSON: {error}", "body"
        ) from None


# Helpers: reading input


def _bind(request: Request, user: str) -> None:
    """Bind the session to an authenticated user (not its own anonymous client id), so
    that logging the user out everywhere voids this cookie or token too."""
    if get_user_id(request) != user and user != _session_of(request)._client_id:
        set_user_id(request, user)


def _session_of(request: Request) -> Session:
    session = request.scope["session"]
    assert isinstance(session, Session)
    return session


def _session_id(request: Request) -> str:
    return str(request.path_params["sessionId"])


def _paging(request: Request) -> tuple[int, str | None]:
    query = request.query_params
    text = query.get("limit")
    limit = API_DEFAULT_PAGE_SIZE
    if text is not None:
        value = _bounded(text, API_MAX_PAGE_SIZE)
        if value is None or not 1 <= value <= API_MAX_PAGE_SIZE:
            raise _invalid(
                "limit", f"must be an integer from 1 to {API_MAX_PAGE_SIZE}, not {text!r:.40}"
            )
        limit = value
    return limit, query.get("cursor")


def _flag(text: str | None, field: str) -> bool | None:
    """A query parameter's ``true`` or ``false``; None when absent."""
    if text is None:
        return None
    if text not in ("true", "false"):
        raise _invalid(field, f"must be true or false, not {_printable(text)!r}")
    return text == "true"


def _instant(text: str | None, field: str) -> int | None:
    """Epoch milliseconds from an integer or an ISO 8601 date or date-time (UTC if naive)."""
    if text is None or text == "":
        return None
    if _is_number(text) and len(text) <= 15:
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise _invalid(
            field, f"must be epoch milliseconds or an ISO 8601 date-time, not {text!r:.40}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    try:
        return max(0, int(moment.timestamp() * 1000))
    except (OverflowError, ValueError):
        raise _invalid(field, f"is out of range: {text!r:.40}") from None


def _is_number(text: str) -> bool:
    """Plain ASCII digits only (``int()`` would also take spaces, signs and other scripts)."""
    return text.isascii() and text.isdigit()


def _bounded(text: str, most: int) -> int | None:
    """The number ``text`` spells in ASCII digits, or ``most + 1`` if it is larger; else None.

    Digits of any length: ``int()`` refuses more than 4300 of them (a 500, not a 4xx).
    """
    if not _is_number(text):
        return None
    digits = text.lstrip("0")
    if len(digits) > len(str(most)):
        return most + 1
    return int(digits or "0")


def _str(body: Mapping[str, Any], key: str) -> str:
    value = body[key]
    if not isinstance(value, str):
        raise _invalid(key, f"must be a string, not {_kind(value)}")
    return value


def _optional_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise _invalid(key, f"must be a string or null, not {_kind(value)}")
    return value


def _printable(text: str) -> str:
    """``text`` cut to 100 characters, with what UTF-8 cannot carry (lone surrogates) escaped."""
    return text[:100].encode("utf-8", "backslashreplace").decode("utf-8")


def _kind(value: object) -> str:
    """The JSON type name of a parsed value, for error messages."""
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    names.update({list: "an array", dict: "an object"})
    return names.get(type(value), type(value).__name__)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Helpers: writing output


def _session(record: SessionRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "agentId": record.agent_id,
        "createdTime": record.created_time,
        "updatedTime": record.updated_time,
        "lastViewedAt": record.last_viewed_at,
        "expiresAt": record.expires_at,
        "pinned": record.pinned,
    }


def task_json(record: TaskRecord) -> dict[str, Any]:
    """A chat task as the API shows it; for a gateway's own routes that answer with one."""
    return {
        "taskId": record.id,
        "sessionId": record.session_id,
        "userMessage": record.user_message,
        "messageBubbles": record.message_bubbles,
        "taskMetadata": record.task_metadata,
        "createdTime": record.created_time,
        "updatedTime": record.updated_time,
    }


def _search_result(result: SearchResult) -> dict[str, Any]:
    return {
        "sessionId": result.session_id,
        "sessionName": result.session_name,
        "taskId": result.task_id,
        "snippet": [{"text": text, "match": match} for text, match in result.snippet],
        "rank": result.rank,
        "time": result.time,
    }


def _feedback(record: FeedbackRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "sessionId": record.session_id,
        "taskId": record.task_id,
        "feedbackType": record.rating,
        "feedbackText": record.comment,
        "createdTime": record.created_time,
    }


def _page(page: Page[Any], render: Callable[[Any], dict[str, Any]]) -> JSONResponse:
    return JSONResponse(
        {"data": [render(item) for item in page.items], "meta": {"nextCursor": page.next_cursor}}
    )


def _current(request: Request) -> JSONResponse:
    """``GET /session/current``'s body: the ids and when the cookie or token expires."""
    client_id = get_client_id(request)
    expires = get_middleware(request).expires_at(_session_of(request))
    remaining = None
    if expires is not None:
        remaining = max(0, expires - int(time.time()))
    return JSONResponse(
        {
            "clientId": client_id,
            "sessionId": get_session_id(request),
            "expiresAt": None if expires is None else expires * 1000,
            "timeRemainingSeconds": remaining,
        }
    )
