"""Benchmarks: outside the library wheel; ``make bench*`` runs them and writes ``bench/results/``.

Modules
-------
models
    Training and evaluation speed of every model on the real data (``make bench-models``).
serve
    ``/recommend`` under load beside a bare Starlette app (``make bench-serve``).
soak
    A long run at ~80 % of the measured capacity: errors, p99, worker memory (``make bench-soak``).
pacer
    The open-loop client the soak and the capacity search use.
capacity
    The capacity search (bisected paced steps, confirmed).
cpus
    CPU accounting, the CPU speed probe, pinning of load generators and service.
rss
    The workers' resident memory, sampled during the soak.
"""

__all__ = ["capacity", "cpus", "models", "pacer", "rss", "serve", "soak"]
