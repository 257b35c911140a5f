"""A user's data on every backend: export -> erase -> import gives back the same rows;
another user's rows are never exported nor touched; a conflict imports nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentsession.errors import IdConflict, InvalidInput
from agentsession.service import SessionService
from tests.conftest import MakeService, new_user

pytestmark = pytest.mark.anyio


async def _fill(service: SessionService, user: str, conversations: int = 3) -> None:
    for c in range(conversations):
        record = await service.create_session(user, name=f"chat {c}", agent_id="agent")
        state = await service.state(user, record.id)
        await state.update({"k": c, "nested": {"list": [1, "two", None]}})
        for t in range(4):
            await service.save_task(
                user,
                record.id,
                f"{record.id}-t{t}",
                user_message=f"hello {t} ✓",
                message_bubbles=[{"type": "text", "text": f"reply {t}"}],
                task_metadata={"n": t},
            )
        await service.add_feedback(user, record.id, f"{record.id}-t0", "up", "good")
        await service.add_feedback(user, record.id, f"{record.id}-t1", "down")


async def _export(service: SessionService, user: str) -> dict[str, Any]:
    raw = b"".join([chunk async for chunk in service.export_user(user)])
    document: dict[str, Any] = json.loads(raw)
    return document


def _rows(document: dict[str, Any]) -> dict[str, Any]:
    """The document without its export time: what must survive a round trip."""
    return {k: v for k, v in document.items() if k != "exportedAt"}


async def test_export_erase_import_round_trip(make_service: MakeService) -> None:
    service = await make_service()
    user, other = new_user(), new_user()
    await _fill(service, user)
    await _fill(service, other, conversations=2)
    other_before = _rows(await _export(service, other))

    document = await _export(service, user)
    assert document["format"] == "agentsession-user-export"
    assert document["version"] == 1
    assert document["userId"] == user
    assert len(document["conversations"]) == 3
    assert sum(len(c["chatTasks"]) for c in document["conversations"]) == 12
    assert len(document["feedback"]) == 6
    assert all(c["state"]["default"]["k"] in (0, 1, 2) for c in document["conversations"])
    text = json.dumps(document)
    assert other not in text  # another user's data is never in an export

    deleted = await service.erase_user(user, batch_size=5)
    assert deleted == 3 + 12 + 6
    assert (await service.list_sessions(user)).items == []
    assert _rows(await _export(service, user))["conversations"] == []
    assert _rows(await _export(service, other)) == other_before  # untouched by the erase

    counts = await service.import_user(json.dumps(document))
    assert tuple(counts) == (3, 12, 6)
    assert _rows(await _export(service, user)) == _rows(document)
    assert _rows(await _export(service, other)) == other_before
    # The imported rows work as any others.
    first = document["conversations"][0]["id"]
    page = await service.list_tasks(user, first)
    assert [task.id for task in page.items] == [f"{first}-t{t}" for t in range(4)]
    state = await service.state(user, first)
    await state.set("after", True)


async def test_import_conflict_writes_nothing(make_service: MakeService) -> None:
    service = await make_service()
    user = new_user()
    await _fill(service, user, conversations=2)
    document = await _export(service, user)
    # Into another user, the conversation ids (global) are taken: nothing is written.
    target = new_user()
    with pytest.raises(IdConflict) as raised:
        await service.import_user(document, user_id=target)
    assert raised.value.field == "session_id"
    assert _rows(await _export(service, target))["conversations"] == []

    # The second conversation's id taken, the first not: still nothing written.
    await service.erase_user(user)
    taken = document["conversations"][1]["id"]
    await service.create_session(new_user(), session_id=taken)
    with pytest.raises(IdConflict):
        await service.import_user(document)
    assert _rows(await _export(service, user))["conversations"] == []


async def test_import_checks_the_document(service: SessionService) -> None:
    user = new_user()
    with pytest.raises(InvalidInput) as raised:
        await service.import_user({"format": "other", "version": 1})
    assert raised.value.field == "format"
    bad = {
        "format": "agentsession-user-export",
        "version": 1,
        "userId": user,
        "conversations": [{"id": "c1", "createdTime": "yesterday", "updatedTime": 1}],
        "feedback": [],
    }
    with pytest.raises(InvalidInput) as raised:
        await service.import_user(bad)
    assert raised.value.field == "conversations[0].createdTime"
    assert (await service.list_sessions(user)).items == []


async def test_erase_revokes_the_user(service: SessionService) -> None:
    user = new_user()
    await _fill(service, user, conversations=1)
    await service.erase_user(user)
    found = await service.list_revocations(0)
    assert any(item.kind == "user" and item.subject == user for item in found)


async def test_pinned_conversations_survive_export_erase_import(make_service: MakeService) -> None:
    service = await make_service()
    user = new_user()
    await _fill(service, user, conversations=3)
    pinned = (await service.list_sessions(user)).items[1].id
    await service.pin_session(user, pinned)
    document = await _export(service, user)
    flags = {item["id"]: item["pinned"] for item in document["conversations"]}
    assert flags == {item_id: item_id == pinned for item_id in flags}

    await service.erase_user(user)
    assert tuple(await service.import_user(json.dumps(document))) == (3, 12, 6)
    assert [item.id for item in (await service.list_sessions(user, pinned=True)).items] == [pinned]
    assert len((await service.list_sessions(user, pinned=False)).items) == 2
    assert _rows(await _export(service, user)) == _rows(document)


async def test_a_document_without_pinned_imports_unpinned(service: SessionService) -> None:
    """Documents written before ``pinned`` existed still import: every conversation
    unpinned. A ``pinned`` that is not true or false is refused, naming the field."""
    user = new_user()
    await _fill(service, user, conversations=2)
    await service.pin_session(user, (await service.list_sessions(user)).items[0].id)
    document = await _export(service, user)
    await service.erase_user(user)

    wrong = json.loads(json.dumps(document))
    wrong["conversations"][1]["pinned"] = "yes"
    with pytest.raises(InvalidInput) as raised:
        await service.import_user(wrong)
    assert raised.value.field == "conversations[1].pinned"
    assert (await service.list_sessions(user)).items == []

    for item in document["conversations"]:
        del item["pinned"]
    await service.import_user(document)
    listed = (await service.list_sessions(user)).items
    assert len(listed) == 2
    assert not any(item.pinned for item in listed)
    assert (await service.list_sessions(user, pinned=True)).items == []
