"""Entry points for the plugin-loading tests."""


def register_echo() -> str:
    return "poolstream_test_plugins.echo.EchoProcessor"


def register_none() -> None:
    # A plugin may opt out (e.g. when its hardware is missing): vLLM skips it.
    return None


def register_broken() -> str:
    raise RuntimeError("this plugin's entry point always fails")
