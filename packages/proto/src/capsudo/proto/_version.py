"""The version every capsudo package is released at.

The one place a release changes it in code; each pyproject.toml states it
too (uv_build takes only a static version), and tests/test_packaging.py
fails when any of them disagrees with this. It imports nothing, so reading
`capsudo.proto.__version__` costs the start-up of no command.
"""

__version__ = "0.1.0"
