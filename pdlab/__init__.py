"""pdlab: a lab kit for the prefill/decode split in LLM serving.

    from pdlab import ServingConfig, run_serving, make_requests
    result = run_serving(make_requests(500, rate=6.0), ServingConfig(mode="chunked"))
    result.summary()

Layout: ``serving`` (KV blocks, schedulers, router, links, the event loop: no clock),
``sim`` (the cost model and its executor: the simulated clock), ``engine`` (the real model and
its executor: the measured clock), ``kernels`` (Numba CUDA attention), ``viz`` (figures) and
``lab`` (dashboards, exercise checks, the environment report).
"""

__version__ = "0.1.0"

_EXPORTS = {"ServingConfig": "config", "run_serving": "run", "make_requests": "workload", "SLO": "metrics",
            "RunResult": "serving"}


def __getattr__(name):      # lazy: ``import pdlab`` stays instant, and never imports torch
    if name in _EXPORTS:
        import importlib
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'pdlab' has no attribute {name!r}")


__all__ = list(_EXPORTS)
