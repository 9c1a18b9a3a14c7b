"""Offline evaluation: temporal split, ranking metrics, reports. Every model is judged here."""
