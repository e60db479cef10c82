"""Named operator tokens: each acts like the operator token and the decision log says who acted; the viewer token
may read but not act; bad names are refused at start."""
from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from guardian.api.app import create_app
from guardian.api.components import build
from guardian.clock import FakeClock
from guardian.settings import Settings
from guardian.sources.recording import RecordingSource
from tests.fixtures.env import clean_guardian_env  # noqa: F401 - the fixture
from tests.unit.recordings import steady_recording

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("clean_guardian_env")


def test_the_decision_log_names_the_operator_and_a_viewer_cannot_act(tmp_path):
    s = Settings(db_path=str(tmp_path / "g.db"), rules=[str(REPO / "rules")], recordings_dir="", token="unnamed-tok",
                 operator_tokens={"alice": "alice-secret-1"}, viewer_token="viewer-secret-1")
    c = build(s, source=RecordingSource(steady_recording(20)), clock=FakeClock())
    with TestClient(create_app(c, run_scheduler=False)) as client:
        def as_(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        r = client.post("/v1/rollouts", json={"service": "checkout", "image": "checkout:v2"},
                        headers=as_("alice-secret-1"))
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
        assert client.post(f"/v1/rollouts/{rid}/pause", headers=as_("viewer-secret-1")).status_code == 401
        assert client.post(f"/v1/rollouts/{rid}/pause", headers=as_("alice-secret-1")).status_code == 200
        assert client.post(f"/v1/rollouts/{rid}/resume", headers=as_("unnamed-tok")).status_code == 200
        assert client.get(f"/v1/rollouts/{rid}").status_code == 401  # with a viewer token, reading needs a token
        assert client.get("/v1/alerts", headers=as_("wrong-token")).status_code == 401
        assert client.get("/v1/rules", headers=as_("viewer-secret-1")).status_code == 200
        assert client.get("/metrics").status_code == 200 and client.get("/healthz").status_code == 200  # open
        decisions = client.get(f"/v1/rollouts/{rid}", headers=as_("alice-secret-1")).json()["decisions"]
    pause, resume = decisions[-2:]
    assert (pause["action"], pause["source"], pause["by"], pause["reason"]) == ("pause", "user", "alice",
                                                                                "pause by alice")
    assert (resume["action"], resume["source"], "by" in resume) == ("resume", "user", False)


@pytest.mark.parametrize(("tokens", "says"), [
    ({"user": "long-enough-1"}, "not one of"),
    ({"al ice": "long-enough-1"}, "letters, digits"),
    ({"alice": "short"}, "shorter than 8 characters"),
])
def test_a_bad_operator_token_name_or_secret_is_refused(tokens, says):
    with pytest.raises(ValidationError) as e:
        Settings(operator_tokens=tokens)
    assert says in str(e.value)
