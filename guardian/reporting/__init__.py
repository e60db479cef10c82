"""A rollout told to people: explain.py (pure: its decisions in plain words with their evidence, for the API,
the CLI, replay and Grafana's annotations) and report.py (the picture: PNG, or HTML with the explanation)."""
