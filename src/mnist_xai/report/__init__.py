"""The HTML report: a Jinja2 template filled from the pipeline's outputs, pictures embedded.

`ReportInputs` and `build_report` (builder.py) are loaded on first use, so that a stage that only draws a
figure (figures.py) does not load the builder and what it reads.
"""

__all__ = ["ReportInputs", "build_report"]


def __getattr__(name: str):
    if name in __all__:  # PEP 562
        from mnist_xai.report import builder

        return getattr(builder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
