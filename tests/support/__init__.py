"""Helpers shared by the tests: render queries, policy walkers, the API server, e2e pods and load."""
