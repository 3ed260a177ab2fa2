"""server/timing.py: a call's engine timing, folded from its prompts' outputs into its CallRecord."""

from __future__ import annotations

from poolstream.outputs import PoolingOutput, PoolingRequestOutput, RequestTiming
from poolstream.server import timing
from poolstream.serving import CallRecord


def output(arrival: float, started: float, finished: float) -> PoolingRequestOutput:
    return PoolingRequestOutput("r", PoolingOutput(data=None), timing=RequestTiming(arrival, started, finished))


def test_one_prompt():
    record = CallRecord()
    record.note_output(output(10.0, 10.002, 10.012), 0.0)
    assert dict(timing.trailing_metadata(record)) == {
        "poolstream-queue-time-ms": "2.000", "poolstream-inference-time-ms": "10.000"}


def test_many_prompts_span_their_batches_and_report_the_longest_wait():
    record = CallRecord()
    record.note_output(output(0.0, 0.001, 0.011), 0.0)  # first batch
    record.note_output(output(0.0, 0.011, 0.020), 0.0)  # second batch, waited 11 ms
    record.note_output(output(0.005, 0.011, 0.020), 0.0)
    trailers = dict(timing.trailing_metadata(record))
    assert trailers["poolstream-queue-time-ms"] == "11.000"
    assert trailers["poolstream-inference-time-ms"] == "19.000"


def test_outputs_without_timing_and_calls_without_prompts_report_nothing():
    record = CallRecord()
    record.note_output(PoolingRequestOutput("r", PoolingOutput(data=None)), 0.0)
    assert timing.trailing_metadata(record) == ()


def test_a_call_without_a_record_reports_nothing():
    assert timing.trailing_metadata(None) == ()
