"""The OpenAPI 3.1 description of ``sessions_router()``, written once for both uses.

FastAPI merges each operation into the app's own ``/openapi.json``; a plain Starlette
app serves ``openapi_document()``. The responses refer to named component schemas
(``Conversation``, ``ChatTask``, ``Feedback``, ``SearchResult`` with its
``SnippetPart``, their pages, ``CurrentSession``, ``Error``, ``Health``,
``UserExport``: ``SCHEMAS``), so that generated clients get
named types; under FastAPI they reach the app's ``components`` as pydantic models
(``response_models()``) whose JSON schema is exactly the written one.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Final, cast

from agentsession.common import API_DEFAULT_PAGE_SIZE, API_MAX_PAGE_SIZE, ID_LENGTH, NAME_LENGTH
from agentsession.search import MAX_QUERY_LENGTH

__all__ = ["OPERATIONS", "SCHEMAS", "openapi_document", "response_models"]


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_ID: Final = {"type": "string", "minLength": 1, "maxLength": ID_LENGTH}
_NAME: Final = {"type": ["string", "null"], "maxLength": NAME_LENGTH}
_OPTIONAL_ID: Final = {"type": ["string", "null"], "minLength": 1, "maxLength": ID_LENGTH}
_TIME: Final = {"type": "integer", "description": "epoch milliseconds"}
_OPTIONAL_TIME: Final = {"type": ["integer", "null"], "description": "epoch milliseconds"}
_RATING: Final = {"type": "string", "enum": ["up", "down"]}
_PINNED: Final = {
    "type": "boolean",
    "description": "kept by retention's idle and chat-task rules; a sidebar lists these first",
}

_SESSION: Final = {
    "type": "object",
    "required": ["id", "name", "agentId", "createdTime", "updatedTime", "lastViewedAt", "pinned"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": ["string", "null"]},
        "agentId": {"type": ["string", "null"]},
        "createdTime": _TIME,
        "updatedTime": _TIME,
        "lastViewedAt": _OPTIONAL_TIME,
        "expiresAt": _OPTIONAL_TIME,
        "pinned": _PINNED,
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
_SNIPPET_PART: Final = {
    "type": "object",
    "description": "a piece of a snippet's text; show a matched one marked, as text (never HTML)",
    "required": ["text", "match"],
    "properties": {
        "text": {"type": "string"},
        "match": {"type": "boolean", "description": "a word that matched the query"},
    },
}
_SEARCH_RESULT: Final = {
    "type": "object",
    "description": "a conversation whose name matched (`taskId` null), or one of its chat tasks",
    "required": ["sessionId", "sessionName", "taskId", "snippet", "rank", "time"],
    "properties": {
        "sessionId": {"type": "string"},
        "sessionName": {"type": ["string", "null"]},
        "taskId": {
            "type": ["string", "null"],
            "description": "the chat task that matched; null when the name did",
        },
        "snippet": {
            "type": "array",
            "items": _ref("SnippetPart"),
            "description": "the passage around the first match, in parts",
        },
        "rank": {
            "type": "number",
            "description": "relevance, higher first; compare it only within one search",
        },
        "time": {
            "type": "integer",
            "description": "epoch milliseconds: the task's createdTime, or the "
            "conversation's updatedTime for a name match",
        },
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


def _page(item: str) -> dict[str, Any]:
    """A page of ``item``s: ``{"data": [...], "meta": {"nextCursor"}}``."""
    return {
        "type": "object",
        "required": ["data", "meta"],
        "properties": {
            "data": {"type": "array", "items": _ref(item)},
            "meta": {
                "type": "object",
                "required": ["nextCursor"],
                "properties": {"nextCursor": {"type": ["string", "null"]}},
            },
        },
    }


_HEALTH: Final = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string", "enum": ["ok"]}},
}

_USER_EXPORT: Final = {
    "type": "object",
    "description": "A user's data as `agentsession import-user` and `import_user` read it",
    "required": ["format", "version", "userId", "exportedAt", "conversations", "feedback"],
    "properties": {
        "format": {"type": "string", "enum": ["agentsession-user-export"]},
        "version": {"type": "integer", "enum": [1]},
        "userId": {"type": "string"},
        "exportedAt": _TIME,
        "conversations": {
            "type": "array",
            "items": {
                "type": "object",
                "description": "a conversation, its `state`, `stateVersion` and `chatTasks`",
            },
        },
        "feedback": {"type": "array", "items": {"type": "object"}},
    },
}

#: The named schemas of the responses: name -> JSON schema (pages refer to their item).
SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    "Conversation": _SESSION,
    "ChatTask": _TASK,
    "Feedback": _FEEDBACK,
    "SnippetPart": _SNIPPET_PART,
    "SearchResult": _SEARCH_RESULT,
    "ConversationPage": _page("Conversation"),
    "ChatTaskPage": _page("ChatTask"),
    "FeedbackPage": _page("Feedback"),
    "SearchResultPage": _page("SearchResult"),
    "CurrentSession": _CURRENT,
    "Error": _ERROR,
    "Health": _HEALTH,
    "UserExport": _USER_EXPORT,
}


def _body(
    properties: dict[str, Any], required: tuple[str, ...] = (), *, at_least_one: bool = False
) -> dict[str, Any]:
    """A JSON object body of ``properties`` only; ``at_least_one``: any one of them."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    if at_least_one:
        schema["minProperties"] = 1
    return {"required": bool(required) or at_least_one, "content": _json(schema)}


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
    schema: str | None,
    errors: str,
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One operation: its success response and the error statuses ``errors`` lists."""
    responses: dict[str, Any] = {
        str(status): {"description": summary}
        if schema is None
        else {"description": summary, "content": _json(_ref(schema))}
    }
    for code in errors.split():
        responses[code] = {"description": _ERRORS[code], "content": _json(_ref("Error"))}
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
            "The caller's conversations, most recently updated first (all, or only the "
            "pinned or unpinned ones)",
            200,
            "ConversationPage",
            "401 422 503",
            parameters=[
                *_PAGING,
                _query(
                    "pinned",
                    {"type": "boolean"},
                    "true: only the pinned conversations; false: only the others; "
                    "absent: all of them",
                ),
            ],
        ),
    ),
    ("/sessions", "POST"): (
        "create_session",
        201,
        _operation(
            "Start a conversation and make it the current one",
            201,
            "Conversation",
            "400 401 413 415 422 503",
            body={**_body({"name": _NAME, "agentId": _OPTIONAL_ID}), "required": False},
        ),
    ),
    ("/sessions/{sessionId}", "GET"): (
        "get_session",
        200,
        _operation(
            "One conversation",
            200,
            "Conversation",
            "401 404 422 503",
            parameters=[_SESSION_ID_PATH],
        ),
    ),
    ("/sessions/{sessionId}", "PATCH"): (
        "rename_session",
        200,
        _operation(
            "Rename (null clears the name), pin or unpin a conversation",
            200,
            "Conversation",
            "400 401 404 413 415 422 503",
            parameters=[_SESSION_ID_PATH],
            body=_body({"name": _NAME, "pinned": _PINNED}, at_least_one=True),
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
            "A conversation's chat history, oldest first (or the latest turns first)",
            200,
            "ChatTaskPage",
            "401 404 422 503",
            parameters=[
                _SESSION_ID_PATH,
                _query(
                    "order",
                    {"type": "string", "enum": ["oldest", "newest"], "default": "oldest"},
                    "`newest`: the latest turns first, then older pages (an agent's context "
                    "window); the cursor continues in its page's order",
                ),
                *_PAGING,
            ],
        ),
    ),
    ("/sessions/{sessionId}/chat-tasks", "POST"): (
        "save_chat_task",
        200,
        _operation(
            "Insert or replace a chat task by its taskId",
            200,
            "ChatTask",
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
            "Feedback",
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
            "FeedbackPage",
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
    ("/search", "GET"): (
        "search",
        200,
        _operation(
            "Search the caller's conversations and chat history: name matches first, "
            "then chat tasks by relevance, newest first among equals",
            200,
            "SearchResultPage",
            "401 422 503",
            parameters=[
                {
                    **_query(
                        "q",
                        {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_LENGTH},
                        "the words to find, each as the start of a word (`deploy` finds "
                        "`deployment`), all of them required; it needs a letter or digit, "
                        "and quotes and operators are plain text",
                    ),
                    "required": True,
                },
                *_PAGING,
            ],
        ),
    ),
    ("/health", "GET"): (
        "health",
        200,
        _operation(
            "Whether the session store answers (within a second); for load balancers",
            200,
            "Health",
            "503",
        ),
    ),
    ("/session/current", "GET"): (
        "get_current_session",
        200,
        _operation("The caller's web session and current conversation", 200, "CurrentSession", ""),
    ),
    ("/session/current", "PUT"): (
        "set_current_session",
        200,
        _operation(
            "Switch the current conversation (one of the caller's; null for none)",
            200,
            "CurrentSession",
            "400 401 404 413 415 422 503",
            body=_body({"sessionId": _OPTIONAL_ID}, ("sessionId",)),
        ),
    ),
    ("/session/extend", "POST"): (
        "extend_session",
        200,
        _operation("Re-issue the cookie or token with a fresh expiry", 200, "CurrentSession", ""),
    ),
    ("/session/logout", "POST"): (
        "logout",
        204,
        _operation(
            "Log out: this client, or (everywhere) every client of the caller's user; "
            "copies of the cookie or token carry no identity any more",
            204,
            None,
            "400 401 413 415 422 503",
            body={
                **_body(
                    {
                        "everywhere": {
                            "type": "boolean",
                            "default": False,
                            "description": "every session of the caller's user id",
                        }
                    }
                ),
                "required": False,
            },
        ),
    ),
    ("/me/export", "GET"): (
        "export_me",
        200,
        _operation(
            "Download the caller's data: an agentsession-user-export JSON document "
            "(conversations with state and chat tasks, feedback), streamed as an attachment",
            200,
            "UserExport",
            "401 503",
        ),
    ),
    ("/me", "DELETE"): (
        "erase_me",
        204,
        _operation(
            "Erase every conversation, chat task and feedback of the caller, and log "
            "them out everywhere",
            204,
            None,
            "401 503",
        ),
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
        "components": {"schemas": copy.deepcopy(SCHEMAS)},
    }


@functools.cache
def response_models() -> dict[str, type[Any]]:
    """``SCHEMAS`` as pydantic models, for FastAPI to put in the app's ``components``.

    Each model's JSON schema is the written one, word for word: a page's item becomes
    a ``$ref`` FastAPI resolves (and renames, should the app have a schema of the same
    name). The models describe; the routes answer with their own JSON, unvalidated.
    """
    from pydantic import BaseModel

    models: dict[str, type[Any]] = {}
    for name, schema in SCHEMAS.items():
        namespace: dict[str, Any] = {
            "__module__": __name__,
            "__doc__": f"The {name} schema of agentsession's HTTP API.",
            "__get_pydantic_json_schema__": classmethod(_written_schema(schema)),
        }
        # Real fields for the arrays of named items, so that pydantic makes (and names)
        # their $ref: a page's data, a search result's snippet.
        namespace["__annotations__"] = {
            field: cast(Any, list)[models[item]] for field, item in _item_refs(schema).items()
        }
        models[name] = type(name, (BaseModel,), namespace)
    return models


def _item_refs(schema: dict[str, Any]) -> dict[str, str]:
    """The properties of ``schema`` that are arrays of a named schema: field -> name."""
    found = {}
    for field, value in schema.get("properties", {}).items():
        ref = value.get("items", {}).get("$ref") if value.get("type") == "array" else None
        if ref is not None:
            found[field] = ref.rsplit("/", 1)[1]
    return found


def _written_schema(schema: dict[str, Any]) -> Any:
    """A pydantic JSON-schema hook that gives ``schema`` (its arrays' items: pydantic's refs)."""

    def hook(cls: type[Any], core_schema: Any, handler: Any) -> dict[str, Any]:
        written = copy.deepcopy(schema)
        fields = _item_refs(schema)
        if not fields:
            return written
        generated = handler(core_schema)
        definition = handler.resolve_ref_schema(generated)
        for field in fields:
            written["properties"][field]["items"] = definition["properties"][field]["items"]
        definition.clear()
        definition.update(written)
        return generated  # type: ignore[no-any-return]

    return hook
