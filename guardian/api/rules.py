"""/v1/rules: the policy the guardian judges by, per service, and its reload (keeping the last good rules of a
file that no longer parses). Handlers are plain `def`: they run in the thread pool."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from guardian.api.deps import Deps, Mutating, Reading

router = APIRouter()


@router.post("/v1/rules/reload", dependencies=Mutating)
def reload_rules(c: Deps, response: Response) -> dict[str, Any]:
    problems = c.rulebook.reload()
    if problems:
        response.status_code = 422
        return {"error": "invalid_rules", "detail": [str(p) for p in problems],
                "kept": sorted(c.rulebook.services())}
    return {"services": sorted(c.rulebook.services())}


@router.get("/v1/rules", dependencies=Reading)
def get_rules(c: Deps) -> dict[str, Any]:
    return {
        name: {"source": rs.source, "checks": [ch.model_dump(by_alias=True) for ch in rs.rules.checks]}
        for name, rs in c.rulebook.services().items()
    } | {"last_reload_problems": [str(p) for p in c.rulebook.last_problems]}
