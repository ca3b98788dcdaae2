"""The state requests a local runner's SDK harness sends over the Fn API.

Prism and Flink here run the SDK harness in the job's own process
(LOOPBACK), so the benchmarks and the runner tests can count what each
record of a stateful stage costs the runner: on Prism every state read
crosses the Fn API (it hands out no cache tokens), so the count is the
cost a runner without a state cache pays.
"""

import collections
import contextlib


@contextlib.contextmanager
def counting_state_requests(counts: collections.Counter,
                            sizes: collections.Counter | None = None):
    """Counts, by kind (get, append, clear), the state requests an SDK
    harness in this process sends over the Fn API while the block runs,
    and into `sizes` the bytes they read ("get") and write ("append").

    A measurement, not an API: it wraps Beam's private
    `GrpcStateHandler._request` and `get_raw`, and counts nothing where
    they are gone."""
    from apache_beam.runners.worker import sdk_worker

    handler = sdk_worker.GrpcStateHandler
    request, get_raw = (getattr(handler, name, None)
                        for name in ("_request", "get_raw"))
    if request is None or get_raw is None:
        yield
        return
    sizes = collections.Counter() if sizes is None else sizes

    def counted(self, state_request):
        kind = state_request.WhichOneof("request")
        counts[kind] += 1
        if kind == "append":
            sizes["append"] += len(state_request.append.data)
        return request(self, state_request)

    def sized(self, state_key, continuation_token=None):
        data, token = get_raw(self, state_key, continuation_token)
        sizes["get"] += len(data)
        return data, token

    handler._request, handler.get_raw = counted, sized
    try:
        yield
    finally:
        handler._request, handler.get_raw = request, get_raw
