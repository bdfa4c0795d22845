import pytest

from .daemon_process import start_daemon


@pytest.fixture
def daemon_factory(sock_dir):
    started = []

    def start(*args: str, name: str = "cap.sock", **kwargs):
        daemon = start_daemon(f"{sock_dir}/{name}", *args, **kwargs)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


@pytest.fixture
def daemon(daemon_factory):
    """A capsudod with no pinned program, on a private socket."""
    return daemon_factory()
