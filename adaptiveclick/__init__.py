"""adaptiveclick: AdaptiveClick (Lin et al., IEEE TNNLS 2024) as a detectron2 project.

Importing this package is cheap and has no side effects: ``adaptiveclick.clicks`` stays usable with
NumPy alone.  Registration into detectron2's registries happens when the sub-packages that define the
registered objects are imported (``adaptiveclick.modeling``, ``adaptiveclick.data``), as in detectron2's
own projects.  ``add_adaptiveclick_config`` is re-exported lazily so that ``import adaptiveclick`` does
not pull in detectron2.
"""

__version__ = "0.1.0"

__all__ = ["add_adaptiveclick_config", "__version__"]


def __getattr__(name):
    if name == "add_adaptiveclick_config":
        from .config import add_adaptiveclick_config

        return add_adaptiveclick_config
    raise AttributeError(f"module 'adaptiveclick' has no attribute {name!r}")
