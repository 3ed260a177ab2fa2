import sys


def run() -> int:
    """The `poolstream` command. `pip install poolstream` alone is the plugin interface: say
    what the server needs instead of failing on an import."""
    try:
        from poolstream.cli import main
    except ModuleNotFoundError as e:
        print(f"poolstream: the server is not installed ({e}); install it with "
              "`pip install 'poolstream[server]'`", file=sys.stderr)
        return 1
    return main()


if __name__ == "__main__":
    sys.exit(run())
