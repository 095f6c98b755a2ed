"""Sphinx extension: author-year citations in round brackets, "Howard et al. (2017)".

sphinxcontrib-bibtex's ``author_year`` style puts citations in square brackets; this registers
``author_year_round``, the same style with round ones, which ``bibtex_reference_style`` in
_config.yml names. The entries live in references.bib and are listed on the appendix's
references page (``{bibliography}``). Hand-written plumbing, used only when building the book.
"""

from dataclasses import dataclass, field

import sphinxcontrib.bibtex.plugin
from sphinxcontrib.bibtex.style.referencing import BracketStyle
from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle

STYLE = "author_year_round"


def _round():
    return BracketStyle(left="(", right=")")


@dataclass
class RoundAuthorYear(AuthorYearReferenceStyle):
    """Author-year references with round brackets."""

    bracket_parenthetical: BracketStyle = field(default_factory=_round)
    bracket_textual: BracketStyle = field(default_factory=_round)
    bracket_author: BracketStyle = field(default_factory=_round)
    bracket_label: BracketStyle = field(default_factory=_round)
    bracket_year: BracketStyle = field(default_factory=_round)


sphinxcontrib.bibtex.plugin.register_plugin(
    "sphinxcontrib.bibtex.style.referencing", STYLE, RoundAuthorYear)


def setup(app):
    return {"parallel_read_safe": True, "parallel_write_safe": True}
