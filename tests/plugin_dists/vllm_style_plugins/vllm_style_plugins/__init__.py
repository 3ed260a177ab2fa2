"""Entry points (vLLM's convention: a zero-argument function returning the class's qualified name)."""


def register_geotiff_tiles() -> str:
    return "vllm_style_plugins.geotiff_tiles.GeoTiffTilesProcessor"


def register_stash_params() -> str:
    return "vllm_style_plugins.stash_params.StashParamsProcessor"


def register_texts_e2() -> str:
    return "vllm_style_plugins.texts_e2.TextsProcessor"


def register_token_weights_e3() -> str:
    return "vllm_style_plugins.token_weights_e3.TokenWeightsProcessor"


def register_bad_response() -> str:
    return "vllm_style_plugins.bad_response.BadResponseProcessor"


def register_token_task() -> str:
    return "vllm_style_plugins.token_task.TokenTaskProcessor"


def register_typed_counts() -> str:
    return "vllm_style_plugins.typed_counts.TypedCountsProcessor"
