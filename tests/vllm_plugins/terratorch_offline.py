"""Run by test_terratorch.py in its own process (so terratorch's entry points and the
stand-ins stay off the main test process's path): terratorch's plugin through
poolstream's in-process ``LLM``, with vLLM's offline call. Prints the output as JSON."""

from __future__ import annotations

import json
import sys

from poolstream.entrypoints.llm import LLM

model_dir, scene_path = sys.argv[1], sys.argv[2]
with LLM(model_dir, io_processor_plugin="terratorch_segmentation") as llm:
    [out] = llm.encode(
        {"data": scene_path, "data_format": "path", "out_data_format": "b64_json"},
        pooling_task="plugin",
        use_tqdm=False,
    )
print(json.dumps({"type": type(out.outputs).__module__ + "." + type(out.outputs).__qualname__,
                  "output": out.outputs.model_dump(mode="json")}))
