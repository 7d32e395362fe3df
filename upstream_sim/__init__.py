"""Stand-ins for a remote Managed Agents platform, for tests and benchmarks of the `anthropic` gateway.

- `upstream_sim.proxy`: an HTTP/1.1 reverse proxy that adds latency and injects faults (429, 5xx,
  connection resets, hangs, answers lost after the upstream acted) in front of a real upstream,
  with a control API and counters under `/__proxy__/`.
- `upstream_sim.stub`: a minimal, fast stub of the endpoints the gateway calls (`POST /v1/sessions`
  with `Idempotency-Key`, and the agent / environment / vault / session look-ups), answering in the
  SDK's shapes, for benchmarks that need thousands of calls in flight.

Both are standard-library asyncio programs: `python -m upstream_sim.proxy --help`,
`python -m upstream_sim.stub --help`. From Python, `start_proxy` / `start_stub` run one on a
background thread and `spawn_proxy` / `spawn_stub` in a process of its own; each returns a handle
with its `url`, `config(...)`, `stats()`, `reset()` and `stop()`.
"""

import importlib

# Resolved on first use, so `python -m upstream_sim.proxy` does not import the module twice.
_EXPORTS = {
    "Handle": "upstream_sim._common",
    "ProcessHandle": "upstream_sim._common",
    "key_selected": "upstream_sim._common",
    "path_template": "upstream_sim._common",
    "spawn_proxy": "upstream_sim.proxy",
    "start_proxy": "upstream_sim.proxy",
    "spawn_stub": "upstream_sim.stub",
    "start_stub": "upstream_sim.stub",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'upstream_sim' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
