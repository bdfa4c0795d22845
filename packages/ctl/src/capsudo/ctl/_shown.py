"""A pending request as an approver reads it: the endpoint, the caller, what would run, the time left.

Every string that came from the client (or from its process) goes through
`escaped` on its way to the screen; the daemon's own words (endpoint
names, paths it resolved) do too, since a caller may have chosen them.
"""

from __future__ import annotations

from ._escape import escaped


def _words(words) -> str:
    return " ".join(f"'{escaped(word)}'" for word in words or ())


def summary(request: dict) -> str:
    """One line: short id, endpoint, user, pid, time left, the argv."""
    return (f"{request['id'][:8]}  {escaped(request['endpoint'] or '-')}  {escaped(str(request.get('user')))}"
            f"  pid {request.get('pid')}  {request['left']:.0f}s  {_words(request.get('argv'))}")


def details(request: dict) -> list[str]:
    """Every line an approver may want before deciding."""
    description = request.get("description")
    program = request.get("program")
    through = f" (resolves to {escaped(request['resolves_to'])})" if request.get("resolves_to") else ""
    lines = [
        f"request   {request['id']}",
        f"endpoint  {escaped(request['endpoint'] or '-')}" + (f": {escaped(description)}" if description else ""),
        f"caller    pid {request.get('pid')}, uid {request.get('uid')} ({escaped(str(request.get('user')))}), "
        f"gid {request.get('gid')}" + (f", label {escaped(request['label'])}" if request.get("label") else ""),
        f"via       {escaped(request.get('where') or '-')}",
        f"exe       {escaped(request.get('executable') or '-')}",
        f"cmdline   {_words(request.get('cmdline')) or '-'}",
        f"cgroup    {escaped(request.get('cgroup') or '-')}"
        + (f" (unit {escaped(request['unit'])})" if request.get("unit") else ""),
        f"program   {escaped(program) if program else '(not found)'}{through}",
        f"argv      {_words(request.get('argv'))}",
        f"env       {_words(request.get('env')) or '-'}",
        f"terminal  {'yes' if request.get('interactive') else 'no'}",
        f"left      {request['left']:.0f}s of {request.get('timeout', 0):g}s",
    ]
    return lines
