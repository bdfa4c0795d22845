"""What each entry point imports: the one-shot client must not pay for trio or construct."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def loaded_after(statement: str, *, then: str = "") -> dict[str, bool]:
    """Run `statement` in a fresh interpreter; report which heavy modules it loaded."""
    code = (
        f"{statement}\n"
        f"{then}\n"
        "import json, sys\n"
        "print(json.dumps({m: m in sys.modules for m in ('trio', 'construct')}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_proto_loads_neither_trio_nor_construct():
    assert loaded_after("import capsudo.proto") == {"trio": False, "construct": False}


def test_lean_codec_loads_neither_trio_nor_construct():
    assert loaded_after(
        "from capsudo.proto import lean, ProtocolError",
        then="lean.parse_header(lean.arg('ls')[:8]); lean.end()",
    ) == {"trio": False, "construct": False}


def test_blocking_unix_connection_loads_neither_trio_nor_construct():
    assert loaded_after("from capsudo.transport import BlockingUnixConnection") == {
        "trio": False,
        "construct": False,
    }


def test_frame_codec_loads_construct_on_first_use():
    # The probe above can tell: touching the multiplexer's frame codec does load construct.
    assert loaded_after("import capsudo.proto", then="capsudo.proto.FrameDecoder") == {"trio": False, "construct": True}


def test_message_classes_and_the_session_protocol_load_neither_trio_nor_construct():
    # The control messages share the one struct codec (lean) with the one-shot client.
    assert loaded_after(
        "import capsudo.proto", then="capsudo.proto.Arg; capsudo.proto.SessionProtocol"
    ) == {"trio": False, "construct": False}


def test_unix_channel_loads_trio():
    assert loaded_after("from capsudo.transport import UnixChannel")["trio"] is True


@pytest.mark.parametrize("package", ["capsudo.proto", "capsudo.transport"])
def test_every_public_name_resolves(package):
    module = __import__(package, fromlist=["__all__"])
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    assert sorted(dir(module)) == sorted(module.__all__)
    with pytest.raises(AttributeError):
        getattr(module, "no_such_name")


def test_no_package_imports_a_private_module_of_another():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "packages"
    private = re.compile(r"^\s*(?:from|import)\s+capsudo\.([a-z]+)\.(_[a-z_]+)", re.M)
    offenders = []
    for source in root.glob("*/src/capsudo/*/**/*.py"):
        own = source.relative_to(root).parts[3]
        for package, module in private.findall(source.read_text()):
            # proto's lazy-export helper is shared by every package's __init__ by design.
            if package != own and (package, module) != ("proto", "_lazy"):
                offenders.append(f"{source.relative_to(root)} imports capsudo.{package}.{module}")
    assert offenders == []
