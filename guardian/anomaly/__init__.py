"""Anomalies in one metric series, offline: `guardian detect IN.csv`. Not used by the engine's checks.

detector.py  the streaming, causal detector (spike, shift, daily season; one score per row). Pure.
detect.py    CSV in (timestamp,value), scores and alarms out; its input errors name the file and line.
"""
