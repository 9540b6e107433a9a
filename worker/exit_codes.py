"""Named exit codes of the `triage` command (documented in the README)."""

OK = 0
SOME_INPUTS_FAILED = 1
USAGE = 2
CONFIG_ERROR = 3
MODEL_ERROR = 4
CANNOT_CONNECT = 5
GATE_REFUSED = 6  # `triage retrain`: the candidate failed the promotion gate, kept aside
INTERRUPTED = 130
