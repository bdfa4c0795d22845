"""The endpoints a configuration file declares, each checked into a typed EndpointConfig.

A file speaks an operator's words where the command line has flags:
`listen` is -S, `command` the program and its arguments, `pin = "command"`
is -f, `environment` a table of -e entries and `client-environment = false`
is -E, `limits` a table of --limit entries. Every other field is the long name of a capsudod option
(`max-sessions`, `tls-cert`, `owner`, …) and takes what that option takes,
durations and sizes in human form. A field nobody knows is an error, since a
typo must not silently widen an endpoint; so is a field this version cannot
honour yet. Each error is one line naming the file, the line and the field.
"""

from __future__ import annotations

from dataclasses import dataclass

from capsudo.core import EndpointConfig, UsageError, build_config, config_fields

from ._approval import ApprovalSettings, approval_settings
from ._config_file import ConfigFile, ConfigFileError, EndpointTable, Located, read_config_file

DEFAULT_CONFIG = "/etc/capsudo/capsudo.toml"

# The file's words for what the command line says with flags and operands.
_SPELLED_BY_FLAGS = {"endpoint": "listen", "program": "command", "fixed-arguments": "pin",
                     "fixed-environment": "client-environment", "env": "environment", "limit": "limits"}
_PINS = {"command": True, "prefix": False}
_WHEN_REMOVED = {"hang-up": False, "finish": True}
# Fields of the operator's vocabulary that this version does not serve yet:
# refused rather than ignored, since ignoring `approve = true` would run
# without the approval the operator asked for.
_NOT_YET = ("password",)
# What an `expose` entry may say: how it listens; all else is the endpoint's.
_LISTENING = ("listen", "owner", "mode", "allow-unsafe-directory", "tls-cert", "tls-key", "tls-ca")
_INHERITED = ("owner", "mode", "allow-unsafe-directory")


@dataclass(frozen=True)
class DeclaredEndpoint:
    """One endpoint of the file: its configuration and what only the file says about it."""

    name: str
    config: EndpointConfig
    #: On a reload that removes it: let its sessions finish, rather than hang them up.
    finish_when_removed: bool = False
    #: Further places it is offered (`expose`): its configuration, listening elsewhere.
    exposures: tuple[EndpointConfig, ...] = ()
    #: When each session waits for a person's decision (`approve = true`).
    approval: ApprovalSettings | None = None

    @property
    def description(self) -> str:
        return self.config.description


def file_fields() -> tuple[str, ...]:
    """Every field an endpoint's table may hold."""
    flags = [name for name in config_fields() if name not in _SPELLED_BY_FLAGS]
    return (*_SPELLED_BY_FLAGS.values(), "when-removed", "expose", *flags)


def declared_endpoints(path: str) -> dict[str, DeclaredEndpoint]:
    """The endpoints of the file at `path`, in its order; ConfigFileError for any mistake."""
    config, _ = read_config_file(path, extra_tables=("control",))
    if not config.endpoints:
        raise ConfigFileError(f"{path}: declares no endpoint (an [endpoint.NAME] table with `listen`)")
    return {name: _declared(config, table) for name, table in config.endpoints.items()}


def _declared(config: ConfigFile, table: EndpointTable) -> DeclaredEndpoint:
    values: dict[str, object] = {}
    lines: dict[str, int] = {}
    finish, expose = False, None
    for key, located in table.fields.items():
        where = f"{ENDPOINT_PREFIX}{table.name}.{key}"

        def wrong(what: str, line: int = located.line) -> ConfigFileError:
            return config.error(line, f"{where}: {what}")

        if key in _NOT_YET:
            raise wrong("not supported by this capsudod yet")
        if key in _SPELLED_BY_FLAGS:
            raise wrong(f"in a file this is `{_SPELLED_BY_FLAGS[key]}`")
        if key == "expose":
            expose = located
        elif key == "when-removed":
            finish = _choice(located, _WHEN_REMOVED, wrong)
        elif key == "listen":
            values["endpoint"] = _text(located, wrong)
        elif key == "command":
            command = located.value
            if not (isinstance(command, list) and command and all(isinstance(word, str) for word in command)):
                raise wrong('takes the program and its arguments as a list of strings, e.g. ["systemctl", "restart"]')
            values["program"] = command
        elif key == "pin":
            values["fixed-arguments"] = _choice(located, _PINS, wrong)
        elif key == "client-environment":
            if not isinstance(located.value, bool):
                raise wrong(f"takes true or false, got {located.value!r}")
            values["fixed-environment"] = not located.value
        elif key == "environment":
            values["env"] = _environment(located, wrong)
        elif key == "limits":
            values["limit"] = _limits(located, wrong)
        elif key in config_fields():
            values[key] = located.value
        else:
            raise wrong(f"unknown field (known: {', '.join(file_fields())})")
        lines[_SPELLED_BY_FLAGS.get(key, key)] = located.line
    if "endpoint" not in values:
        raise config.error(table.line, f"{ENDPOINT_PREFIX}{table.name}: needs `listen`, the address to serve it on")
    labels = {field: f"{ENDPOINT_PREFIX}{table.name}.{_SPELLED_BY_FLAGS.get(field, field)}" for field in values}
    try:
        endpoint_config = build_config(values, labels)
    except UsageError as exc:
        # The message starts with the field it is about, where it can say.
        message = str(exc)
        line = next((lines[field] for field, label in labels.items() if message.startswith(label)), table.line)
        raise config.error(line, message) from None
    exposures = _exposures(config, table, values, expose) if expose is not None else ()
    try:
        approval = approval_settings(values, labels)
    except UsageError as exc:
        raise config.error(table.line, str(exc)) from None
    return DeclaredEndpoint(table.name, endpoint_config, finish, exposures, approval)


def _exposures(config: ConfigFile, table: EndpointTable, values: dict, expose: Located) -> tuple[EndpointConfig, ...]:
    """Each `expose` entry as the endpoint's own configuration, listening where the entry says.

    An entry is an address (a string), which keeps the endpoint's owner,
    mode and allow-unsafe-directory, or a table of how it listens (`listen`,
    `owner`, `mode`, `allow-unsafe-directory`, `tls-cert`, `tls-key`, `tls-ca`).
    """
    where = f"{ENDPOINT_PREFIX}{table.name}.expose"
    entries = expose.value if isinstance(expose.value, list) else None
    if not entries:
        raise config.error(expose.line, f"{where}: takes a list of addresses or tables, e.g. "
                                        '["/srv/agent/run/cap/NAME", { listen = "tls://0.0.0.0:7001", … }]')
    common = {key: value for key, value in values.items()
              if key not in ("endpoint", "tls-cert", "tls-key", "tls-ca") and key not in _INHERITED}
    inherited = {key: values[key] for key in _INHERITED if key in values}
    exposures = []
    for index, entry in enumerate(entries):
        label = f"{where}[{index}]"
        if isinstance(entry, str):
            entry = {"listen": entry}
        if not isinstance(entry, dict) or "listen" not in entry:
            raise config.error(expose.line, f"{label}: an address, or a table with `listen`")
        unknown = [key for key in entry if key not in _LISTENING]
        if unknown:
            raise config.error(expose.line, f"{label}.{unknown[0]}: not for an exposure (it may say: "
                                            f"{', '.join(_LISTENING)})")
        listening = {("endpoint" if key == "listen" else key): value for key, value in entry.items()}
        # A socket's owner and mode carry over to another socket, not to a network address.
        own = {**common, **(inherited if _is_unix_address(entry["listen"]) else {}), **listening}
        try:
            exposures.append(build_config(own, {key: f"{label}.{key}" for key in own}))
        except UsageError as exc:
            raise config.error(expose.line, str(exc)) from None
    return tuple(exposures)


ENDPOINT_PREFIX = "endpoint."


def _text(located: Located, wrong) -> str:
    if not isinstance(located.value, str):
        raise wrong(f"takes a string, got {located.value!r}")
    return located.value


def _choice(located: Located, choices: dict[str, bool], wrong) -> bool:
    if located.value not in choices:
        raise wrong(f"takes {' or '.join(repr(choice) for choice in choices)}, got {located.value!r}")
    return choices[located.value]


def _environment(located: Located, wrong) -> list[str]:
    table = located.value
    if not isinstance(table, dict) or not all(isinstance(value, str) for value in table.values()):
        raise wrong('takes a table of strings, e.g. { LANG = "C.UTF-8" }')
    for key in table:
        if not key or "=" in key or "\0" in key:
            raise wrong(f"{key!r} cannot be the name of an environment entry")
    return [f"{key}={value}" for key, value in table.items()]


def _limits(located: Located, wrong) -> list[str]:
    table = located.value
    if not isinstance(table, dict) or not all(isinstance(value, (int, str)) and not isinstance(value, bool)
                                              for value in table.values()):
        raise wrong('takes a table of numbers and sizes, e.g. { nofile = 1024, memory = "1G" }')
    return [f"{name}={value}" for name, value in table.items()]


def _is_unix_address(address: object) -> bool:
    from capsudo.transport import UnixEndpoint, parse_endpoint

    try:
        return isinstance(parse_endpoint(address), UnixEndpoint) if isinstance(address, str) else False
    except ValueError:
        return False  # build_config says what is wrong with it
