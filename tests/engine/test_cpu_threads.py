"""CPU thread discipline (engine/cpu_threads.py).

Each check runs in a fresh interpreter: torch's thread counts are process
state, and the pytest process has its own settings.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest

from poolstream.engine.cpu_threads import cgroup_cpu_limit, default_engine_threads, run_in_fresh_thread


def run_python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


def test_set_torch_threads_survives_a_later_default_change():
    """torch's trap: a thread's count set before its first parallel op is overwritten by the
    process default at that op. set_torch_threads pins it; plain set_num_threads does not."""
    out = run_python("""
        import threading, torch
        from poolstream.engine.cpu_threads import set_torch_threads
        counts, ready, go = {}, threading.Barrier(3), threading.Event()
        def worker(name, pin):
            (set_torch_threads if pin else torch.set_num_threads)(2)
            ready.wait(); go.wait()
            torch.ones(1 << 22).sum()  # first parallel op of this thread
            counts[name] = torch.get_num_threads()
        threads = [threading.Thread(target=worker, args=(n, n == "pinned")) for n in ("pinned", "plain")]
        for t in threads: t.start()
        ready.wait()
        torch.set_num_threads(1)  # e.g. confine_other_threads on the event loop
        go.set()
        for t in threads: t.join()
        print(counts["pinned"], counts["plain"])
    """)
    assert out == "2 1"


def test_engine_core_keeps_its_threads_and_other_threads_get_one():
    """The model runs with the engine's thread count on the core thread, while the loop and
    executor threads (plugin work) are confined to one after confine_other_threads."""
    out = run_python("""
        import asyncio, threading, torch
        from poolstream.config import EngineConfig, ModelConfig, PoolstreamConfig, default_model_path
        from poolstream.engine import AsyncEngine
        from poolstream.engine.cpu_threads import confine_other_threads

        seen = []
        async def main():
            cfg = PoolstreamConfig(ModelConfig.from_dir(default_model_path()), EngineConfig(num_threads=2))
            engine = await asyncio.to_thread(AsyncEngine.from_config, cfg)
            runner = engine._core.runner
            forward = runner.forward
            def spy(batch):
                seen.append((threading.current_thread().name, torch.get_num_threads()))
                return forward(batch)
            runner.forward = spy
            await engine.start()
            confine_other_threads(asyncio.get_running_loop())
            async for _ in engine.encode("hello there", None, "r1"):
                pass
            worker = await asyncio.to_thread(lambda: (torch.ones(1 << 22).sum(), torch.get_num_threads())[1])
            await engine.shutdown()
            print(seen[-1][0], seen[-1][1], torch.get_num_threads(), worker)
        asyncio.run(main())
    """)
    assert out == "poolstream-engine-core 2 1 1"


def test_run_in_fresh_thread_returns_raises_and_ends_the_thread():
    """The model load's helper: a new thread that is gone afterwards (its OpenMP team with it)."""
    seen = []

    def work():
        seen.append(threading.current_thread())
        return 42

    assert run_in_fresh_thread(work) == 42
    assert seen[0] is not threading.current_thread() and not seen[0].is_alive()

    def fail():
        raise ValueError("bad weights")

    with pytest.raises(ValueError, match="bad weights"):
        run_in_fresh_thread(fail)


def test_cgroup_quota_caps_the_default(tmp_path):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert cgroup_cpu_limit(str(cpu_max)) == 2
    cpu_max.write_text("max 100000\n")
    assert cgroup_cpu_limit(str(cpu_max)) is None
    assert cgroup_cpu_limit(str(tmp_path / "absent")) is None
    assert 1 <= default_engine_threads() <= (os.cpu_count() or 1)


def test_default_engine_threads_is_capped_by_the_quota(monkeypatch):
    """A pod limited to one CPU gets one engine thread, whatever torch would pick."""
    import poolstream.engine.cpu_threads as cpu_threads

    monkeypatch.setattr(cpu_threads, "cgroup_cpu_limit", lambda: 1)
    assert cpu_threads.default_engine_threads() == 1
    monkeypatch.setattr(cpu_threads, "cgroup_cpu_limit", lambda: None)
    assert cpu_threads.default_engine_threads() >= 1
