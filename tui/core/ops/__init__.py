"""User intents (bitmap and job operations): validate against the model, then execute.

No Textual here: the screens, the headless commands and the tests share these functions. Every
operation returns an :class:`Outcome` whose ``message`` is the one line the operator sees.
"""

from tui.core.ops.common import Check, Outcome, Target

__all__ = ["Check", "Outcome", "Target"]
