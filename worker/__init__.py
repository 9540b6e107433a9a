"""mairie-triage worker: intake, parsing, routing, delivery and the command line."""

__version__ = "0.1.0"
