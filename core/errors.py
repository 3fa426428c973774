"""One error type for bad input, so every CLI failure is one line that names the field and the fix."""

from __future__ import annotations


class StudyError(ValueError):
    """A study (or its overrides, data, model or resources) is not usable.

    ``field`` is the dotted path of the offending key, ``fix`` what the user should do.
    """

    def __init__(self, field: str, problem: str, fix: str = "") -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = f"{self.field}: {self.problem}" if self.field else self.problem
        if self.fix:
            text += f" (fix: {self.fix})"
        return " ".join(text.split())


class SweepError(RuntimeError):
    """The sweep started but cannot go on (for example no trial can get resources).

    The CLI prints it as one line and exits 1; the MLflow parent run ends FAILED with it.
    """
