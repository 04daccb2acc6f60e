"""The process exit codes of the warm job and the CLI, defined once; pure constants, no imports.

docs/design.md, Exit codes, says which outcome exits with which code.
"""

EXIT_OK = 0  # published, superseded, or another run in progress
EXIT_FAILED = 1  # nothing new published (at most the last known data restored)
EXIT_CONFIG = 2  # bad configuration: settings, database path, Last.fm key
