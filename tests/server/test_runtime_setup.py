"""What a serving process sets up once the model is loaded (server/app.py).

In a fresh interpreter: the settings are process-wide, and pytest's process has its own.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_serving_process_freezes_startup_objects_and_confines_torch_threads():
    code = textwrap.dedent("""
        import asyncio, gc, threading, torch
        from poolstream.server.app import ListenConfig, PoolstreamServer
        from poolstream.entrypoints.llm import build_config
        from poolstream.config import EngineConfig, LimitsConfig

        async def main():
            config = build_config(None, None, EngineConfig(num_threads=2), LimitsConfig())
            server = PoolstreamServer(config, ListenConfig(host="127.0.0.1", port=0), None)
            await server.start()
            try:
                frozen = gc.get_freeze_count()
                loop_threads = torch.get_num_threads()
                worker_threads = await asyncio.to_thread(torch.get_num_threads)
                core = server.state.engine._core
                print(frozen > 10000, loop_threads, worker_threads, core.num_threads, core.thread.is_alive())
            finally:
                await server.close()
        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # Startup objects frozen (no 100 ms full collections under load); the event loop and its
    # executor run torch on one thread; the engine core keeps its two.
    assert out.stdout.split() == ["True", "1", "1", "2", "True"], out.stdout
