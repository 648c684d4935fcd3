"""What a consumer message is about: the indexed topics (foci) it names and the kinds of question it asks.

People name their condition ("i have lymphoma ...", "Klinefelter Syndrome. I would like to learn more") but
wrap it in a story that dilutes a single query embedding. :class:`FocusMatcher` finds the index's topics in the
message lexically (stemmed, IDF-weighted token overlap, so "gilberts diseases" still half-matches "Gilbert
syndrome"), and :func:`question_types` reads which MedQuAD question types the message asks for from cue words
("treat", "cure", "cause", ...). :class:`rag_app.retrieval.fielded.FieldedRetriever` fuses both with dense scores.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter, defaultdict
from typing import Callable, Iterable, Mapping, Sequence

import Stemmer
from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

from rag_app.text.words import sentences, words

# Function words that never identify a topic; medical words are left to IDF.
STOPWORDS = frozenset(
    "a an the of and or in on for to with is are was were be been what who how do does did can could i my me we "
    "our you your it its this that these those by as at from there any about not no so if but than then have has "
    "had will would should may might am s".split()
)

# MedQuAD question types (the ``qtype`` attribute) and the words by which people ask for them: the terms, and the
# plain ways consumers ask ("what can he take", "will it come back", "can our kids get it", "does it run in families").
_WHO = r"(i|he|she|we|they|you|people|someone|somebody|anyone|a person|my \w+|our \w+)"
_KIN = r"(kids|children|child|baby|babies|grandkids|grandchildren|offspring|sons?|daughters?|brothers?|sisters?|siblings?)"
#: Doing something so one doesn't get it ("what can I do so I don't get it?") asks for prevention.
_NOT_GETTING = r"so (that )?\w+ (don'?t|do not|doesn'?t|does not|won'?t|will not|never) (get|catch)\b"
_NOT_TO_PREVENT = rf"(?! (to (prevent|avoid)\b|{_NOT_GETTING}))"  # "what can I do to prevent it" asks for prevention, not treatment
TYPE_CUES: dict[str, str] = {
    # Asking about the condition in general ("what is ...", "information on ...") asks for its overview.
    "information": r"\binfo\b|information|what(?: is|'s| are) (a |an )?(?!(the|it|this|that|there|behind|wrong|causing|going)\b)[a-z]|(know|learn|read|tell (me|us)) (more |anything |something )?about",
    # "help" only as what helps against it: "please help" asks for nothing in particular.
    "treatment": r"treat|cure|therap|medic|drug|surg|remed|manag|reliev|relief|option|\bhelps?\b(?! (me|us|please)\b)(?<!please help)|get rid of"
    rf"|what (else )?(can|should|could|would|do|does) (else )?{_WHO} (else )?(take|do|use|try|put|apply|give)\b{_NOT_TO_PREVENT}"
    rf"|\banything (else )?(that )?{_WHO} (can|could|should) (do|take|use|try)\b{_NOT_TO_PREVENT}|\bbe done\b|what to (do|take|use)\b"
    rf"|how (do|can|could|should) {_WHO} (deal|cope|live) with\b|\btake for\b",
    "causes": r"caus|\bwhy\b|reason|\btrigger|brings? (it |this |that |them |these |those )?on\b|what is behind"
    rf"|how (did|does|do|can|could) {_WHO} (get|catch|develop)\b(?! rid)",
    "symptoms": r"symptom|\bsigns?\b|what (does|will|can) (it|this) do to|show (itself|up)",
    # "diagnosed with ..." tells a story; it doesn't ask how the diagnosis is made.
    "exams and tests": r"diagnos(?!ed (with|as)\b)|\btests?\b|testing|\bexam|screen|confirm|find out (if|whether)",
    "inheritance": r"inherit|heredit|pass(ed)? (it )?(on|down)|runs? in (the |my |our |his |her )?famil"
    rf"|(give|pass(ed)?) (it |this )?(on |down )?to (my|our|his|her|their|the) |{_KIN} (will |could |can |might )?(get|have|inherit)\b",
    "genetic changes": r"\bgenes?\b|genetic|mutation|chromosom|\bdna\b",
    "outlook": r"outlook|prognos|surviv|life expectancy|recover|com(e|ing) back|recur|go away|normal life|long[- ](run|term)"
    r"|get (better|worse)|what to expect|how long .{0,30}\blive\b|\bfatal\b|\bdie\b",
    "prevention": rf"prevent|avoid|(keep|stop) .{{0,30}}from (getting|catching|coming back|happening again|forming)|{_NOT_GETTING}",
    "research": r"research|clinical trial|\bstud(y|ies)\b",
    "frequency": r"how common|frequen|prevalen|how many (people|persons|children|kids|men|women)|is (it|this) (a )?(common|rare)",
    # Whether a condition runs in families is also who is at risk: family history is a risk factor of common ones.
    "susceptibility": r"\brisks?\b|suscept|likely to (get|have|develop)|who (\w+ )?gets\b|heredit|runs? in (the |my |our )?famil"
    r"|family history",
    "complications": r"complicat|lead(s)? to|(other|more|later) (health )?problems",
}
_TYPE_RES = {qtype: re.compile(pattern, re.IGNORECASE) for qtype, pattern in TYPE_CUES.items()}
#: Words of a page's sentence that say something of each question type: where an overview answers what was asked
#: ("No one knows exactly what causes ADHD.", "Treatment may include ..."). TYPE_CUES reads questions; this reads
#: the page's own statements.
ANSWER_CUES: dict[str, str] = {
    # A cause named as such, not "causes" the verb ("Crohn's disease causes inflammation" says what it does).
    "causes": r"\bwhat causes\b|\bcaused by\b|\bcauses? (of|is|are|isn't|is not|include|may|might|can)\b|\brisk factors?\b"
    r"|\b(is|are) due to\b|\bresults? from\b",
    "treatment": r"\btreatments? (may |can |will |usually |often )?(include|is|are|involves?|options?|for)\b|\b(is|are|be) treated\b"
    r"|\btreated (with|by)\b|\btreat \w+( \w+)? (with|by)\b|\bno cure\b|\bcan be cured\b|\bmedicines? (that|to|can|may)\b"
    r"|\btherap(y|ies) (may|can|to|is|are)\b",
    "symptoms": r"\bsymptoms? (of|include|may|can|are|is)\b|\bsigns (of|include|may|can|are)\b|\bcommon symptom",
    "exams and tests": r"\b(is|are|be) diagnosed\b|\bdiagnos(e|es|is) (it|of|is|may|can|with|by)\b|\btests? (to|that|can|may|for|include)\b",
    "inheritance": r"\binherit|\bheredit|\bruns? in (the |some )?famil|\bfamily history\b",
    "outlook": r"\boutlook\b|\bprognosis\b|\bsurviv|\brecover|\bprogressive\b|\bgets? (better|worse)\b|\bgo(es)? away\b"
    r"|\blife expectancy\b|\bcome back\b|\brecur",
    "prevention": r"\bprevent|\b(lower|reduce)s? (your|the) (risk|chance)",
    "susceptibility": r"\bat (higher |greater |increased )?risk\b|\bmore likely\b|\brisk factors?\b",
    "frequency": r"\bpercent\b|\bmost common\b|\bin every [\d,]+\b|\baffects? (about|around|an estimated|\d)",
    "complications": r"\bcomplications?\b|\bcan lead to\b",
    "genetic changes": r"\bgenes?\b|\bmutations?\b",
}
_ANSWER_RES = {qtype: re.compile(pattern, re.IGNORECASE) for qtype, pattern in ANSWER_CUES.items()}


def first_answering(sentences: Sequence[str], qtypes: Iterable[str]) -> int | None:
    """The index of the first of ``sentences`` that says something of one of ``qtypes`` (:data:`ANSWER_CUES`), or None.

    Example:
        >>> first_answering(["Gout is arthritis.", "It is caused by uric acid."], {"causes"})
        1
    """
    patterns = [_ANSWER_RES[q] for q in qtypes if q in _ANSWER_RES]
    return next((i for i, s in enumerate(sentences) if any(p.search(s) for p in patterns)), None)


#: Separator of a topic's other names in the ``synonyms`` metadata of indexed chunks (Chroma metadata values are
#: scalars); corpus readers write it, :class:`FocusMatcher` reads it.
SYNONYM_SEPARATOR = " | "
#: Least :meth:`FocusMatcher.focus_scores` score of a topic named in part that counts: the retriever adds such a
#: topic's pairs as candidates, and the engine counts a source on it as about the message.
PARTIAL_NAME_SCORE = 0.5
#: A topic name whose words all occur on at least this share of the other topics' pages is common words
#: ("Pain", "Blood", "Medicines", "Falls"): a message using it may well be about something else
#: (:meth:`FocusMatcher.common`). Chosen on dev sets by ``benchmarks/tune_declines.py``.
COMMON_NAME_SHARE = 0.01

#: A topic's :meth:`FocusMatcher.focus_scores` score when a message holds every word of its name (1, less rounding).
FULL_NAME_SCORE = 0.999

#: A name word on at least this share of all pages is a generic head word ("disease", "syndrome", the "s" of "'s"):
#: people leave it out ("parkinsons", "crohns", "lyme") and the rest still names the topic
#: (:meth:`FocusMatcher.named_in_part`).
GENERIC_WORD_SHARE = 0.15

#: Shortest word taken for a misspelt topic name (shorter words are too near too many others).
TYPO_MIN_LENGTH = 5
#: Fewest pages a word is on to be taken for a word the pages know: a misspelling nearer to one of them than to a
#: name word misspells it (:meth:`FocusMatcher.misspelt`).
KNOWN_WORD_PAGES = 3
#: Shortest misspelt word also compared as written, not only stemmed ("degeneraton" is far from the stem "degener");
#: a shorter one as written is too near other words ("cancle" and "cancer").
TYPO_WRITTEN_MIN_LENGTH = 8

# A word of a name in capitals, two letters or more: an acronym ("ALL", "HAD deficiency").
_ACRONYM = re.compile(r"\b[A-Z]{2,}\b")

# The first word of a question asked without a question mark ("what causes it", "can it be cured").
_QUESTION_START = re.compile(
    r"\W*(what|whats|what's|how|why|who|where|when|which|is|are|can|could|will|would|does|do|did|should|shall|may|any)\b",
    re.IGNORECASE,
)

# The type whose pages give the overview; the usual best answer when a message asks nothing more specific.
OVERVIEW_TYPE = "information"


def question_types(text: str) -> set[str]:
    """The MedQuAD question types that ``text`` asks for, by cue words (may be empty).

    Where ``text`` has questions (sentences ending in "?" or opening with a question word), only they are read: the
    story around them ("she takes medicine for it", "he was tested last year") says what happened, not what is asked.

    Example:
        >>> sorted(question_types("is there any cure for lupus? what causes it"))
        ['causes', 'treatment']
        >>> sorted(question_types("She takes medicine for her lupus. Is it inherited?"))
        ['inheritance']
    """
    asked = questions_of(text) or [text]
    return {qtype for qtype, pattern in _TYPE_RES.items() if any(pattern.search(s) for s in asked)}


# A question run on after a story without a stop ("she has retinoblastoma how would a doctor know"): from its last
# wh-word ("is", "can", "do" start statements too often to mark a question inside a sentence).
_RUN_ON_QUESTION = re.compile(r".*\b((?:what|whats|what's|how|why|where|when|which|who)\b.*)$", re.IGNORECASE | re.DOTALL)


def questions_of(text: str) -> list[str]:
    """The questions of ``text``: sentences ending in "?" or opening with a question word (may be empty).

    Example:
        >>> questions_of("She takes medicine for her lupus. Is it inherited?")
        ['Is it inherited?']
        >>> questions_of("my son was diagnosed with celiac disease")
        []
    """
    return [s for s in sentences(text) if s.rstrip().endswith("?") or _QUESTION_START.match(s)]


def run_on_question(text: str) -> str:
    """The question a message without one (:func:`questions_of`) runs on into, from its last wh-word; "" when none.

    Example:
        >>> run_on_question("my grandfather just found out he has retinoblastoma how would a doctor know for sure")
        'how would a doctor know for sure'
    """
    found = _RUN_ON_QUESTION.match(text.strip())
    return found.group(1) if found else ""


def topic_key(name: str) -> frozenset[str]:
    """The words that identify a topic however a collection spells it: "Crohn's Disease" and "Crohn disease" share
    ``{"crohn", "disease"}``, "Cancer of the breast" and "breast cancer" ``{"breast", "cancer"}`` (function words and
    one-letter words such as a possessive's "s" are left out; digits stay: "type 1 diabetes" is not "type 2 diabetes")."""
    return frozenset(w for w in words(name) if w not in STOPWORDS and (len(w) > 1 or w.isdigit()))


class FocusMatcher:
    """Scores every indexed topic (focus) by how much of its name, or of one of its synonyms, a message contains.

    A name's score is the IDF-weighted share of its distinct stemmed tokens that occur in the message: 1.0 when
    every token is there, less when only some are (rare tokens count more than "disease" or "cancer"). IDF is
    computed over the distinct names. A QA pair scores the best of its topic's names.

    Args:
        foci: ``{doc_id: focus name}`` for the indexed QA pairs (empty names are ignored).
        synonyms: ``{doc_id: other names of its topic}`` (MedQuAD's ``<Synonyms>``), optional.
        texts: Returns ``(doc_id, text)`` of the indexed chunks, called once, when :meth:`common` or
            :meth:`misspelt` is first asked (indexing every text's words takes seconds), and released then; without
            it no name is common and no word is taken for a misspelling.
        typo_similarity: Least similarity (rapidfuzz's ``fuzz.ratio`` / 100) of a misspelt word to a name word
            (:meth:`misspelt`; ``MEDQA_TYPO_SIMILARITY`` for the index's matcher); 1, the default here, reads none.
        types: ``{doc_id: question type}`` of the indexed QA pairs, optional (:meth:`overview_only`).
    """

    def __init__(
        self,
        foci: Mapping[str, str],
        synonyms: Mapping[str, Sequence[str]] | None = None,
        texts: Callable[[], Iterable[tuple[str, str]]] | None = None,
        typo_similarity: float = 1.0,
        types: Mapping[str, str] | None = None,
    ) -> None:
        self._stemmer = Stemmer.Stemmer("english")
        self._types = types if types is not None else {}
        self.typo_similarity = typo_similarity
        self._doc_ids_by_name: dict[str, list[str]] = defaultdict(list)
        self._names_by_doc: dict[str, list[str]] = {}
        for doc_id, focus in foci.items():
            names = [focus, *((synonyms or {}).get(doc_id) or ())]
            self._names_by_doc[doc_id] = list(dict.fromkeys(n.strip() for n in names if n and n.strip()))
            for name in self._names_by_doc[doc_id]:
                self._doc_ids_by_name[name].append(doc_id)
        self._tokens: dict[str, frozenset[str]] = {}
        for name in self._doc_ids_by_name:
            tokens = frozenset(self.tokens(name))
            if tokens:
                self._tokens[name] = tokens
        names = len(self._tokens)
        df = Counter(t for tokens in self._tokens.values() for t in tokens)
        self._idf = {t: math.log(names / (1 + n)) + 1.0 for t, n in df.items()}
        self._by_token: dict[str, list[str]] = defaultdict(list)
        self._norm: dict[str, float] = {}
        for name, tokens in self._tokens.items():
            self._norm[name] = sum(self._idf[t] for t in tokens)
            for token in tokens:
                self._by_token[token].append(name)
        # Name words by first letter, as stems and as written (a misspelling is looked for among the words that start
        # as it does): "degeneraton" is far from the stem "degener" and near "degeneration".
        self._by_letter: dict[str, list[str]] = defaultdict(list)
        self._stem_of_form: dict[str, str] = {}
        self._written_form: dict[str, str] = {}  # a name token -> a word of a name it stems from, as written
        for name in self._tokens:
            for word in words(name):
                stem = self._stemmer.stemWord(word)
                if stem in self._by_token and len(stem) >= TYPO_MIN_LENGTH - 1:
                    self._stem_of_form.setdefault(stem, stem)
                    self._stem_of_form.setdefault(word, stem)
                    self._written_form.setdefault(stem, word)
        for form in self._stem_of_form:
            self._by_letter[form[0]].append(form)
        self._texts = texts
        self._has_texts = texts is not None
        # (name token -> the QA pairs whose text has it, every QA pair with a text, every word of the texts), read
        # when first needed
        self._pages: tuple[dict[str, set[str]], set[str], frozenset[str]] | None = None
        self._pages_lock = threading.Lock()
        self._distinct: dict[frozenset[str], bool] = {}  # named_in_part's verdicts, by the name words written
        self._vocabulary_letters: dict[str, list[str]] | None = None
        self._known: frozenset[str] = frozenset()  # words on KNOWN_WORD_PAGES pages or more, read with the pages

    def _page_index(self) -> tuple[dict[str, set[str]], set[str], frozenset[str]]:
        if self._pages is None:
            with self._pages_lock:
                if self._pages is None:
                    self._pages = self._read_pages(self._texts() if self._texts else ())
                    self._texts = None  # read once; whatever held the texts for it can go
        return self._pages

    def _read_pages(self, texts: Iterable[tuple[str, str]]) -> tuple[dict[str, set[str]], set[str], frozenset[str]]:
        """``{name token: the QA pairs whose text contains it}`` over ``texts``, every QA pair in them, and every word."""
        words_of: dict[str, set[str]] = defaultdict(set)
        for doc_id, text in texts:
            words_of[doc_id].update(words(text))
        vocabulary = sorted(set().union(*words_of.values())) if words_of else []
        stem_of = dict(zip(vocabulary, self._stemmer.stemWords(vocabulary)))
        pages: dict[str, set[str]] = defaultdict(set)
        for doc_id, found in words_of.items():
            for token in {stem_of[w] for w in found} & self._by_token.keys():
                pages[token].add(doc_id)
        seen = Counter(w for found in words_of.values() for w in found)
        self._known = frozenset(w for w, n in seen.items() if n >= KNOWN_WORD_PAGES)
        return dict(pages), set(words_of), frozenset(vocabulary)

    def __len__(self) -> int:
        return len(self._tokens)

    def tokens(self, text: str) -> list[str]:
        """Lower-case alphanumeric tokens, stemmed (English Snowball), without function words."""
        return [t for t in self._stemmer.stemWords(words(text)) if t not in STOPWORDS]

    def mentions(self, text: str, name: str) -> list[tuple[int, int]]:
        """Character spans of the words of ``text`` that belong to topic ``name`` (by stem), in order."""
        return [(start, end) for start, end, _ in self.stemmed_mentions(text, name)]

    def stemmed_mentions(self, text: str, name: str) -> list[tuple[int, int, str]]:
        """:meth:`mentions` with each word's stem: ``(start, end, stem)``."""
        wanted = self._tokens.get(name, frozenset())
        found = list(re.finditer(r"[A-Za-z0-9]+(?:'s)?", text))
        stems = self._stemmer.stemWords([w.group(0).lower().removesuffix("'s") for w in found])
        return [(w.start(), w.end(), stem) for w, stem in zip(found, stems) if stem in wanted]

    def named(self, text: str) -> list[str]:
        """Topic names (or synonyms) that ``text`` names in full and as names (:meth:`written`), most specific first."""
        # A misspelt word never makes a name score 1, so misspellings are not looked up here.
        names = [n for n, score in self.focus_scores(text, typos=False).items() if score >= FULL_NAME_SCORE and self.written(text, n)]
        return sorted(names, key=lambda n: (-self.specificity(n), n))

    def named_in_part(self, text: str) -> list[str]:
        """Topic names that ``text`` names without their generic head words, best scored first.

        "my dad has parkinsons" names "Parkinson disease" without "disease"; "crohns", "lyme", "alzheimers" do the
        same. A name counts when the words missing from ``text`` are all generic (on :data:`GENERIC_WORD_SHARE` of the
        pages or more), the words present are written as a name (:meth:`written`), and those words are rare outside
        the pages of the topics named with them (under :data:`COMMON_NAME_SHARE` of the other pages: "kidney" or
        "heart" alone name no topic). Names :meth:`named` finds in full are not repeated.
        """
        pages, pairs, _ = self._page_index()
        if not pairs:
            return []
        present = set(self.tokens(text))
        found: dict[str, float] = {}
        for name, score in self.focus_scores(text, typos=False).items():
            tokens = self._tokens[name]
            kept = frozenset(tokens & present)
            if score >= FULL_NAME_SCORE or not kept or not self._generic(tokens - kept):
                continue
            if self._distinctive(kept) and self.written(text, name):
                found[name] = score
        return sorted(found, key=lambda n: (-found[n], -self.specificity(n), n))

    def named_misspelt(self, text: str) -> list[str]:
        """Topic names that ``text`` writes with misspelt words (:meth:`misspelt`), best scored first.

        "my dad has macular degeneraton" names "Macular Degeneration", "my mom has alzeimers" "Alzheimer's Disease":
        every other word of the name is there, or is a generic head word (as :meth:`named_in_part` reads them).
        """
        typos = self.misspelt(text)
        if not typos:
            return []
        have = set(self.tokens(text)) | typos.keys()
        scores = self.focus_scores(text)
        found = {
            name: scores[name]
            for name in {n for t in typos for n in self._by_token.get(t, ())}
            if self._generic(self._tokens[name] - have) and self.written(text, name)
        }
        return sorted(found, key=lambda n: (-found[n], -self.specificity(n), n))

    def _generic(self, tokens: Iterable[str]) -> bool:
        """Whether every one of ``tokens`` is a generic word, on :data:`GENERIC_WORD_SHARE` of the pages or more."""
        pages, pairs, _ = self._page_index()
        return all(len(pages.get(t, ())) >= GENERIC_WORD_SHARE * len(pairs) for t in tokens)

    def _distinctive(self, tokens: frozenset[str]) -> bool:
        """Whether pages holding all of ``tokens`` are rare outside the topics named with them (remembered per set)."""
        known = self._distinct.get(tokens)
        if known is None:
            own = {d for t in tokens for n in self._by_token[t] for d in self._doc_ids_by_name[n]}
            hits, others = self._pages_outside(tokens, own)
            known = self._distinct[tokens] = hits < COMMON_NAME_SHARE * max(others, 1)
        return known

    def _pages_outside(self, tokens: Iterable[str], own: set[str]) -> tuple[int, int]:
        """``(pages holding all of tokens, pages)``, both counted outside the pages ``own``."""
        pages, pairs, _ = self._page_index()
        hits = set.intersection(*(pages.get(t, set()) for t in tokens)) - own
        return len(hits), len(pairs) - len(own & pairs)

    def common(self, name: str) -> bool:
        """Whether topic ``name`` is common words: all of them on :data:`COMMON_NAME_SHARE` of the other topics' pages.

        "I had surgery", "what medicine", "blood in the stool" name MedlinePlus topics in full without being about
        them; "gout" or "proctitis" rarely occur outside their own pages. An acronym ("ALL") is never common: it
        counts only written in capitals (:meth:`written`).
        """
        tokens = self._tokens.get(name)
        if not tokens or _ACRONYM.search(name):
            return False
        hits, others = self._pages_outside(tokens, set(self.doc_ids(name)))  # its own pages say nothing of its words
        return others > 0 and hits / others >= COMMON_NAME_SHARE

    def written(self, text: str, name: str) -> bool:
        """Whether ``text`` writes topic ``name`` the way a name is written, not as everyday words.

        The name needs a word of two or more characters (not "M-A" from "I'm a"), and its acronyms of two or more
        letters in capitals ("ALL", "GO", "HAD deficiency" are not "all", "go", "had"), unless ``text`` has no
        lower-case letters at all.
        """
        tokens = self._tokens.get(name, frozenset())
        if not any(len(t) >= 2 for t in tokens):
            return False
        if not any(c.islower() for c in text):
            return True
        as_written = set(re.findall(r"[A-Za-z0-9]+", text))
        return all(w in as_written for w in _ACRONYM.findall(name))

    def doc_ids(self, name: str) -> list[str]:
        """The QA pairs about topic ``name`` (a focus or one of its synonyms)."""
        return list(self._doc_ids_by_name.get(name, ()))

    def overview_only(self, name: str) -> bool:
        """Whether every QA pair about topic ``name`` is an overview: a subject such as "Medicines", "Diets" or
        "Surgery" that NIH answers no symptoms, causes or treatments of. False when the types are not known."""
        types = [self._types.get(doc_id) for doc_id in self.doc_ids(name)]
        return bool(types) and all(t == OVERVIEW_TYPE for t in types)

    def names_of(self, doc_id: str) -> list[str]:
        """The topic name and other names of QA pair ``doc_id`` (none for a pair the matcher doesn't know)."""
        return list(self._names_by_doc.get(doc_id, ()))

    def with_synonyms(self, names: Iterable[str]) -> list[str]:
        """``names`` and the other names of their QA pairs ("type 1 diabetes": "autoimmune diabetes", ...), in order."""
        found = {n: None for n in names}
        for name in list(found):
            for doc_id in self.doc_ids(name):
                found.update((n, None) for n in self.names_of(doc_id))
        return list(found)

    def shares_a_word(self, names: Iterable[str], doc_id: str) -> bool:
        """Whether QA pair ``doc_id``'s topic names share a word (not a stopword) with one of ``names``: "Kidney
        Stones in Adults" with "Kidney Stones", "Male Breast Cancer" with "Breast Cancer"."""
        named = {w for name in names for w in words(name) if w not in STOPWORDS}
        return bool(named & {w for name in self.names_of(doc_id) for w in words(name)})

    def specificity(self, name: str) -> float:
        """The IDF mass of a topic name: longer, rarer names are more specific ("Diabetes Type 2" > "Diabetes")."""
        return self._norm.get(name, 0.0)

    def misspelt(self, text: str) -> dict[str, float]:
        """``{name token: similarity}`` for the words of ``text`` that look like a misspelt topic-name word.

        A word counts when it occurs on no indexed page, has :data:`TYPO_MIN_LENGTH` letters or more, and its stem (or,
        from :data:`TYPO_WRITTEN_MIN_LENGTH` letters, the word itself) is at least ``typo_similarity`` similar to a name
        word, as written or stemmed, that starts with the same letter (the best one), and no other word of the pages
        is nearer to it ("diagnozed" misspells "diagnosed", not the name word "diagnostic").

        Example: "Familial Mediterean Fever" gives ``{"mediterranean": 0.87}``.
        """
        found: dict[str, float] = {}
        for token, similarity, _ in self._typos(text).values():
            found[token] = max(found.get(token, 0.0), similarity)
        return found

    def corrected(self, text: str) -> str:
        """``text`` with each misspelt topic-name word (:meth:`misspelt`) written as the name writes it.

        Example: "my mom has alzeimers" -> "my mom has alzheimer" (the embedding and the re-ranker read the name).
        """
        typos = self._typos(text)
        if not typos:
            return text
        return re.sub(r"[A-Za-z0-9]+", lambda m: typos[m.group(0).lower()][2] if m.group(0).lower() in typos else m.group(0), text)

    def _typos(self, text: str) -> dict[str, tuple[str, float, str]]:
        """``{misspelt word: (name token, similarity, the name word as written)}`` (:meth:`misspelt`)."""
        if self.typo_similarity >= 1.0 or not self._has_texts:
            return {}
        vocabulary = self._page_index()[2]
        found: dict[str, tuple[str, float, str]] = {}
        for word in set(words(text)):
            if len(word) < TYPO_MIN_LENGTH or not word.isalpha() or word in vocabulary:
                continue
            stem = self._stemmer.stemWord(word)
            if stem in self._by_token:
                continue
            for form in (stem, word) if len(word) >= TYPO_WRITTEN_MIN_LENGTH else (stem,):
                best = process.extractOne(form, self._by_letter.get(form[0], ()), scorer=fuzz.ratio, score_cutoff=100 * self.typo_similarity)
                if best and best[1] / 100 > found.get(word, ("", 0.0, ""))[1]:
                    token = self._stem_of_form[best[0]]
                    found[word] = (token, best[1] / 100, self._written_form[token])
            if word in found:
                # A word nearer to another word of the pages misspells that word ("diagnozed" is "diagnosed", not
                # "diagnostic"): the nearest known word decides.
                # Edits count as edits here, a swap of two letters as one ("bengin" is as near "benign" as "begin").
                name = OSA.normalized_similarity(word, found[word][2])
                nearest = process.extractOne(word, self._vocabulary_by_letter().get(word[0], ()), scorer=OSA.normalized_similarity)
                if nearest and nearest[1] > name and self._stemmer.stemWord(nearest[0]) != found[word][0]:
                    del found[word]
        return found

    def _vocabulary_by_letter(self) -> dict[str, list[str]]:
        """The words on :data:`KNOWN_WORD_PAGES` pages or more, :data:`TYPO_MIN_LENGTH` letters or more, by first letter
        (read once; a word on fewer pages may be a typo of the pages' own, "syndroeme")."""
        if self._vocabulary_letters is None:
            by_letter: dict[str, list[str]] = defaultdict(list)
            self._page_index()
            for word in sorted(self._known):  # in one order: the first of equally near words wins, in every process
                if len(word) >= TYPO_MIN_LENGTH and word.isalpha():
                    by_letter[word[0]].append(word)
            self._vocabulary_letters = dict(by_letter)
        return self._vocabulary_letters

    def focus_scores(self, text: str, typos: bool = True) -> dict[str, float]:
        """``{topic name or synonym: score in (0, 1]}`` for the names sharing at least one token with ``text``.

        A misspelt name word (:meth:`misspelt`, unless ``typos`` is False) counts as much as it is similar to the word,
        so a name written with a typo never scores 1 (it is never "named in full")."""
        present = dict.fromkeys(self.tokens(text), 1.0)
        for token, similarity in (self.misspelt(text) if typos else {}).items():
            present.setdefault(token, similarity)
        scores: dict[str, float] = {}
        for name in {n for t in present for n in self._by_token.get(t, ())}:
            hit = sum(self._idf[t] * present[t] for t in self._tokens[name] if t in present)
            scores[name] = hit / self._norm[name]
        return scores

    def doc_scores(self, text: str, min_score: float = 0.5, limit: int = 100) -> dict[str, float]:
        """``{doc_id: score}`` of the QA pairs whose topic scores at least ``min_score``, best names first.

        Args:
            text: The message.
            min_score: Smallest name score kept.
            limit: At most this many QA pairs (a name's pairs are kept or dropped together, best first).
        """
        ranked = sorted(
            ((score, name) for name, score in self.focus_scores(text).items() if score >= min_score),
            key=lambda item: (-item[0], item[1]),
        )
        out: dict[str, float] = {}
        for score, name in ranked:
            new = [d for d in self._doc_ids_by_name[name] if d not in out]  # a pair keeps its best name's score
            if out and len(out) + len(new) > limit:
                break
            out.update((doc_id, score) for doc_id in new)
        return out

