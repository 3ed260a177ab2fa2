from .geo import BaseDataModule

__all__ = ["BaseDataModule"]
