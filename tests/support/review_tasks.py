"""Client types whose subject field pydantic reads under another name than the gateway's check (from a hostile
review): an alias, and a "before" model validator that fills the field from another key."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator

from meetingtasks.core.registry import task_type


class AliasedOwner(BaseModel):
    user_id: str = Field(alias="uid")
    tag: str = ""


@task_type("ai", "t_owned_aliased", payload=AliasedOwner, client=True, subject_field="user_id")
def t_owned_aliased(p: AliasedOwner) -> dict[str, Any]:
    return {"user_id": p.user_id, "tag": p.tag}


class OwnerFromLegacyKey(BaseModel):
    user_id: str
    tag: str = ""

    @model_validator(mode="before")
    @classmethod
    def _legacy_owner(cls, data: Any) -> Any:
        # An old client's key wins over the new one (a plausible migration shim).
        if isinstance(data, dict) and "owner" in data:
            data = {**data, "user_id": data["owner"]}
            del data["owner"]
        return data


@task_type("ai", "t_owned_legacy", payload=OwnerFromLegacyKey, client=True, subject_field="user_id")
def t_owned_legacy(p: OwnerFromLegacyKey) -> dict[str, Any]:
    return {"user_id": p.user_id, "tag": p.tag}
