"""Beam's SDK-harness state cache: cheap weighing, and none locally.

When the SDK harness caches user state (always in the local DirectRunner,
which hard-codes a 100 MB cache; on Dataflow, Prism or Flink only with
`--max_cache_memory_usage_mb` > 0), it weighs every value it loads with
`objsize.get_deep_size`. objsize starts each call by collecting the ids of
every loaded module's globals, to exclude them from the walk: with
TensorFlow loaded that scan costs far more than the walk itself, whatever
the value. A streaming dedup reads one state cell per LSH band per record,
so the scan dominated the job (the figures: docs/streaming.md).

The scan is redundant for Beam: its filter (`statecache._filter_func`)
never walks into modules, types or functions, the only ways from a value
to a module's globals, so the weights come out the same without it
(`tests/transforms/test_state_cache.py`). `skip_module_scan()` turns it
off for the process; the stateful DoFns call it in `setup()`.

The local runner's cache itself is there for Beam's own tests (its
`worker_handlers.py`: "The cache is disabled in production for other
runners"); in-process, a cached read costs more than the read it saves,
since every value is still weighed on the way in. `without_local_cache()`
runs the local runner's embedded worker as production harnesses run, with
no cache, which is faster (the jobs call it in `pipelines.options.start`).
"""

import objsize

_SETTING = "exclude_modules_globals"


def skip_module_scan() -> None:
    """Weighs cached state without objsize's scan of all modules' globals.

    Idempotent; does nothing with an objsize that has no such setting.
    """
    settings = getattr(objsize, "default_settings", None)
    if settings is not None and getattr(settings, _SETTING, False):
        objsize.default_settings = settings.replace(
            **{_SETTING: False})


def without_local_cache() -> None:
    """The DirectRunner's embedded SDK worker, from its next run in this
    process, reads state without a cache, as Dataflow's, Prism's and
    Flink's harnesses do by default. Other runners are unaffected."""
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    worker_handlers.STATE_CACHE_SIZE_MB = 0
