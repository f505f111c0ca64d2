"""The sensor's own commands, one module each (`run`, `analyze`, `check_config`, `devices`): `add_arguments(parser)`
and `run(args) -> exit code`. `soundmond.cli` imports only the one that is chosen."""
