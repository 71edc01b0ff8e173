"""The pipelines' template language: Jinja2, sandboxed, strict about undefined names.

Its own module so that the configuration can check a pipeline's templates when it is loaded
without importing the mapping, which reads the configuration's types (no import cycle).
"""

from __future__ import annotations

from collections.abc import Mapping

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

# autoescape off: the HTML a template builds is the target's content; `| e` escapes where needed
TEMPLATES = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True,
                                 finalize=lambda value: "" if value is None else value)


def check_templates(templates: Mapping[str, str]) -> None:
    """Config time: every template compiles (the error names the mapped field)."""
    for name, source in templates.items():
        try:
            TEMPLATES.from_string(source)
        except TemplateError as exc:
            raise ValueError(f"{name}: the template does not compile: {exc}") from None
