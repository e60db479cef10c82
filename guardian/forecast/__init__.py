"""The seasonal forecast ("the 3σ forecast", `kind: baseline` checks): what a service did at the same time of
the week before, as a model a signal is judged against when there is no concurrent baseline arm.

model.py        the model: forecast(t) -> (centre, σ); its JSON format (guardian-baseline/v1). Pure.
fitting.py      fit(timestamps, values) -> model: profile, Theil–Sen trend, robust σ. Pure.
history.py      weeks of history from Prometheus (chunked query_range) -> fit (`guardian baseline fit`).
model_files.py  models/<service>/<signal>.json; the models frozen at a rollout's start (ModelLoader).

The check that judges a rollout against its frozen model is `guardian.judge.forecast`.
"""
