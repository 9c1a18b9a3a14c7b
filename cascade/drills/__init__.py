"""Resilience drills: a TCP fault proxy, an open-loop load generator, drills D1-D8, reports.

``python -m cascade.drills`` (``make drill``) runs them against a stack it starts;
``python -m cascade.drills.loadtest`` (``make loadtest``) runs Locust against the local stack.
"""
