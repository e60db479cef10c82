"""A real Prometheus alert rule fires through a real Alertmanager into the guardian (`guardian serve`
as a subprocess, Alertmanager authenticating with its own bearer token), which rolls back the
rollout the alert is about; the resolution Alertmanager sends afterwards clears it."""
from __future__ import annotations

import shutil

import pytest


@pytest.mark.skipif(not (shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")),
                    reason="Alertmanager is not installed (scripts/test.sh installs prometheus-alertmanager)")
def test_an_alert_rule_firing_rolls_the_rollout_back_within_seconds(tmp_path):
    from tests.fixtures.alert_drill import AlertDrill

    with AlertDrill(tmp_path) as drill:
        figures = drill.run()
        assert figures["source"] == "alertmanager"
        assert "CheckoutCanaryErrors" in figures["reason"] and "rollback" in figures["reason"]
        assert 0 <= figures["condition_to_decision_s"] <= 5, figures
        assert figures["injection_to_decision_s"] <= 10, figures
        stored = drill.guardian.api("GET", "/v1/alerts", params={"all": True}).json()
        assert [a["status"] for a in stored if a["name"] == "CheckoutCanaryErrors"] == ["resolved"]
        # Alertmanager was refused nothing: every post carried its token
        assert "401" not in drill.alertmanager.log_tail()
