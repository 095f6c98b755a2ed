"""Every verdict in the prose is printed by the page, or written as a condition.

test_prose_numbers.py checks digits; words carry verdicts too. "The outputs are
identical", "the two agree", "the decisive step", "NCHW is slower" hold on some
machines, or are what the page measures, and a sentence that types them goes
stale as silently as a typed number. So a sentence of prose that uses an outcome
word (VOCABULARY) must do one of:

- appear conditionally: it contains if, where, when, whether, unless, can, may,
  might, could, would, must or should ("where F.conv2d follows one of these
  orders, the logits are identical");
- report a cited paper's finding: it holds a {cite} role;
- be a question, a heading, or quote the word ("Bitwise identical" in quotes);
- have the same outcome word in the page's printed output, where the reader
  sees it next to the measurement (for instance "agrees with torch to round-off:
  True", printed by the cell);
- be listed in ALLOWED, with the reason, for a negated or definitional use.

The exercises are exempt (they ask; they do not claim). The check of printed
output reads the strictly built book, as the number check does; the scanner
itself, and a check that each outcome word at least occurs in the page's code
(so that the page could print it), run without the build.
"""

import re
from types import SimpleNamespace

import pytest

from test_book import PAGES
from test_prose_numbers import code, printed, prose

# (name, pattern in prose, pattern in printed output). The prose pattern leaves out the
# definitional uses: "equal to" a number ("groups equal to C") and "must equal".
VOCABULARY = [
    ("identical", r"\b(?:bit-)?identical(?:ly)?\b", r"\bidentical"),
    ("equal", r"(?<!must )\bequals?\b(?!\s+to\b)(?!,)", r"\bequal"),
    ("agree", r"\bagree[sd]?\b", r"\bagree"),
    ("same bits", r"\bsame bits\b", r"\bsame bits\b"),
    ("faster", r"\bfaster\b", r"\bfaster\b"),
    ("slower", r"\bslower\b", r"\bslower\b"),
    ("wins", r"\bwins?\b", r"\bwins?\b"),
    ("beats", r"\bbeats?\b", r"\bbeats?\b"),
    ("outperforms", r"\boutperforms?\b", r"\boutperforms?\b"),
    ("decisive", r"\bdecisive\b", r"\bdecisive\b"),
    ("visible share", r"\bvisible share\b", r"\bvisible share\b"),
    ("most of the time", r"\bmost of the time\b", r"\bmost of the time\b"),
]
CONDITIONAL = re.compile(r"\b(if|where|wherever|when|whenever|whether|unless|can|cannot|"
                         r"may|might|could|would|must|should)\b", re.I)
CITED = "the cited paper"  # what test_prose_numbers.prose() leaves of a {cite} role
QUOTED = re.compile(r'"[^"\n]*"|“[^”]*”')

# (page, outcome word, a piece of the sentence): why the sentence may stand. Negated or
# definitional uses only; a measured outcome goes on the page's output instead.
ALLOWED = {
    ("chapters/conv2d/frameworks", "identical", "only meaningful on identical inputs"):
        "a precondition of any comparison, not an outcome",
    ("chapters/performance/mobilenet_fast", "identical", "identical layers share one"):
        "layers of the same shape, by definition; not an outcome",
    ("chapters/separable/counting", "agree", "agree exactly once the classifier"):
        "arithmetic on the paper's own printed table, shown in the last column",
    ("chapters/numerics/bitwise_unchanged", "same bits", "need not give the same bits"):
        "negated: what the unfold layer does not promise",
    ("chapters/separable/index", "faster", "Does fewer FLOPs mean faster?"):
        "the linked section's title, a question",
    ("chapters/depthwise/porting_weights", "agree", "the conversions agree to round-off"):
        "the page prints each conversion's largest difference; its prose belongs to "
        "another change in progress (reword it there, then drop this entry)",
}


def sentences(text):
    """The sentences of prose text (as test_prose_numbers.prose() leaves it), headings and
    quotations left out."""
    text = QUOTED.sub(" ", text)
    for block in re.split(r"\n\s*\n|\n(?=\s*[*-] )", text):
        if block.lstrip().startswith("#"):
            continue
        block = re.sub(r"\s+", " ", block).strip()
        yield from re.split(r"(?<=[.!?:])\s+(?=[A-Z*(\[])", block)


def typed_verdicts(page, text):
    """(word, sentence) for each sentence of ``text`` that states an outcome word
    unconditionally and is not allowed."""
    found = []
    for sentence in sentences(text):
        if (sentence.endswith("?") or CONDITIONAL.search(sentence)
                or CITED in sentence):
            continue
        for name, pattern, _ in VOCABULARY:
            if re.search(pattern, sentence, re.I) and not any(
                    (page, name) == (p, w) and piece in sentence
                    for p, w, piece in ALLOWED):
                found.append((name, sentence))
    return found


def unprinted_verdicts(page, text, output):
    """The typed verdicts of ``text`` whose outcome word ``output`` does not show."""
    patterns = {name: printed_pattern for name, _, printed_pattern in VOCABULARY}
    return [(name, sentence) for name, sentence in typed_verdicts(page, text)
            if not re.search(patterns[name], output, re.I)]


def test_the_verdict_scanner_fails_a_typed_verdict_and_passes_a_printed_or_conditional_one():
    page = "chapters/example"
    typed = "The tuned kernel is faster than PyTorch. The logits are identical."
    assert [w for w, _ in unprinted_verdicts(page, typed, "12.5 us, 20.1 us")] == [
        "faster", "identical"]
    # the page prints the verdict next to its measurement
    assert not unprinted_verdicts(page, typed, "tuned: faster than PyTorch: True\n"
                                               "logits identical: True")
    # conditional, quoted, cited, a question, a heading, a definition, the exercises'
    # absence (prose() cuts them): none is a typed verdict
    fine = ("Where F.conv2d follows one of these orders, the logits are identical.\n\n"
            'A "bitwise identical" result is a stronger claim.\n\n'
            f"Chollet ({CITED}) found that it trained faster.\n\n"
            "Is the tuned kernel faster?\n\n"
            "# A bit-identical swap\n\n"
            "A depthwise layer has groups equal to the input channels.\n\n"
            "Whether the weight gradient is slower depends on the machine.")
    assert typed_verdicts(page, fine) == []
    # an allowed sentence passes only on its page
    allowed = "Comparisons are only meaningful on identical inputs."
    assert typed_verdicts("chapters/conv2d/frameworks", allowed) == []
    assert typed_verdicts(page, allowed) == [("identical", allowed)]


def test_the_scanner_catches_the_verdicts_the_third_edition_removed():
    """Sentences an expert read found typed into the second edition."""
    old = {
        "The outputs are equal, so the upstream gradients are equal.": "equal",
        "The channel-blocked layout is the decisive step.": "decisive",
        "On the small late layers that cost is a visible share of the time.":
            "visible share",
        "Pointwise layers hold most of the time on both sides.": "most of the time",
        "The TE-swapped networks give the same bits as the originals.": "same bits",
        "Two cases agree to round-off.": "agree",
    }
    for sentence, word in old.items():
        assert [w for w, _ in unprinted_verdicts("p", sentence, "")] == [word], sentence


@pytest.mark.parametrize("page", PAGES)
def test_every_outcome_word_in_the_prose_is_in_the_pages_code(page):
    """Without the build: a typed verdict's word must at least occur in the page's code
    (its print statements), or the page cannot print it."""
    found = unprinted_verdicts(page, prose(page), code(page))
    assert not found, f"{page}: verdicts typed into prose:\n" + "\n".join(
        f"  {word!r}: ...{sentence[:160]}..." for word, sentence in found)


def test_every_verdict_in_the_prose_is_printed_by_the_page(built_book):
    assert built_book.result.returncode == 0, built_book.result.stderr[-3000:]
    problems = []
    for page in PAGES:
        output = printed(built_book.html / f"{page}.html")
        problems += [f"{page}: {word!r}: ...{sentence[:160]}..."
                     for word, sentence in unprinted_verdicts(page, prose(page), output)]
    assert not problems, ("verdicts typed into prose (make them conditional, or print "
                          "the word with its measurement):\n" + "\n".join(problems))


def test_allowed_verdicts_are_still_needed():
    """An allow-list entry whose sentence left the page is dead weight."""
    for page, word, piece in ALLOWED:
        text = re.sub(r"\s+", " ", prose(page))
        assert piece in text, (page, word, piece)


def printed_from_notebook(notebook):
    """The text a notebook's executed cells printed (stream and text/plain outputs), for
    running the check on pages executed outside the book build."""
    parts = []
    for cell in notebook["cells"]:
        for out in cell.get("outputs", []):
            parts.append("".join(out.get("text", "")))
            parts.append("".join(out.get("data", {}).get("text/plain", "")))
    return " ".join(parts)


def test_printed_from_notebook_reads_streams_and_results():
    notebook = {"cells": [
        {"cell_type": "markdown", "source": "identical"},
        {"cell_type": "code", "outputs": [
            {"output_type": "stream", "text": ["agrees: True\n"]},
            {"output_type": "execute_result", "data": {"text/plain": ["'faster'"]}}]}]}
    text = printed_from_notebook(SimpleNamespace(**notebook).__dict__)
    assert "agrees: True" in text and "faster" in text and "identical" not in text
