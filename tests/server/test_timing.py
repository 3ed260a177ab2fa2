"""server/timing.py: a call's engine timing folded from its prompts' outputs."""

from __future__ import annotations

from poolstream.outputs import PoolingOutput, PoolingRequestOutput, RequestTiming
from poolstream.server import timing


def output(arrival: float, started: float, finished: float) -> PoolingRequestOutput:
    return PoolingRequestOutput("r", PoolingOutput(data=None), timing=RequestTiming(arrival, started, finished))


def test_one_prompt():
    marks: dict = {}
    timing.note_output(marks, output(10.0, 10.002, 10.012))
    assert dict(timing.trailing_metadata(marks)) == {
        "poolstream-queue-time-ms": "2.000", "poolstream-inference-time-ms": "10.000"}


def test_many_prompts_span_their_batches_and_report_the_longest_wait():
    marks: dict = {}
    timing.note_output(marks, output(0.0, 0.001, 0.011))  # first batch
    timing.note_output(marks, output(0.0, 0.011, 0.020))  # second batch, waited 11 ms
    timing.note_output(marks, output(0.005, 0.011, 0.020))
    trailers = dict(timing.trailing_metadata(marks))
    assert trailers["poolstream-queue-time-ms"] == "11.000"
    assert trailers["poolstream-inference-time-ms"] == "19.000"


def test_outputs_without_timing_and_calls_without_prompts_report_nothing():
    marks: dict = {}
    timing.note_output(marks, PoolingRequestOutput("r", PoolingOutput(data=None)))
    assert timing.trailing_metadata(marks) == ()
