"""Sphinx configuration of the eventbus documentation.

The build is offline and deterministic: no extension fetches anything (no
intersphinx, no mermaid), and the pages generated from code (the CLI help, the
configuration table, the protocol's tables) are rendered by the local extension
in ``_ext/eventbus_docs.py`` at build time, so they cannot drift from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

import eventbus  # noqa: E402

project = "eventbus"
author = "the eventbus authors"
copyright = "the eventbus authors"
release = eventbus.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "eventbus_docs",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "README.md", "tutorial/*.out", "**/.*"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 4

autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Types beside the documented parameters only: no "func (F)" noise for decorators.
autodoc_typehints_description_target = "documented_params"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# :ivar: fields instead of ``.. attribute::`` directives, so that an "Attributes:"
# section never duplicates an attribute that autodoc documents from its #: comment.
napoleon_use_ivar = True

html_theme = "furo"
html_title = f"eventbus {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
html_copy_source = False
pygments_style = "friendly"
