import pytest

from pathlib import Path

from .daemon_process import kill_left_running, start_daemon, start_network_daemon


@pytest.fixture
def daemon_factory(sock_dir):
    started = []

    def start(*args: str, name: str = "cap.sock", **kwargs):
        daemon = start_daemon(f"{sock_dir}/{name}", *args, **kwargs)
        started.append(daemon)
        return daemon

    yield start
    kill_left_running(started)


@pytest.fixture
def network_daemon_factory(sock_dir):
    """Starts capsudods on network endpoints: start("tcp://127.0.0.1:0", *args)."""
    started = []

    def start(endpoint: str, *args: str, **kwargs):
        log_path = Path(sock_dir) / f"daemon-{len(started)}.log"
        daemon = start_network_daemon(endpoint, *args, log_path=log_path, **kwargs)
        started.append(daemon)
        return daemon

    yield start
    kill_left_running(started)


@pytest.fixture
def daemon(daemon_factory):
    """A capsudod with no pinned program, on a private socket."""
    return daemon_factory()
