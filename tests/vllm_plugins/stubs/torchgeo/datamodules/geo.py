"""Stand-in for ``torchgeo.datamodules.geo.BaseDataModule``, used by terratorch's plugin
as a type annotation only."""


class BaseDataModule:
    pass
