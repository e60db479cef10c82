"""The one exception tree of the guardian.

GuardianError
├── SourceError            a metric could not be read
│   ├── NoData             the source answered, but has no sample for this signal/arm/time
│   └── SourceUnavailable  the source did not answer (down, timeout, HTTP 5xx, bad query)
├── RuleError              a rule file is invalid; carries every Problem (file, line, field, message)
├── ActuatorError          an action could not be carried out (after its retries)
│   └── UnknownActuator    a target names an actuator the registry does not know
├── RecordingError         a recording file is not guardian-recording/v1
├── ModelMissing           a rollout's rules need a forecast model that is missing or unusable
├── ModelFormatError       a document is not a forecast model (guardian-baseline/v1)   (also a ValueError)
├── InsufficientHistory    too little history to fit a forecast model                  (also a ValueError)
├── DetectInputError       `guardian detect`'s CSV or parameter file cannot be used    (also a ValueError)
└── StoreError             the state store refused an operation
    ├── RolloutNotFound    no rollout with that id
    └── RolloutConflict    the operation clashes with the rollout's state (e.g. one already in flight)
        ├── RolloutEnded   the rollout ended already (a command filed for its holder would never be taken)
        └── LeaseLost      another guardian replica holds the rollout's lease: this one may not write
            └── LeaseRefused   … refused before anything was written (the command may go to the holder)

Missing data is never a zero: sources raise NoData, and judges turn it into *inconclusive*.
"""
from __future__ import annotations

from dataclasses import dataclass


class GuardianError(Exception):
    """Base of every error the guardian raises on purpose."""


class SourceError(GuardianError):
    pass


class NoData(SourceError):
    """The source answered, but returned no usable sample (empty vector, NaN)."""


class SourceUnavailable(SourceError):
    """The source could not be asked: connection refused, timeout, 5xx or a rejected query."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a rule file: `FILE:LINE: field.path: message`."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class RuleError(GuardianError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ActuatorError(GuardianError):
    pass


class UnknownActuator(ActuatorError):
    pass


class RecordingError(GuardianError):
    pass


class ModelMissing(GuardianError):
    """A `kind: baseline` check needs a model (models/<service>/<signal>.json) that cannot be used."""


class ModelFormatError(GuardianError, ValueError):
    """A document is not a valid guardian-baseline/v1 forecast model."""


class InsufficientHistory(GuardianError, ValueError):
    """The history cannot support a forecast model: no finite values, or too little of the period covered."""


class DetectInputError(GuardianError, ValueError):
    """`guardian detect`'s IN.csv (or its parameter file) cannot be used: the message names the file, and the row
    if one is bad."""


class NotBatchable(GuardianError, ValueError):
    """A query template that cannot be asked for many rollouts at once; the message says why."""


class StoreError(GuardianError):
    pass


class RolloutNotFound(StoreError):
    pass


class RolloutConflict(StoreError):
    pass


class ReleaseFrozen(RolloutConflict):
    """A critical alert firing for the service forbids starting a rollout of it (unless forced)."""


class RolloutEnded(RolloutConflict):
    """The rollout ended (promoted, rolled back, a watch ended): nothing can be filed for it any more."""


class LeaseLost(RolloutConflict):
    """Another replica holds the rollout's lease (or took it over): this replica's write was refused."""


class LeaseRefused(LeaseLost):
    """The store refused a write because another replica holds the rollout, and nothing of the refused step was
    written. A plain LeaseLost, raised after an action was carried out (its outcome could not be recorded), is not
    one: the action must not be handed to the holder, whose resumption of the pending operation records it."""
