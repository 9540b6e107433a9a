"""Benchmarks of mairie-triage, run by `make bench` (not part of `make test`)."""
