"""Workstation commands (train-head, evaluate, collect, report, the full bench): never imported by `soundmond run`."""
