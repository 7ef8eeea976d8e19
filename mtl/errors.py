"""Errors the user can act on: each names the component, file or field that is wrong."""


class MtlError(Exception):
    """Base of every error mtl raises on purpose."""


class ContractError(MtlError):
    """Two components were joined but one lacks a field the other needs."""


class DataError(MtlError):
    """A data file is malformed; the message names the file, the line and the fix."""

    def __init__(self, path: str, line: int | None, problem: str, fix: str = "") -> None:
        where = f"{path}, line {line}" if line is not None else str(path)
        message = f"{where}: {problem}"
        if fix:
            message += f" ({fix})"
        super().__init__(message)
        self.path, self.line = path, line


def check_contract(provider: object, provided: set[str], consumer: object, needed: tuple[str, ...]) -> None:
    """Fail once, up front, naming both components, when `consumer` needs a field `provider` lacks."""
    missing = [field for field in needed if field not in provided]
    if missing:
        raise ContractError(
            f"{type(consumer).__name__} needs {missing} but {type(provider).__name__} provides only "
            f"{sorted(provided)}"
        )


class ConfigError(MtlError):
    """A config is wrong; the message names the key (its dotted path in the file) and the component."""
