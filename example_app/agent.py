"""The stand-in agent: it echoes the message after a short delay, and stores each turn.

``POST /agent/sessions/{session_id}/messages`` ``{"message": "..."}`` answers with the
chat task, shaped as the HTTP API shows it. A real gateway would call its model here.
What it shows is how a gateway's own route stores a turn with the middleware's
``SessionService``: the user's message first (so it is never lost, and a reload shows
it while the reply is on its way), then the reply, both as one chat task of the
caller's conversation. Its body is read as the API reads one
(``agentsession.api.read_json_body``: 1 MiB at most, JSON only, refused before it is
read when too large), and the package's exceptions it raises are answered by the
handlers ``install_error_handlers`` put on the app, so the route's errors have the
API's shape.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from agentsession import InvalidInput, SessionNotFound, get_session_service
from agentsession.api import ApiError, read_json_body, task_json
from agentsession.identity import resolve_user

#: Seconds the agent "thinks" before it answers, so that a reply is seen arriving.
REPLY_DELAY: Final = 0.6
#: Longest message the agent takes, in characters.
MAX_MESSAGE_LENGTH: Final = 4000


def reply_to(message: str) -> list[dict[str, str]]:
    """The agent's answer: its message bubbles."""
    return [{"text": f"You said: {message}"}]


def agent_router(delay: float = REPLY_DELAY) -> APIRouter:
    """``POST /agent/sessions/{session_id}/messages`` ``{message}``: the stored turn."""
    router = APIRouter(prefix="/agent", tags=["agent"])

    @router.post("/sessions/{session_id}/messages")
    async def send_message(session_id: str, request: Request) -> JSONResponse:
        service = get_session_service(request)
        task_id = secrets.token_urlsafe(12)
        try:
            user = await resolve_user(request)
            if user is None:
                raise ApiError(401, "unauthorized", "no user could be resolved for this request")
            message = await _message(request)
            await service.save_task(
                user,
                session_id,
                task_id,
                user_message=message,
                message_bubbles=[],
                task_metadata={"status": "pending"},
                # The user's own activity, as the API's chat-task route: the conversation
                # is marked viewed and its expiry (session_service.ttl) slides.
                viewed=True,
            )
            await asyncio.sleep(delay)
            task = await service.save_task(
                user,
                session_id,
                task_id,
                user_message=message,
                message_bubbles=reply_to(message),
                task_metadata={"status": "done", "agent": "echo"},
            )
        except SessionNotFound:
            # The path's conversation: named, as the route's one path parameter.
            raise ApiError(404, "not_found", "no such conversation", "sessionId") from None
        except InvalidInput as error:
            raise ApiError(422, "invalid_input", str(error), "sessionId") from None
        # Other errors (an ApiError from the body's checks, StoreUnavailable while the
        # database restarts) reach the handlers ``install_error_handlers`` put on the app.
        return JSONResponse(task_json(task))

    return router


async def _message(request: Request) -> str:
    """The body's ``message``; an ``ApiError`` says what is wrong with it."""
    body = await read_json_body(request)  # bounded in size and depth, as the API reads
    if not isinstance(body, dict) or set(body) != {"message"}:
        raise ApiError(422, "invalid_input", 'the body must be {"message": "..."}', "message")
    message = body["message"]
    if not isinstance(message, str) or not message.strip():
        raise ApiError(422, "invalid_input", "the message must be a non-empty string", "message")
    if len(message) > MAX_MESSAGE_LENGTH:
        raise ApiError(
            422,
            "invalid_input",
            f"the message is over {MAX_MESSAGE_LENGTH} characters",
            "message",
        )
    return message
