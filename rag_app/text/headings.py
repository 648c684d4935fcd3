"""Section headings that NIH pages lost their line breaks around: found, so answers never glue them into a sentence.

MedQuAD keeps some pages' section headings as plain words in front of the next sentence ("... in the big toe. Where
Gout Usually Occurs Sometime during the course of the disease, ..."). A model copying such a page writes the heading
into its sentence. :func:`split_heading` finds a heading at the start of a sentence: a run of capitalised words (small
words allowed between them) whose last capitalised word starts the sentence proper, which must begin with a common
sentence opener or a word of the page's topic ("Gout is ...") and go on in lower case. :func:`drop_headings` removes
them from a passage.
"""

from __future__ import annotations

import re
from typing import Iterable

from rag_app.text.words import sentences

#: Small words a heading may hold between capitalised words ("Stages of Gout", "Who is at Risk").
SMALL_WORDS = frozenset("of and the a an for to in on at by with or from about your you how what who can do does is are not".split())
#: Words that often open a sentence of an NIH page; a heading is only split off in front of one of these (or of a word
#: of the page's topic), so a proper name that starts a sentence ("The Human Phenotype Ontology provides") stays whole.
OPENERS = frozenset(
    """a an the in if some people when for to other there you during many this these those doctors researchers scientists
    most one as another no several having because often although it its even sometimes each after before depending try
    here with more studies about adults children women men patients treatment symptoms signs if once while since over
    until unless all any both either neither both such what how why who where your our we they their he she his her
    normally usually currently early later also however certain common first second third next finally recent new sometime
    experts health""".split()
)
_WORD = re.compile(r"\S+")
#: Dashes a heading may hold between capitalised words ("Memory Problems -- A Common Early Sign"; a lone "-" is a list's bullet).
DASHES = frozenset({"—", "–", "--"})


def _capitalised(word: str) -> bool:
    word = word.lstrip("(\"'")
    return word[:1].isupper()


def _bare(word: str) -> str:
    return word.strip(",:;()\"'").lower()


def split_heading(sentence: str, topic_words: Iterable[str] = ()) -> tuple[str, str]:
    """``(heading, rest)`` of a sentence that starts with a glued section heading, else ``("", sentence)``.

    Args:
        sentence: One sentence of a page (as :func:`rag_app.text.words.sentences` splits them).
        topic_words: Lower-case words of the page's topic; the sentence proper may start with one of them.

    Example:
        >>> split_heading("Where Gout Usually Occurs Sometime during the course of the disease, many develop gout.")
        ('Where Gout Usually Occurs', 'Sometime during the course of the disease, many develop gout.')
    """
    words = [m for m in _WORD.finditer(sentence)]
    if not words or not _capitalised(words[0].group(0)):
        return "", sentence
    capitals: list[int] = []
    i = 0
    while i < len(words):
        word = words[i].group(0)
        if _capitalised(word):
            capitals.append(i)
        elif _bare(word) in SMALL_WORDS or word in DASHES:
            # Small words may run on between capitalised ones ("Treating the Cause of a Cough").
            j = i + 1
            while j < len(words) and j - i < 3 and _bare(words[j].group(0)) in SMALL_WORDS and not _capitalised(words[j].group(0)):
                j += 1
            if j >= len(words) or not _capitalised(words[j].group(0)):
                break
            i = j
            continue
        else:
            break
        i += 1
    # A heading of two or more words, then the sentence's own first word, then lower-case words.
    if len(capitals) < 3 or i >= len(words) - 1:
        return "", sentence
    start = capitals[-1]
    if _bare(words[start - 1].group(0)) in SMALL_WORDS or words[start - 1].group(0).endswith(","):
        return "", sentence
    opener = _bare(words[start].group(0))
    # A heading often names what its sentence starts with ("Memory Problems — A Common Early Sign Memory problems are").
    if opener not in OPENERS and opener not in {w.lower() for w in topic_words} and opener != _bare(words[0].group(0)):
        return "", sentence
    heading = sentence[: words[start].start()].strip()
    return heading, sentence[words[start].start() :]



def drop_headings(text: str, topic: str = "") -> str:
    """``text`` without its section headings: glued in front of sentences (:func:`split_heading`) or on lines of their own.

    A sentence that is only a title-cased question ("Who is at Risk?") is a heading too and goes, and so does a line
    that is only a title ("Outlook", "Other Tests") before a line of prose: joined into one passage it would read
    "Outlook The outlook for sarcoidosis varies."; a title line with a subheading under it goes with it. A short line
    in a list of them ("Confusion", then "Trouble speaking") stays. Line breaks between paragraphs stay.
    """
    topic_words = re.findall(r"[a-z0-9']+", topic.lower())
    lines = text.split("\n")
    full = [i for i, line in enumerate(lines) if line.strip()]  # the non-empty lines, by index
    position = {i: k for k, i in enumerate(full)}
    near = lambda k: lines[full[k]] if 0 <= k < len(full) else ""  # noqa: E731
    out = []
    for i, line in enumerate(lines):
        k = position.get(i, -1)
        if k >= 0 and _is_title_line(line):
            if _is_prose(near(k + 1)):
                continue
            # A heading with its subheading under it ("Treating the Cause of a Cough", then "Acute and Subacute Cough"),
            # not the last item of a list ("Tofu", then "Sodium"): a sentence ends before it and prose follows the two.
            if _is_title_line(near(k + 1)) and _is_prose(near(k + 2)) and (k == 0 or near(k - 1).rstrip()[-1:] in {".", "!", "?"}):
                continue
        kept = []
        for sentence in sentences(line):
            if _is_title_question(sentence):
                continue
            kept.append(split_heading(sentence, topic_words)[1])
        out.append(" ".join(kept))
    return "\n".join(out).strip()


def _is_title_line(line: str) -> bool:
    """A line of one to eight words in title case without a sentence's closing punctuation ("Outlook", "Other Tests")."""
    words = line.split()
    if not 1 <= len(words) <= 8 or line.rstrip()[-1] in ".!?:;," or not words[0][0].isalpha():
        return False
    return all(_capitalised(w) for i, w in enumerate(words) if i == 0 or _bare(w) not in SMALL_WORDS)


def _is_prose(line: str) -> bool:
    """A line of sentences: five words or more, closing with a sentence's punctuation."""
    return len(line.split()) >= 5 and line.rstrip()[-1:] in {".", "!", "?", ":"}


def _is_title_question(sentence: str) -> bool:
    """A short question in title case, as NIH pages use for section headings ("Who is at Risk?", "What Is COPD?")."""
    words = sentence.split()
    if not sentence.endswith("?") or not 2 <= len(words) <= 8:
        return False
    content = [w for w in words[1:] if _bare(w) not in SMALL_WORDS]
    return bool(content) and all(_capitalised(w) for w in content)
