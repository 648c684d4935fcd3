"""Pages that only point elsewhere: an address, a web link, "more information is available at ...".

A few MedQuAD answers say nothing but where to look (some NIHSeniorHealth overviews are a postal address or a
link; "What is gout?" has one that reads "NIAMS has more information about gout. Check out the information here.").
A question that names the topic finds them as easily as the page with content, so the retriever ranks them below
it (:mod:`rag_app.retrieval.fielded`, ``MEDQA_POINTER_WEIGHT``). A list of resources about one condition (GHR's
"These resources address the diagnosis or management of X: - Gene Review: ...") is not a pointer page: NLM's own
answers to patients quote those lists (TREC LiveQA's reference answers), and for a rare condition it is often all
MedQuAD has on treatment.

Inside a page with content, a sentence that only sends the reader elsewhere ("Learn more about type 1 diabetes here.",
"For more information, go to the Health Topics Arrhythmia article.") is left out of what the model reads
(:func:`points_elsewhere`): its link is gone from MedQuAD's text, so an answer quoting it points nowhere.
"""

from __future__ import annotations

import re

from rag_app.text.words import sentences

#: What a sentence that points elsewhere says: where to find more, a link, an address or a phone number.
POINTER = re.compile(
    r"more (detailed )?information|for information|information (about|on)|(^|also,? )see\b|\bvisit\b|check out|"
    r"learn more|available (at|from|on)|click|contact|e-?mail|www\.|https?:|web ?site|clearinghouse|"
    r"\(?\d{3}\)?[- ]\d{3}-\d{4}|toll[- ]free|\bsuite\b|\bbethesda\b|\bMD \d{5}",
    re.IGNORECASE,
)
#: The opening of a list of resources about one condition (not a pointer page, see above).
RESOURCE_LIST = re.compile(r"^\s*(these|the following) resources (address|from)\b", re.IGNORECASE)


def only_points_elsewhere(answer: str) -> bool:
    """True when every sentence of ``answer`` points elsewhere (:data:`POINTER`) and it says nothing itself.

    Example:
        >>> only_points_elsewhere("More detailed information on heart failure is available at www.nhlbi.nih.gov.")
        True
        >>> only_points_elsewhere("Gout is a form of arthritis. For more information, visit www.niams.nih.gov.")
        False
        >>> only_points_elsewhere("These resources address the diagnosis or management of gout: - MedlinePlus: Gout")
        False
    """
    parts = sentences(answer)
    return bool(parts) and not RESOURCE_LIST.match(parts[0]) and all(POINTER.search(part) for part in parts)


#: A sentence that only sends the reader elsewhere. Stricter than :data:`POINTER` (which also finds "visit the dentist
#: routinely" and "information about ..." inside content) and never a list item ("- Check out books from the library").
ONLY_POINTS = re.compile(
    r"^[\s(]*((to )?(learn|find out|read|see) (more|how|about|also)\b|(for|get) (more|additional|further)( detailed)? "
    r"information\b|(more|additional|further)( detailed)? information (about|on|regarding|is|can)\b|click\b"
    r"|(watch|view) (the|a|this) videos?\b|to (enlarge|reduce) the videos?\b|this (short )?video\b)"
    r"|\b(click|see|learn more|read more|more information|check out the information) here\W*$",
    re.IGNORECASE,
)


def points_elsewhere(sentence: str) -> bool:
    """True when ``sentence`` only sends the reader elsewhere (:data:`ONLY_POINTS`).

    Example:
        >>> points_elsewhere("Learn more about type 1 diabetes here.")
        True
        >>> points_elsewhere("(Watch the video to learn more about native Americans and diabetes risk.")
        True
        >>> points_elsewhere("Visit the dentist routinely for a check-up and professional cleaning.")
        False
    """
    return bool(ONLY_POINTS.search(sentence))
