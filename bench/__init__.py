"""bench: measure how far ML results move when nothing "should" change.

Data flow: conf/ -> config -> sweep -> runner -> trial -> (determinism, data, models, backends,
fingerprint) -> store -> analysis. Nothing at package level imports a training library.
"""

__version__ = "0.9.0"
