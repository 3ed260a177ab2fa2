"""Stand-in for ``terratorch.registry`` (see ../../README.md): the IO plugin imports
``MODEL_FACTORY_REGISTRY`` but never uses it."""


class _NoModelZoo:
    def build(self, *args, **kwargs):
        raise NotImplementedError("terratorch's model zoo is not installed here (Python 3.11)")

    def __contains__(self, name: object) -> bool:
        return False


MODEL_FACTORY_REGISTRY = _NoModelZoo()
BACKBONE_REGISTRY = DECODER_REGISTRY = NECK_REGISTRY = FULL_MODEL_REGISTRY = _NoModelZoo()
