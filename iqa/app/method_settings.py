"""What the page gives the methods: each registered method reads the settings named in its
`Method.arguments` (the prompt table's `pairs`, the `temperature`, a `checkpoint`), and one whose
`required` options the page cannot give is left unscored with its `Method.unscored` message.

No method is named here: a method registered by a plug-in is scored with what it asks for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from iqa.app.models import CheckpointRef, checkpoint_in
from iqa.methods import registry
from iqa.methods.prompts import PromptPair


@dataclass(frozen=True)
class MethodRequest:
    """One method to score and its options (a picklable mapping, sent across the GPU boundary)."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def checkpoint(self) -> CheckpointRef | None:
        return checkpoint_in(self.options)


@dataclass(frozen=True)
class MethodSettings:
    """The page's settings, by the option names methods read."""

    pairs: tuple[PromptPair, ...] = ()
    temperature: float | None = None  # None: the checkpoint's own logit scale
    checkpoint: CheckpointRef | None = None

    def given(self) -> dict[str, Any]:
        """The options the page gives now (an empty table or no checkpoint gives none of its kind)."""
        values = {"pairs": self.pairs, "temperature": self.temperature, "checkpoint": self.checkpoint}
        return {name: value for name, value in values.items() if value not in (None, ())}

    def requests(self, names: Sequence[str]) -> tuple[list[MethodRequest], dict[str, str]]:
        """A request for each of `names` the page can score, and for the others why not (by name)."""
        given = self.given()
        requests, unscored = [], {}
        for name in names:
            method = registry.method(name)
            lacking = [option for option in method.required if option not in given]
            if lacking:
                unscored[name] = method.unscored or f"it needs {', '.join(lacking)}, which this page cannot give"
                continue
            requests.append(MethodRequest(name, {a: given[a] for a in method.arguments if a in given}))
        return requests, unscored
