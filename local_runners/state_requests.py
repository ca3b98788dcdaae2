"""The state requests a local runner's SDK harness sends over the Fn API.

Prism and Flink here run the SDK harness in the job's own process
(LOOPBACK), so the benchmarks and the runner tests can count what each
record of a stateful stage costs the runner: on Prism every state read
crosses the Fn API (it hands out no cache tokens), so the count is the
cost a runner without a state cache pays.
"""

import collections
import contextlib
import time


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


@contextlib.contextmanager
def timing_state_reads(reads: collections.defaultdict):
    """Counts the state reads an SDK harness in this process sends over
    the Fn API while the block runs, and the seconds it waits for them, by
    state cell (a user state's id; other kinds by kind): `reads[cell]`
    gains `[reads, seconds]` (pass `defaultdict(lambda: [0, 0.0])`).

    The harness waits for each read before the DoFn goes on, so on a
    runner without a state cache this is where a stateful stage's time
    goes. A measurement, not an API: it wraps Beam's private
    `GrpcStateHandler.get_raw`, and counts nothing where it is gone."""
    from apache_beam.runners.worker import sdk_worker

    handler = sdk_worker.GrpcStateHandler
    get_raw = getattr(handler, "get_raw", None)
    if get_raw is None:
        yield
        return

    def timed(self, state_key, continuation_token=None):
        start = time.perf_counter()
        try:
            return get_raw(self, state_key, continuation_token)
        finally:
            kind = state_key.WhichOneof("type")
            cell = (state_key.bag_user_state.user_state_id
                    if kind == "bag_user_state" else kind)
            reads[cell][0] += 1
            reads[cell][1] += time.perf_counter() - start

    handler.get_raw = timed
    try:
        yield
    finally:
        handler.get_raw = get_raw
