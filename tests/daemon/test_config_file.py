"""The configuration file's shape: tables, endpoint names, and the line of every field."""

from __future__ import annotations

import pytest

from capsudo.daemon._config_file import ConfigFileError, read_config_file

FILE = '''\
# two endpoints over shared defaults
[defaults]
owner = "root:agents"
mode = "0660"

[endpoint.restart-nginx]
listen = "/run/capsudo/restart-nginx"
command = [
  "systemctl",   # a comment with = and [ in it
  "restart",
]
description = """
not = a key
"""
limits = { nofile = 1024 }

[endpoint."date"]
listen = "/run/capsudo/date"
mode = "0600"
limits.nofile = 3
'''


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "capsudo.toml"
    path.write_text(text)
    return str(path)


def test_each_field_knows_its_line_and_an_endpoint_overrides_the_defaults(tmp_path):
    config, _ = read_config_file(_write(tmp_path, FILE))
    assert list(config.endpoints) == ["restart-nginx", "date"]
    nginx, date = config.endpoints["restart-nginx"], config.endpoints["date"]
    assert (nginx.line, date.line) == (6, 17)
    assert {key: located.line for key, located in nginx.fields.items()} == {
        "owner": 3, "mode": 4, "listen": 7, "command": 8, "description": 12, "limits": 15}
    assert nginx.fields["command"].value == ["systemctl", "restart"]
    assert (date.fields["mode"].value, date.fields["mode"].line) == ("0600", 19)
    assert (date.fields["limits"].value, date.fields["limits"].line) == ({"nofile": 3}, 20)
    assert date.fields["owner"].line == 3  # from [defaults]


@pytest.mark.parametrize(("text", "message"), [
    ('[endpoint.a]\nlisten = \n', ":2: Invalid value"),
    ('[endpoint.a]\nlisten = "/x"\n\n[endpont.b]\nlisten = "/y"\n', ":4: endpont: unknown table"),
    ('defaults = 3\n', ":1: defaults: must be a table"),
    ('[endpoint."a b"]\nlisten = "/x"\n', ":1: endpoint.a b: an endpoint's name is letters"),
    ('[endpoint]\na = 1\n', ":2: endpoint.a: must be a table"),
])
def test_a_mistake_is_one_line_naming_the_file_and_line(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigFileError) as raised:
        read_config_file(path)
    assert str(raised.value).startswith(path + message), raised.value
    assert "\n" not in str(raised.value)


def test_an_unreadable_or_undecodable_file_is_one_line(tmp_path):
    with pytest.raises(ConfigFileError, match=r"no-such\.toml: cannot read it: No such file"):
        read_config_file(str(tmp_path / "no-such.toml"))
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[endpoint.a]\nlisten = "/caf\xe9"\n')
    with pytest.raises(ConfigFileError, match="not UTF-8 text"):
        read_config_file(str(path))


def test_description_and_describe_are_fields_of_the_endpoint(tmp_path):
    from capsudo.daemon._declared import declared_endpoints

    path = _write(tmp_path, '[endpoint.backup]\nlisten = "/run/cap/backup"\ndescription = "backs up /srv"\n'
                            'describe = "name"\n')
    backup = declared_endpoints(path)["backup"]
    assert (backup.description, backup.config.description, backup.config.describe) == ("backs up /srv",) * 2 + ("name",)
    with pytest.raises(ConfigFileError, match=r":4: endpoint.backup.describe takes full or name, got 'all'"):
        declared_endpoints(_write(tmp_path, '[endpoint.backup]\nlisten = "/x"\n\ndescribe = "all"\n'))
