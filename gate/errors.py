"""The gate's exceptions. Every message names the input and says what to do.

    GateError                 base; carries the process exit code
    ├── BadInput              exit 2: the user's input is wrong (file, policy, flag, concept)
    └── InternalError         exit 3: the tool itself failed

Exit code 1 is reserved for a failing verdict, 0 for a pass.
"""

from __future__ import annotations

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3


class GateError(Exception):
    exit_code = EXIT_INTERNAL


class BadInput(GateError):
    exit_code = EXIT_BAD_INPUT


class InternalError(GateError):
    exit_code = EXIT_INTERNAL
