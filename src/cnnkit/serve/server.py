"""Run the app with uvicorn on a socket bound here, so the printed URL has the real port (``--port 0``)."""

from __future__ import annotations

import os
import socket
import sys

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(model: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8000) -> int:
    """Serve ``model``'s page on ``host:port`` until Ctrl-C (or SIGTERM); returns the exit status."""
    import uvicorn

    from .app import create_app

    app = create_app(model)
    if host not in LOCAL_HOSTS:
        print(
            f"cnnkit serve: warning: listening on {host}, not 127.0.0.1: anyone who can reach this machine "
            "on that address can use the page and its API",
            file=sys.stderr,
        )
    try:
        sock = _bind(host, port)
    except OSError as err:
        print(f"cnnkit serve: error: {err}", file=sys.stderr)
        return 2
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    try:
        print(f"cnnkit serve: {os.fspath(model)} on http://{shown}:{bound}/  (Ctrl-C stops)", flush=True)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C before uvicorn listens, or re-raised by uvicorn after its shutdown
        pass
    finally:
        sock.close()
    print("cnnkit serve: stopped", flush=True)
    return 0
