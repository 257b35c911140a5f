"""The API's one error shape, for its own routes and for the app's.

Every error the HTTP API answers is ``{"error": {"code", "message", "field"?}}`` with
the right status (``Retry-After`` on 503). ``error_response`` turns the package's
exceptions into that answer; ``install_error_handlers`` registers it on an app, so an
``IdConflict`` or ``StoreUnavailable`` raised in the app's own routes is a 409 or 503
rather than a 500, and a 404 or 405 under the API's prefix has the same shape as the
API's own errors.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from agentsession.errors import (
    IdConflict,
    InvalidInput,
    SessionNotFound,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["RETRY_AFTER_SECONDS", "ApiError", "error_response", "install_error_handlers"]

logger = logging.getLogger("agentsession")

#: Seconds a client is told to wait (``Retry-After``) when the store is unavailable.
RETRY_AFTER_SECONDS: Final = 5

#: The service's argument names as the API spells them.
FIELDS: Final = {
    "session_id": "sessionId",
    "task_id": "taskId",
    "agent_id": "agentId",
    "user_message": "userMessage",
    "message_bubbles": "messageBubbles",
    "task_metadata": "taskMetadata",
    "rating": "feedbackType",
    "comment": "feedbackText",
    "user_id": "user",
    "client_id": "clientId",
    "query": "q",
}


class ApiError(Exception):
    """An error response: HTTP status, a stable ``code``, a message and maybe a field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def response(self) -> JSONResponse:
        """The error as the API answers it (``Retry-After`` on 503)."""
        error: dict[str, str] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if self.status == 503 else None
        return JSONResponse({"error": error}, status_code=self.status, headers=headers)


def error_response(error: Exception, where: str = "sessions_router") -> JSONResponse | None:
    """The API's answer to one of the package's exceptions; None for any other.

    ``InvalidInput`` → 422 naming the field (in the API's spelling), ``IdConflict`` →
    409, ``SessionNotFound`` → 404, ``StoreUnavailable`` → 503 with ``Retry-After``
    (the service already logged the outage; ``where`` names the route in a debug
    record).
    """
    if isinstance(error, ApiError):
        return error.response()
    if isinstance(error, InvalidInput):
        field = FIELDS.get(error.field, error.field)
        message = str(error).split(": ", 1)[-1]
        return ApiError(422, "invalid_input", f"{field}: {message}", field).response()
    if isinstance(error, IdConflict):
        field = FIELDS.get(error.field, error.field)
        message = f"{field} is already in use by another of your conversations"
        return ApiError(409, "conflict", message, field).response()
    if isinstance(error, SessionNotFound):
        return ApiError(404, "not_found", "no such conversation").response()
    if isinstance(error, StoreUnavailable):
        # The service has logged the failed call (with its fields, as a warning or, when
        # misconfigured, an error); here only which route answered 503, for debugging.
        logger.debug("%s: answered 503 store_unavailable: %s", where, error)
        message = "the session store is unavailable; retry later"
        return ApiError(503, "store_unavailable", message).response()
    return None


def install_error_handlers(app: Starlette, *, prefix: str = "") -> None:
    """Answer errors in the API's shape across ``app`` (FastAPI or Starlette).

    * The package's exceptions raised in the app's own routes (an ``IdConflict`` from
      ``service.create_session``, a ``StoreUnavailable`` while the database restarts)
      get the status and body ``sessions_router()`` gives them, instead of a 500.
    * Under ``prefix`` (the one given to ``include_router`` or ``Mount``), a 404 for
      an unknown path, a 405 for a method a route lacks, any other ``HTTPException``
      and FastAPI's request validation errors answer ``{"error": {...}}`` too
      (``Allow`` kept on a 405). Elsewhere the app's previous handlers answer them.

    Call it after creating the app, once per prefix (each call passes what is not
    under its prefix on to the handlers registered before it).
    """
    prefix = prefix.rstrip("/")
    previous_http = app.exception_handlers.get(HTTPException, _plain_http_error)

    async def package_error(request: Request, error: Exception) -> Response:
        response = error_response(error, where=request.url.path)
        assert response is not None  # registered only for the package's exceptions
        return response

    def under_prefix(request: Request) -> bool:
        path: str = request.scope.get("path", "")
        return not prefix or path == prefix or path.startswith(prefix + "/")

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        if not under_prefix(request):
            response = previous_http(request, error)
            return await response if not isinstance(response, Response) else response
        if error.status_code == 405:
            error = _every_allowed_method(request, error)
        return _http_error_response(error)

    for kind in (ApiError, IdConflict, InvalidInput, SessionNotFound, StoreUnavailable):
        app.add_exception_handler(kind, package_error)
    app.add_exception_handler(HTTPException, http_error)
    try:
        from fastapi.exceptions import RequestValidationError
    except ImportError:  # a plain Starlette app has none
        return
    previous_validation = app.exception_handlers.get(RequestValidationError)

    async def validation_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        if not under_prefix(request) and previous_validation is not None:
            response = previous_validation(request, error)
            return await response if not isinstance(response, Response) else response
        return _validation_response(error)

    app.add_exception_handler(RequestValidationError, validation_error)


#: The API's code for each status an ``HTTPException`` may carry.
_CODES: Final = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
    503: "store_unavailable",
}


_METHOD_ORDER: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _every_allowed_method(request: Request, error: HTTPException) -> HTTPException:
    """A 405 whose ``Allow`` names every method the path takes, not only the first route's.

    FastAPI makes one route per method, and Starlette's 405 names the methods of the
    first route whose path matched (``GET`` for ``/sessions``, which also takes POST).
    """
    scope = dict(request.scope)
    # Routing has narrowed ``root_path`` to the innermost Mount; match from the app's.
    scope["root_path"] = scope.get("app_root_path", scope.get("root_path", ""))
    methods = _methods(getattr(scope.get("app"), "routes", ()), scope)
    if not methods:
        return error
    ordered = [method for method in _METHOD_ORDER if method in methods]
    headers = {**(error.headers or {}), "Allow": ", ".join(ordered)}
    return HTTPException(405, detail=error.detail, headers=headers)


def _methods(routes: Any, scope: Any) -> set[str]:
    """The methods some route among ``routes`` (or mounted under them) takes at the path."""
    from starlette.routing import Match, Mount

    found: set[str] = set()
    for route in routes:
        if isinstance(route, Mount):
            match, child = route.matches(scope)
            if match is Match.FULL:
                found |= _methods(route.routes, {**scope, **child})
            continue
        for method in _METHOD_ORDER:
            match, _ = route.matches({**scope, "method": method})
            if match is Match.FULL:
                found.add(method)
    return found


def _http_error_response(error: HTTPException) -> Response:
    """An ``HTTPException`` in the API's shape, its headers (``Allow``) kept."""
    status = error.status_code
    if status in (204, 304):  # no body may follow
        return Response(status_code=status, headers=error.headers)
    if status == 404 and error.detail == "Not Found":
        message = "no such route"
    elif status == 405 and error.detail == "Method Not Allowed":
        allowed = (error.headers or {}).get("Allow")
        message = "this route does not take this method" + (
            f"; it takes {allowed}" if allowed else ""
        )
    else:
        message = str(error.detail)
    code = _CODES.get(status, "http_error")
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=error.headers)


def _validation_response(error: Any) -> Response:
    """FastAPI's request validation error as the API's 422, naming the first field."""
    problems = list(error.errors())
    first = problems[0] if problems else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
    field = ".".join(location) or "body"
    message = f"{field}: {first.get('msg', 'is not valid')}"
    body = {"error": {"code": "invalid_input", "message": message, "field": field}}
    return JSONResponse(body, status_code=422)


def _plain_http_error(request: Request, error: Exception) -> Response:
    """Starlette's own answer to an ``HTTPException`` (a plain Starlette app has no handler)."""
    assert isinstance(error, HTTPException)
    if error.status_code in (204, 304):
        return Response(status_code=error.status_code, headers=error.headers)
    return PlainTextResponse(error.detail, status_code=error.status_code, headers=error.headers)
