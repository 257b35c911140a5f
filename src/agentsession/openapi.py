"""The OpenAPI 3.1 description of ``sessions_router()``, written once for both uses.

FastAPI merges each operation into the app's own ``/openapi.json``; a plain Starlette
app serves ``openapi_document()``. Schemas are inline (no ``$ref``) so that an
operation dropped into any app's document stands alone.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from agentsession.common import API_DEFAULT_PAGE_SIZE, API_MAX_PAGE_SIZE, ID_LENGTH, NAME_LENGTH

__all__ = ["OPERATIONS", "openapi_document"]

_ID: Final = {"type": "string", "minLength": 1, "maxLength": ID_LENGTH}
_NAME: Final = {"type": ["string", "null"], "maxLength": NAME_LENGTH}
_OPTIONAL_ID: Final = {"type": ["string", "null"], "minLength": 1, "maxLength": ID_LENGTH}
_TIME: Final = {"type": "integer", "description": "epoch milliseconds"}
_OPTIONAL_TIME: Final = {"type": ["integer", "null"], "description": "epoch milliseconds"}
_RATING: Final = {"type": "string", "enum": ["up", "down"]}

_SESSION: Final = {
    "type": "object",
    "required": ["id", "name", "agentId", "createdTime", "updatedTime", "lastViewedAt"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": ["string", "null"]},
        "agentId": {"type": ["string", "null"]},
        "createdTime": _TIME,
        "updatedTime": _TIME,
        "lastViewedAt": _OPTIONAL_TIME,
        "expiresAt": _OPTIONAL_TIME,
    },
}
_TASK: Final = {
    "type": "object",
    "required": ["taskId", "sessionId", "messageBubbles", "createdTime", "updatedTime"],
    "properties": {
        "taskId": {"type": "string"},
        "sessionId": {"type": "string"},
        "userMessage": {"type": ["string", "null"]},
        "messageBubbles": {"description": "the JSON value saved (an array from this API)"},
        "taskMetadata": {"description": "the JSON value saved (an object or null)"},
        "createdTime": _TIME,
        "updatedTime": _TIME,
    },
}
_FEEDBACK: Final = {
    "type": "object",
    "required": ["id", "sessionId", "taskId", "feedbackType", "createdTime"],
    "properties": {
        "id": {"type": "string"},
        "sessionId": {"type": "string"},
        "taskId": {"type": "string"},
        "feedbackType": _RATING,
        "feedbackText": {"type": ["string", "null"]},
        "createdTime": _TIME,
    },
}
_CURRENT: Final = {
    "type": "object",
    "required": ["clientId", "sessionId", "expiresAt", "timeRemainingSeconds"],
    "properties": {
        "clientId": {"type": "string"},
        "sessionId": {"type": ["string", "null"], "description": "the current conversation"},
        "expiresAt": {
            "type": ["integer", "null"],
            "description": "epoch milliseconds; null for a cookie that lasts the browser session",
        },
        "timeRemainingSeconds": {"type": ["integer", "null"], "minimum": 0},
    },
}
_ERROR: Final = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "the offending input, if one"},
            },
        }
    },
}

_ERRORS: Final = {
    "400": "The body is not valid JSON, or not a JSON object.",
    "401": "No user could be resolved for the request.",
    "404": "No such conversation, task or feedback for this user.",
    "409": "The id is already used by a row this user may not change.",
    "413": "The body is larger than the router's limit.",
    "415": "The body is not sent as application/json.",
    "422": "A value is missing, of the wrong type or out of range; `field` names it.",
    "503": "The session store is down or timing out; retry after `Retry-After` seconds.",
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _page(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["data", "meta"],
        "properties": {
            "data": {"type": "array", "items": item},
            "meta": {
                "type": "object",
                "required": ["nextCursor"],
                "properties": {"nextCursor": {"type": ["string", "null"]}},
            },
        },
    }


def _body(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return {"required": bool(required), "content": _json(schema)}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_SESSION_ID_PATH: Final = {
    "name": "sessionId",
    "in": "path",
    "required": True,
    "schema": _ID,
    "description": "the conversation's id",
}
_PAGING: Final = [
    _query(
        "limit",
        {
            "type": "integer",
            "minimum": 1,
            "maximum": API_MAX_PAGE_SIZE,
            "default": API_DEFAULT_PAGE_SIZE,
        },
        "items per page",
    ),
    _query("cursor", {"type": "string"}, "`meta.nextCursor` of the previous page"),
]


def _operation(
    summary: str,
    status: int,
    schema: dict[str, Any] | None,
    errors: str,
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One operation: its success response and the error statuses ``errors`` lists."""
    responses: dict[str, Any] = {
        str(status): {"description": summary}
        if schema is None
        else {"description": summary, "content": _json(schema)}
    }
    for code in errors.split():
        responses[code] = {"description": _ERRORS[code], "content": _json(_ERROR)}
        if code == "503":
            responses[code]["headers"] = {
                "Retry-After": {"schema": {"type": "string"}, "description": "seconds"}
            }
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = body
    return operation


#: (path, method) -> (route name, success status, OpenAPI operation object).
OPERATIONS: Final[dict[tuple[str, str], tuple[str, int, dict[str, Any]]]] = {
    ("/sessions", "GET"): (
        "list_sessions",
        200,
        _operation(
            "The caller's conversations, most recently updated first",
            200,
            _page(_SESSION),
            "401 422 503",
            parameters=_PAGING,
        ),
    ),
    ("/sessions", "POST"): (
        "create_session",
        201,
        _operation(
            "Start a conversation and make it the current one",
            201,
            _SESSION,
            "400 401 413 415 422 503",
            body={**_body({"name": _NAME, "agentId": _OPTIONAL_ID}), "required": False},
        ),
    ),
    ("/sessions/{sessionId}", "GET"): (
        "get_session",
        200,
        _operation(
            "One conversation", 200, _SESSION, "401 404 422 503", parameters=[_SESSION_ID_PATH]
        ),
    ),
    ("/sessions/{sessionId}", "PATCH"): (
        "rename_session",
        200,
        _operation(
            "Rename a conversation (null clears the name)",
            200,
            _SESSION,
            "400 401 404 413 415 422 503",
            parameters=[_SESSION_ID_PATH],
            body=_body({"name": _NAME}, ("name",)),
        ),
    ),
    ("/sessions/{sessionId}", "DELETE"): (
        "delete_session",
        204,
        _operation(
            "Delete a conversation with its chat tasks and feedback",
            204,
            None,
            "401 404 422 503",
            parameters=[_SESSION_ID_PATH],
        ),
    ),
    ("/sessions/{sessionId}/chat-tasks", "GET"): (
        "list_chat_tasks",
        200,
        _operation(
            "A conversation's chat history, oldest first",
            200,
            _page(_TASK),
            "401 404 422 503",
            parameters=[_SESSION_ID_PATH, *_PAGING],
        ),
    ),
    ("/sessions/{sessionId}/chat-tasks", "POST"): (
        "save_chat_task",
        200,
        _operation(
            "Insert or replace a chat task by its taskId",
            200,
            _TASK,
            "400 401 404 409 413 415 422 503",
            parameters=[_SESSION_ID_PATH],
            body=_body(
                {
                    "taskId": _ID,
                    "userMessage": {"type": ["string", "null"]},
                    "messageBubbles": {"type": "array"},
                    "taskMetadata": {"type": ["object", "null"]},
                },
                ("taskId", "messageBubbles"),
            ),
        ),
    ),
    ("/feedback", "POST"): (
        "add_feedback",
        201,
        _operation(
            "Rate a chat task; the caller's earlier rating of it is replaced",
            201,
            _FEEDBACK,
            "400 401 404 413 415 422 503",
            body=_body(
                {
                    "taskId": _ID,
                    "sessionId": _ID,
                    "feedbackType": _RATING,
                    "feedbackText": {"type": ["string", "null"]},
                },
                ("taskId", "sessionId", "feedbackType"),
            ),
        ),
    ),
    ("/feedback", "GET"): (
        "list_feedback",
        200,
        _operation(
            "The caller's feedback, newest first",
            200,
            _page(_FEEDBACK),
            "401 422 503",
            parameters=[
                _query("sessionId", _ID, "only this conversation's"),
                _query("taskId", _ID, "only this task's"),
                _query("feedbackType", _RATING, "only this rating"),
                _query(
                    "since",
                    {"type": "string"},
                    "created at or after: epoch milliseconds or an ISO 8601 date or date-time",
                ),
                _query(
                    "until",
                    {"type": "string"},
                    "created before: epoch milliseconds or an ISO 8601 date or date-time",
                ),
                *_PAGING,
            ],
        ),
    ),
    ("/session/current", "GET"): (
        "get_current_session",
        200,
        _operation("The caller's web session and current conversation", 200, _CURRENT, ""),
    ),
    ("/session/current", "PUT"): (
        "set_current_session",
        200,
        _operation(
            "Switch the current conversation (one of the caller's; null for none)",
            200,
            _CURRENT,
            "400 401 404 413 415 422 503",
            body=_body({"sessionId": _OPTIONAL_ID}, ("sessionId",)),
        ),
    ),
    ("/session/extend", "POST"): (
        "extend_session",
        200,
        _operation("Re-issue the cookie or token with a fresh expiry", 200, _CURRENT, ""),
    ),
}


def openapi_document(prefix: str = "", *, title: str = "agentsession API") -> dict[str, Any]:
    """A whole OpenAPI 3.1 document of the routes mounted at ``prefix`` (for Starlette apps)."""
    paths: dict[str, dict[str, Any]] = {}
    for (path, method), (name, _, operation) in OPERATIONS.items():
        operation = {**copy.deepcopy(operation), "operationId": name}
        paths.setdefault(prefix + path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "paths": paths,
    }
