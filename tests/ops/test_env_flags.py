"""Every `poolstream serve` flag is also read from POOLSTREAM_<FLAG>; the flag wins."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
from poolstream.cli import _add_serve_args
from poolstream.env_flags import apply_env_defaults, env_name
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc

from tests.ops._util import free_port


def _parser(environ: dict[str, str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="serve", exit_on_error=False)
    _add_serve_args(p)
    apply_env_defaults(p, environ)
    return p


def test_every_flag_has_a_variable():
    p = _parser({})
    flags = [a for a in p._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    assert len(flags) > 30
    names = {}
    for action in flags:
        name = env_name(action)
        assert name is not None, action.option_strings
        assert name.startswith("POOLSTREAM_") and name == name.upper() and "-" not in name
        assert name not in names, (name, names.get(name), action.option_strings)  # one variable, one flag
        names[name] = action.option_strings
        assert f"[env {name}]" in action.help  # --help says so
    assert names["POOLSTREAM_MAX_NUM_SEQS"] == ["--max-num-seqs"]
    assert names["POOLSTREAM_NO_ACCESS_LOG"] == ["--no-access-log"]


def test_variables_set_defaults_and_flags_win():
    env = {"POOLSTREAM_PORT": "6000", "POOLSTREAM_MAX_NUM_SEQS": "7", "POOLSTREAM_DEVICE": "cpu",
           "POOLSTREAM_PLUGIN_TIMEOUT": "2.5", "POOLSTREAM_ALLOW_URL_FETCH": "true",
           "POOLSTREAM_NO_ACCESS_LOG": "1", "POOLSTREAM_NO_CPU_SIDE_LANE": "off", "POOLSTREAM_HOST": "0.0.0.0"}
    args = _parser(env).parse_args([])
    assert (args.port, args.max_num_seqs, args.device, args.plugin_timeout) == (6000, 7, "cpu", 2.5)
    assert args.allow_url_fetch is True and args.access_log is False and args.cpu_side_lane is True
    assert args.host == "0.0.0.0"
    args = _parser(env).parse_args(["--port", "6001", "--max-num-seqs=9", "--device", "auto"])
    assert (args.port, args.max_num_seqs, args.device) == (6001, 9, "auto")
    # Unset variables leave the built-in defaults.
    assert _parser({}).parse_args([]).port == 50051


@pytest.mark.parametrize("name,value", [("POOLSTREAM_PORT", "fifty"), ("POOLSTREAM_DEVICE", "tpu"),
                                        ("POOLSTREAM_ALLOW_URL_FETCH", "maybe")])
def test_bad_value_is_a_usage_error_naming_the_variable(name, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        _parser({name: value})
    assert exit_.value.code == 2
    assert name in capsys.readouterr().err


def _wait_for(path, proc, timeout=120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and open(path).read().strip():
            return open(path).read().strip()
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {proc.stderr.read().decode()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError("server did not start")


def test_serve_configured_by_environment_alone(tmp_path):
    """A real `poolstream serve` with no flags but one: its port, limits and metrics port
    come from POOLSTREAM_* (as in a container), and the one flag overrides its variable."""
    metrics_port = free_port()
    env = {**os.environ, "POOLSTREAM_PORT": "0", "POOLSTREAM_PORT_FILE": str(tmp_path / "port"),
           "POOLSTREAM_MAX_PROMPTS_PER_REQUEST": "7", "POOLSTREAM_MAX_NUM_SEQS": "3",
           "POOLSTREAM_METRICS_PORT": str(metrics_port), "POOLSTREAM_NUM_THREADS": "1",
           "POOLSTREAM_LOG_FORMAT": "json"}
    proc = subprocess.Popen([sys.executable, "-m", "poolstream", "serve", "--max-num-seqs", "5"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        port = _wait_for(tmp_path / "port", proc)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            info = pb_grpc.PoolingServiceStub(channel).GetServerInfo(pb.GetServerInfoRequest(), timeout=30)
        assert info.limits.max_prompts_per_request == 7
        assert info.limits.max_num_seqs == 5  # the flag wins over POOLSTREAM_MAX_NUM_SEQS=3
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
            assert b"poolstream_build_info" in resp.read()
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    # --log-format came from POOLSTREAM_LOG_FORMAT: stderr is JSON lines.
    lines = [ln for ln in err.decode().splitlines() if ln.startswith("{")]
    assert lines and all("level" in json.loads(ln) for ln in lines)
