"""`{name}` in a prompt -> the value of `name` in the user's namespace.

Only a bare identifier in single braces is filled, by plain lookup (never evaluated), so JSON and
other braces in a prompt are left exactly as written; `{{name}}` keeps literal braces.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

PLACEHOLDER = re.compile(r"\{\{[A-Za-z_]\w*\}\}|\{([A-Za-z_]\w*)\}")


class FillError(KeyError):
    def __str__(self) -> str:
        return self.args[0]


def fill(prompt: str, namespace: Mapping[str, object]) -> str:
    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name is None:  # {{name}}: literal braces around the name
            return match.group(0)[1:-1]
        if name not in namespace:
            raise FillError(f"the prompt uses {{{name}}} but no variable {name} is defined; "
                            f"define it, or write {{{{{name}}}}} for literal braces")
        return str(namespace[name])

    return PLACEHOLDER.sub(replace, prompt)
